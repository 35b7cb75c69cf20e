"""What happens on bad input and faults: one table a reader can scan (issue 11).

Each row of ``CASES``: what a person did -> a fragment of the message they get -> whether the
outputs folder must stay empty (every check runs before data, a model or a folder). Command-line
rows also check exit code 2 and a message of at most three lines. The faults that need a run
(divergence, a damaged checkpoint, a kill before the completion marker) follow the table.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nbformat
import numpy as np
import pytest
import torch
import yaml

import lib.gradcache
import lib.trainer
from lib.checkpoint import UnsafeCheckpointError, load_tree, rng_state, save_tree
from lib.cli import run_cli
from lib.completion import MARKER, is_complete, mark_complete
from lib.data import ParallelGroup, lareqa_file, load_lareqa, parse_squad_file
from lib.evaluate import run_evaluation
from lib.grid_plan import load_grid
from lib.io import outputs_dir, remove_orphaned_temporaries, run_dir, write_json
from lib.notebooks import execute
from lib.retrieval import score_pools
from lib.train import TrainConfig, TrainError, main as train_main, train


# --------------------------------------------------------------------------------------------
# helpers the rows use


def cli_train(*argv: str) -> Callable[[Path], Any]:
    return lambda tmp: run_cli(train_main, "python -m lib.train", (TrainError,), list(argv))


def config(**values) -> Callable[[Path], Any]:
    return lambda tmp: TrainConfig(**{"backbone": "tiny", **values}).resolved()


def evaluation(**values) -> Callable[[Path], Any]:
    return lambda tmp: run_evaluation(**{"backbone": "tiny", "device": "cpu", **values})


def write_file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def grid_file(tmp: Path, **changes) -> Path:
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono", "hybrid"], "seeds": [0], "alphas": [0.5],
            "train_datasets": ["mlqa-r"], "eval_datasets": ["xquad-r"], "zero_shot": False,
            "train": {"steps": 2, "batch_size": 4}, "report": {"run": "report-g"}}
    return write_file(tmp, "g.yaml", yaml.safe_dump({**grid, **changes}))


def squad(paragraph: dict) -> str:
    return json.dumps({"data": [{"paragraphs": [paragraph]}]})


def checkpoint_folder(tmp: Path) -> str:
    folder = tmp / "run" / "checkpoints" / "step-000002"
    folder.mkdir(parents=True)
    (folder / "resume.json").write_text("{}")
    return str(folder)


def probe_notebook(tmp: Path, body: str = "x = 1") -> str:
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell('run = ""\nfail = False', metadata={"tags": ["parameters"]}),
                  nbformat.v4.new_code_cell(body)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, tmp / "probe.ipynb")
    return str(tmp / "probe.ipynb")


def read_only_outputs(tmp: Path) -> int:
    """Creating outputs/<run>/ fails as on a read-only disk (chmod does not stop root, so it is simulated)."""
    def refuse(run: str) -> Path:
        raise PermissionError(13, "Permission denied", f"/ro/{run}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lib.trainer, "run_dir", refuse)
        return run_cli(train_main, "python -m lib.train", (TrainError,), ["backbone=tiny", "run=r", "device=cpu"])


def expect_value(actual: Callable[[Path], Any], expected: Any) -> Callable[[Path], Any]:
    """A row that works: the call returns ``expected`` (no error)."""
    def check(tmp: Path) -> None:
        value = actual(tmp)
        assert value == pytest.approx(expected) if isinstance(expected, float) else value == expected
    return check


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Path], Any]   # gets a temporary folder outside outputs/
    message: str | None           # a fragment of the error message; None: no error expected
    outputs_empty: bool = True    # nothing may appear under outputs/


CASES = [
    # --- training parameters: types coerced and checked (TrainConfig) -----------------------
    Case("learning_rate=1e-4 (YAML reads a string) is a float",
         expect_value(lambda t: TrainConfig.from_file(None, ["learning_rate=1e-4"]).learning_rate, 1e-4), None),
    Case("steps='3' from a notebook is an int", expect_value(lambda t: TrainConfig(steps="3").steps, 3), None),
    Case("freeze_embeddings=true stays a bool", expect_value(
        lambda t: TrainConfig.from_file(None, ["freeze_embeddings=true"]).freeze_embeddings, True), None),
    Case("learning_rate=abc", config(learning_rate="abc"), "learning_rate 'abc': expected a number"),
    Case("steps=2.5", config(steps=2.5), "steps 2.5: expected a whole number"),
    Case("hard_negatives=maybe", config(hard_negatives="maybe"), "hard_negatives 'maybe': expected true or false"),
    Case("learning_rate=nan", config(learning_rate=float("nan")), "expected a finite number"),
    Case("learning_rate=1000000", config(learning_rate=1e6), "learning_rate 1000000.0: expected a value in [0, 1]"),
    Case("learning_rate=-1e-5", config(learning_rate=-1e-5), "learning_rate -1e-05: expected a value in [0, 1]"),
    Case("temperature=0", config(temperature=0), "temperature 0.0: expected a value in (0, inf]"),
    Case("alpha=1.5", config(alpha=1.5), "alpha 1.5: expected a value in [0, 1]"),
    Case("validation_fraction=1", config(validation_fraction=1), "validation_fraction 1.0"),
    Case("warmup_ratio=2", config(warmup_ratio=2), "warmup_ratio 2.0"),
    Case("steps=0", config(steps=0), "steps must be >= 1"),
    Case("alpha with a non-hybrid sampler does nothing", config(sampler="mono", alpha=0.3),
         "alpha=0.3 has no effect with sampler 'mono'"),
    Case("batch_size=1 without hard negatives learns nothing", config(batch_size=1, hard_negatives=False),
         "the loss is 0 and nothing is learnt"),
    Case("unknown sampler", config(sampler="foo"), "sampler 'foo': expected one of"),
    Case("precision=fp16 on the CPU", config(precision="fp16", device="cpu"), "no fast fp16 matrix units"),
    Case("unknown backbone", config(backbone="no-such-model"), "unknown backbone 'no-such-model'"),
    Case("a checkpoint folder as backbone", lambda t: TrainConfig(backbone=checkpoint_folder(t)).resolved(),
         "holds a training checkpoint"),
    # --- the lib.train command line: one message, exit code 2, options anywhere ----------------
    Case("CLI: misspelt key", cli_train("lerning_rate=1e-4"), "unknown TrainConfig parameters ['lerning_rate'] (lerning_rate: did you mean learning_rate?)"),
    Case("CLI: --no-progress before key=value", cli_train("--no-progress", "steps=abc"),
         "steps 'abc': expected a whole number"),
    Case("CLI: key without '='", cli_train("steps"), "override 'steps': expected key=value"),
    Case("CLI: missing --config file", cli_train("--config", "nowhere.yaml"), "--config nowhere.yaml: no such file"),
    Case("CLI: malformed --config file", lambda t: run_cli(train_main, "python -m lib.train", (TrainError,), [
        "--config", str(write_file(t, "bad.yaml", "steps: [1,\n  lr: 2\n"))]), "bad.yaml is not valid YAML"),
    Case("CLI: batch_size=1 hard_negatives=false", cli_train("backbone=tiny", "batch_size=1", "hard_negatives=false"),
         "nothing is learnt"),
    # --- evaluation parameters (04_evaluate, lib.evaluate.run_evaluation) ---------------------
    Case("evaluation: batch_size=0", evaluation(batch_size=0), "batch_size 0: expected a value in [1, inf]"),
    Case("evaluation: max_questions=abc", evaluation(max_questions="abc"), "max_questions 'abc': expected a whole"),
    Case("evaluation: max_questions='40' is an int",
         expect_value(lambda t: __import__("lib.evaluate").evaluate.check_evaluation_parameters(
             "tiny", "sentence", "64", "40", "")[1], 40), None),
    Case("evaluation: run_depth=-1", evaluation(run_depth=-1), "run_depth -1: expected a value in [0, inf]"),
    Case("evaluation: candidate_context=para", evaluation(candidate_context="para"),
         "candidate_context 'para': expected one of"),
    Case("evaluation: unknown dataset", evaluation(dataset="squad"), "dataset 'squad': expected one of"),
    Case("evaluation: a run folder (no model) as backbone", lambda t: run_evaluation(str(t), device="cpu"),
         "holds no model"),
    # --- grid files ----------------------------------------------------------------------------
    Case("grid: malformed YAML names the file", lambda t: load_grid(write_file(t, "broken.yaml", "name: g\nseeds: [0,\n")),
         "broken.yaml is not valid YAML"),
    Case("grid: learning_rate: 1e-4 is a float",
         expect_value(lambda t: load_grid(grid_file(t, train={"steps": 2, "learning_rate": "1e-4"})).train["learning_rate"],
                      1e-4), None),
    Case("grid: learning_rate: abc", lambda t: load_grid(grid_file(t, train={"learning_rate": "abc"})),
         "train: training parameter learning_rate 'abc'"),
    Case("grid: batch_size 1 without hard negatives", lambda t: load_grid(grid_file(
        t, train={"batch_size": 1, "hard_negatives": False})), "nothing is learnt"),
    Case("grid: unknown key", lambda t: load_grid(grid_file(t, sampelrs=["en"])), "unknown keys ['sampelrs']"),
    # --- notebook parameters (papermill) --------------------------------------------------------
    Case("papermill: misspelt parameter", lambda t: execute(probe_notebook(t), "probe", {"max_qestions": 5}),
         "probe.ipynb has no parameter(s) ['max_qestions']"),
    Case("papermill: notebook not found", lambda t: execute("99_nothing.ipynb", "probe", {}), "99_nothing.ipynb not found"),
    # --- data files ------------------------------------------------------------------------------
    Case("LAReQA: a question without answers", lambda t: parse_squad_file(write_file(t, "de.json", squad(
        {"context": "Ab. Cd.", "sentence_breaks": [[0, 3], [4, 7]], "qas": [{"id": "q", "question": "?",
                                                                          "answers": []}]})), "de"),
         "is not a LAReQA (SQuAD-format) file: IndexError"),
    Case("LAReQA: sentence_breaks not pairs", lambda t: parse_squad_file(write_file(t, "de.json", squad(
        {"context": "Ab.", "sentence_breaks": [[0, 1, 2]], "qas": []})), "de"), "is not a LAReQA (SQuAD-format) file"),
    Case("LAReQA: not SQuAD at all", lambda t: parse_squad_file(write_file(t, "de.json", "[1, 2]"), "de"),
         "is not SQuAD format"),
    Case("LAReQA: unknown language", lambda t: load_lareqa("xquad-r", languages=["xx"], data_dir=t),
         "xquad-r has no language 'xx'"),
    Case("LAReQA: missing file", lambda t: lareqa_file("xquad-r", "de", data_dir=t), "missing file"),
    Case("LAReQA: unknown dataset", lambda t: load_lareqa("squad"), "unknown LAReQA dataset 'squad'"),
    Case("LAReQA: checksum mismatch says how to proceed", lambda t: lareqa_file(
        "xquad-r", "de", data_dir=write_file(t.joinpath("xquad-r").mkdir() or t / "xquad-r", "de.json", "{}").parents[1]),
         "lib.data.load_lareqa(..., verify=False) from Python"),
    # --- results and folders ---------------------------------------------------------------------
    Case("metrics with NaN are strict JSON (null)", expect_value(lambda t: json.loads(
        write_json(t / "m.json", {"loss": float("nan"), "x": np.float32("inf")}).read_text(),
        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")), {"loss": None, "x": None}), None),
    Case("NaN query embeddings: no garbage ranks", lambda t: score_pools(
        np.full((1, 3), np.nan, np.float32), np.eye(3, dtype=np.float32), [np.array([0])],
        np.array(["de", "de", "en"]), np.array(["de"])), "query embeddings are not finite (NaN or inf)"),
    Case("run name with '/'", lambda t: run_dir("a/b"), "must be a non-empty folder name without '/'"),
    Case("CLI: read-only outputs folder", read_only_outputs,
         "no permission to write /ro/r (Permission denied); make the folder writable or point HBT_OUTPUTS"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, tmp_path, capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    if case.message is None:
        case.call(scratch)
    else:
        try:
            result = case.call(scratch)
        except (Exception, pytest.fail.Exception) as error:  # noqa: BLE001 - the row names the message
            assert case.message in str(error), f"{case.name}: got {type(error).__name__}: {error}"
        else:  # a command line: exit code 2, the message on stderr in at most three lines
            stderr = capsys.readouterr().err
            assert result == 2, f"{case.name}: exit code {result}, stderr {stderr!r}"
            assert case.message in stderr and len(stderr.strip().splitlines()) <= 3, stderr
            assert "Traceback" not in stderr
    if case.outputs_empty:
        left = sorted(p.relative_to(outputs_dir()) for p in outputs_dir().rglob("*")) if outputs_dir().exists() else []
        left = [p for p in left if p.parts[0] != "cache"]  # the tiny backbone's download cache
        assert left == [], f"{case.name} left {left} in outputs/"


def test_the_table_covers_at_least_30_cases():
    assert len(CASES) >= 30


def test_debug_shows_the_traceback():
    with pytest.raises(TrainError, match="learning_rate"):
        run_cli(train_main, "python -m lib.train", (TrainError,), ["--debug", "backbone=tiny", "learning_rate=abc"])


# --------------------------------------------------------------------------------------------
# faults during a run


WORDS = "river mountain bread violin planet garden copper winter lantern harbor".split()


def groups(n_ids: int = 24) -> tuple[list[ParallelGroup], list[ParallelGroup]]:
    rng = random.Random(0)
    made = []
    for i in range(n_ids):
        topic = " ".join(rng.sample(WORDS, 3))
        made.append(ParallelGroup(qid=f"q{i}", source="synthetic",
                                  queries={lang: f"{lang} what about {topic} {i}?" for lang in ("en", "de")},
                                  positives={lang: f"{lang} the {topic} answer {i}." for lang in ("en", "de")},
                                  negatives={lang: [f"{lang} other {rng.choice(WORDS)} {i}."] for lang in ("en", "de")}))
    return made[:20], made[20:]


def tiny_config(**values) -> TrainConfig:
    return TrainConfig(**{"backbone": "tiny", "sampler": "hybrid", "steps": 3, "batch_size": 4,
                          "learning_rate": 1e-3, "eval_every": 0, "patience": 0, "checkpoint_every": 1,
                          "keep_checkpoints": 3, "validation_batches": 1, "device": "cpu", "run": "r", **values})


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_diverged_run_stops_with_the_step_and_saves_no_nan(monkeypatch):
    """The loss turns NaN at step 2 (as learning_rate=1e6 did): TrainError naming step 2 and the
    learning rate; the step-1 checkpoint is kept; no model, no metrics.json."""
    real_loss = lib.gradcache.batch_loss  # the plain (uncached) path of every training step
    calls = {"n": 0}

    def loss_turning_nan(*args):
        calls["n"] += 1
        loss = real_loss(*args)
        return loss * float("nan") if calls["n"] >= 2 else loss

    monkeypatch.setattr(lib.gradcache, "batch_loss", loss_turning_nan)
    with pytest.raises(TrainError, match=r"training diverged at step 2: the loss is nan \(learning_rate 0.001, temperature 0.05, precision fp32.*the settings that can cause it: a learning rate too high, a temperature too low"):
        train(tiny_config(), groups=groups(), progress=False)
    run = outputs_dir() / "r"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    assert not (run / "model").exists() and not (run / "model-best").exists()
    assert not (run / "metrics.json").exists()


def test_a_damaged_checkpoint_is_reported_and_the_one_before_used(capsys):
    """Truncated resume.json of the newest checkpoint: a warning names it, training resumes from the
    previous one; orphaned temporary folders of killed saves are removed at the start."""
    def kill_after_step_2(step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), groups=groups(), progress=False, on_step_end=kill_after_step_2)
    run = outputs_dir() / "r"
    damaged = run / "checkpoints" / "step-000002" / "resume.json"
    damaged.write_bytes(damaged.read_bytes()[:100])
    orphan = run / ".model.k3j_x9qa"
    (orphan / "model").mkdir(parents=True)
    result = train(tiny_config(), groups=groups(), progress=False)
    assert f"checkpoint file {damaged} is unreadable" in capsys.readouterr().err
    assert result.metrics["resumed_from_step"] == 1 and result.metrics["steps"] == 3
    assert not orphan.exists()
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "model.safetensors").write_bytes(b"")
    with pytest.raises(TrainError, match="no checkpoint of .* is readable"):
        train(tiny_config(), groups=groups(), progress=False)


def test_evaluation_refuses_nan_embeddings(tiny_model):
    from lib.encode import encode

    weight = tiny_model[0].auto_model.embeddings.word_embeddings.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float("nan"))
        with pytest.raises(ValueError, match="query embeddings are not finite"):
            encode(tiny_model, ["a question?"], "query", cache=False, show_progress_bar=False)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_orphaned_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".model.abcd_123", ".model-best.old", ".ipynb_checkpoints", "model", ".hidden"):
        (tmp_path / name).mkdir()
    removed = remove_orphaned_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".model-best.old", ".model.abcd_123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".ipynb_checkpoints", "model"]


def test_complete_means_the_marker_written_last_after_the_notebook(tmp_path):
    """metrics.json alone (a kill before the tables) is not complete; the runner writes the
    marker after the executed notebook; a forced rerun that fails leaves no marker."""
    run = run_dir("probe")
    write_json(run / "metrics.json", {"summary": {}})
    assert not is_complete(run)
    notebook = probe_notebook(tmp_path, "assert not fail, 'asked to fail'")
    execute(notebook, "probe", {"fail": False})
    marker = json.loads((run / MARKER).read_text())
    assert is_complete(run) and "probe.ipynb" in marker["files"] and marker["notebook"] == "probe.ipynb"
    with pytest.raises(Exception, match="asked to fail"):
        execute(notebook, "probe", {"fail": True}, force=True)
    assert not is_complete(run)
    mark_complete(run)
    assert is_complete(run)


class _RunsCode:
    """A pickle whose loading runs a shell command (what a shared ``state.pt`` could hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_checkpoint_is_refused_and_never_run(tmp_path):
    """An old-format checkpoint (state.pt, a pickle that runs code) is refused by name with the fix,
    and nothing runs; resume=False starts over; a state.pt beside a safe checkpoint is ignored."""
    marker = tmp_path / "code-ran"
    folder = outputs_dir() / "r" / "checkpoints" / "step-000002"
    folder.mkdir(parents=True)
    payload = pickle.dumps(_RunsCode(marker))
    (folder / "state.pt").write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError, match=r"step-000002 is in the old pickle format \(state.pt\), which "
                       r"can run code when loaded and is not read; start the run over with resume=False"):
        train(tiny_config(), groups=groups(), progress=False)
    assert not marker.exists()
    result = train(tiny_config(resume=False), groups=groups(), progress=False)
    assert result.metrics["resumed_from_step"] is None and not (folder / "state.pt").exists()
    latest = outputs_dir() / "r" / "checkpoints" / "step-000003"
    assert sorted(p.name for p in latest.iterdir()) == ["model.safetensors", "optimizer.json", "optimizer.safetensors",
                                                        "resume.json", "resume.safetensors", "state.json"]
    (latest / "state.pt").write_bytes(payload)
    assert train(tiny_config(), groups=groups(), progress=False).metrics["resumed_from_step"] == 3
    assert not marker.exists()
    pickle.loads(payload)             # the payload is real: unpickled, it runs its command
    assert marker.exists()


def test_the_safe_state_format_round_trips_exactly(tmp_path):
    """RNG states, tuples, non-finite floats, int keys, numpy scalars and bytes come back as they were."""
    state = {"rng": [rng_state()], "trainer": {"best_val_loss": math.inf, "last": float("nan"), "step": 3},
             "optimizer": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}}, "betas": (0.9, 0.999),
             "scale": np.float32(0.1), "raw": b"\x00\xff", "__type__": "a key that looks like a tag"}
    save_tree(tmp_path, "resume", state)
    back = load_tree(tmp_path, "resume")
    python_state, numpy_state = back["rng"][0]["python"], back["rng"][0]["numpy"]
    assert python_state == random.getstate() or python_state == state["rng"][0]["python"]
    assert numpy_state[0] == "MT19937" and np.array_equal(numpy_state[1], state["rng"][0]["numpy"][1])
    assert numpy_state[1].dtype == np.uint32 and numpy_state[2:] == state["rng"][0]["numpy"][2:]
    assert torch.equal(back["rng"][0]["torch"], state["rng"][0]["torch"])
    assert back["trainer"]["best_val_loss"] == math.inf and math.isnan(back["trainer"]["last"])
    assert torch.equal(back["optimizer"][0]["exp_avg"], state["optimizer"][0]["exp_avg"])
    assert back["betas"] == (0.9, 0.999) and type(back["scale"]) is np.float32 and back["scale"] == state["scale"]
    assert back["raw"] == b"\x00\xff" and back["__type__"] == state["__type__"]
    with pytest.raises(TypeError, match=r"checkpoint resume.fn is a function, which a checkpoint cannot hold"):
        save_tree(tmp_path, "resume", {"fn": lambda: None})
