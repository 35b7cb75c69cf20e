"""What happens on bad input and faults: one table a reader can scan (issue 11).

Each row of ``CASES``: what a person did -> a fragment of the message they get -> whether the
outputs folder must stay empty (every check runs before data, a model or a folder). Command-line
rows also check exit code 2 and a message of at most three lines. The faults that need a run
(divergence, a damaged checkpoint, a kill before the completion marker) follow the table.
"""

from __future__ import annotations

import errno
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
from safetensors import SafetensorError

import lib.gradcache
import lib.trainer
from lib.checkpoint import UnsafeCheckpointError, load_tree, rng_state, save_tree
from lib.cli import run_cli
from lib.completion import MARKER, is_complete, mark_complete
from lib.data import ParallelGroup, lareqa_file, load_lareqa, parse_squad_file
from lib.bias import main as bias_main
from lib.completion import record_run
from lib.evaluate import CLI_ERRORS as EVALUATE_ERRORS, main as evaluate_main, run_evaluation
from lib.grid import main as grid_main, outputs_lock
from lib.grid_plan import load_grid
from lib.io import outputs_dir, remove_orphaned_temporaries, run_dir, write_json
from lib.model_card import main as model_card_main
from lib.notebooks import execute, main as notebooks_main
from lib.report import main as report_main
from lib.retrieval import score_pools
from lib.miracl import main as miracl_main
from lib.slurm import main as slurm_main
from lib.tatoeba import main as tatoeba_main
from lib.train import CLI_ERRORS as TRAIN_ERRORS, TrainConfig, TrainError, main as train_main, train


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


def cli(main: Callable, prog: str, *argv: str, errors: tuple = ()) -> Callable[[Path], Any]:
    """A command line as ``python -m <module>`` runs it: lib.cli.run_cli with the module's error classes."""
    return lambda tmp: run_cli(main, prog, errors, list(argv))


def cli_evaluate(*argv: str) -> Callable[[Path], Any]:
    return cli(evaluate_main, "python -m lib.evaluate", *argv, errors=EVALUATE_ERRORS)


def cli_bias(*argv: str) -> Callable[[Path], Any]:
    return cli(bias_main, "python -m lib.bias", *argv)


def cli_report(*argv: str) -> Callable[[Path], Any]:
    return cli(report_main, "python -m lib.report", *argv)


def cli_grid(*argv: str, grid: dict | None = None) -> Callable[[Path], Any]:
    def call(tmp: Path) -> int:
        path = grid_file(tmp, **(grid or {}))
        return run_cli(grid_main, "python -m lib.grid", (), [str(path), *argv])
    return call


def cli_notebooks(*argv: str) -> Callable[[Path], Any]:
    return lambda tmp: run_cli(notebooks_main, "python -m lib.notebooks", (), [probe_notebook(tmp), "--run", "probe",
                                                                              *argv])


def raising(error: BaseException, errors: tuple = ()) -> Callable[[Path], Any]:
    """A command whose work fails with ``error`` (a full or read-only disk, simulated)."""
    def main(argv):
        raise error
    return lambda tmp: run_cli(main, "python -m lib.evaluate", errors, [])


def into_existing(kind: str, call: Callable[[Path], Any], parameters: dict | None = None,
                  config: dict | None = None) -> Callable[[Path], Any]:
    """``call`` aimed at outputs/r/, which holds a ``kind`` run already: refused, and nothing in it changes."""
    def run(tmp: Path) -> Any:
        folder = outputs_dir() / "r"
        folder.mkdir(parents=True)
        if parameters is not None:
            record_run(folder, kind, parameters, SOURCES[kind])
        write_json(folder / "config.json", config or {"task": kind})
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        try:
            return call(tmp)
        finally:
            assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    return run


SOURCES = {"train": "lib.train", "evaluate": "lib.evaluate", "bias": "lib.bias", "report": "lib.report"}
TRAINING_CONFIG = {"backbone": "tiny", "sampler": "hybrid", "learning_rate": 3e-5}


def locked_grid(tmp: Path) -> int:
    with outputs_lock(load_grid(grid_file(tmp))):
        return run_cli(grid_main, "python -m lib.grid", (), [str(grid_file(tmp))])


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
    # --- second pass (issue 21): every command line, one message, exit code 2 ------------------
    Case("evaluate CLI: batch_size=abc", cli_evaluate("backbone=tiny", "batch_size=abc"),
         "python -m lib.evaluate: error: batch_size 'abc': expected a whole number, e.g. batch_size=10"),
    Case("evaluate CLI: batch_size=0", cli_evaluate("backbone=tiny", "batch_size=0"),
         "batch_size 0: expected a value in [1, inf]"),
    Case("evaluate CLI: unknown dataset", cli_evaluate("backbone=tiny", "dataset=squad"), "dataset 'squad': expected one of"),
    Case("evaluate CLI: misspelt key", cli_evaluate("backbone=tiny", "max_qestions=3"),
         "unknown EvaluateConfig parameters ['max_qestions'] (max_qestions: did you mean max_questions?)"),
    Case("evaluate CLI: missing backbone folder", cli_evaluate("backbone=/nothing/here"),
         "unknown backbone '/nothing/here': not a directory"),
    Case("evaluate CLI: a training checkpoint as model", lambda t: run_cli(
        evaluate_main, "python -m lib.evaluate", EVALUATE_ERRORS, [f"backbone={checkpoint_folder(t)}"]),
         "holds a training checkpoint (resume state, not a model)"),
    Case("evaluate CLI: unknown debias variant", cli_evaluate("backbone=tiny", "debias=bogus"),
         "debias 'bogus' is not a method name"),
    Case("evaluate CLI: device=bogus", cli_evaluate("backbone=tiny", "device=bogus"),
         "device 'bogus': expected auto, cpu, cuda or cuda:N"),
    Case("evaluate CLI: device=cuda without CUDA", cli_evaluate("backbone=tiny", "device=cuda"),
         "device 'cuda': this machine has no CUDA GPU (torch.cuda.is_available() is False); use device=cpu"),
    Case("evaluate CLI: run name with a space", cli_evaluate("backbone=tiny", "run=my run"),
         "run 'my run': expected a folder name of letters, digits and . _ + = -"),
    Case("evaluation: run name with a newline (from a notebook)", evaluation(run="a\nb"),
         "run 'a\\nb': expected a folder name"),
    Case("evaluate CLI: missing --config file", cli_evaluate("--config", "nowhere.yaml"), "--config nowhere.yaml: no such file"),
    Case("evaluate CLI: max_questions=0", cli_evaluate("backbone=tiny", "max_questions=0"),
         "max_questions 0: expected a value in [1, inf]"),
    Case("evaluate CLI: run_depth=abc", cli_evaluate("backbone=tiny", "run_depth=abc"), "run_depth 'abc': expected a whole"),
    Case("evaluate CLI: into a training run", into_existing("train", cli_evaluate("backbone=tiny", "run=r"),
                                                            config=TRAINING_CONFIG),
         "holds a 'train' run, not 'evaluate'; choose another run name, or --force (force=True from Python) to write "
         "over it", False),
    Case("evaluate CLI: same run, other parameters", into_existing("evaluate", cli_evaluate("backbone=tiny", "run=r"), {
        "backbone": "tiny", "dataset": "mlqa-r", "candidate_context": "sentence", "max_questions": None, "languages": None,
        "index": "flat", "debias": "none", "precision": "auto", "run_depth": 100}), "holds a 'evaluate' run made with other parameters (dataset: 'mlqa-r' there, 'xquad-r' now", False),
    Case("bias CLI: top_k=abc", cli_bias("top_k=abc"), "python -m lib.bias: error: top_k 'abc': expected a whole number"),
    Case("bias CLI: top_k=0", cli_bias("top_k=0"), "top_k 0: expected a value in [1, inf]; the top-k counted"),
    Case("bias CLI: top_k=2.5", cli_bias("top_k=2.5"), "top_k 2.5: expected a whole number"),
    Case("bias CLI: missing evaluation run", cli_bias("runs=nothing"), "run 04_evaluate with run='nothing' first"),
    Case("bias CLI: empty runs", cli_bias("runs="), "runs is empty: give evaluation run names"),
    Case("bias CLI: device=bogus", cli_bias("device=bogus"), "device 'bogus': expected auto, cpu, cuda or cuda:N"),
    Case("bias CLI: misspelt key", cli_bias("topk=5"), "unknown BiasConfig parameters ['topk'] (topk: did you mean top_k?)"),
    Case("bias CLI: run name with '/'", cli_bias("runs=x", "run=a/b"), "run 'a/b': expected a folder name"),
    Case("bias CLI: into an evaluation run", into_existing("evaluate", cli_bias("runs=r", "run=r")),
         "holds a 'evaluate' run, not 'bias'", False),
    Case("report CLI: resamples=abc", cli_report("resamples=abc"), "python -m lib.report: error: resamples 'abc': expected a whole"),
    Case("report CLI: resamples=0", cli_report("resamples=0"), "resamples 0: expected a value in [1, inf]"),
    Case("report CLI: seed=-1", cli_report("seed=-1"), "seed -1: expected a value in [0, inf]"),
    Case("report CLI: unknown grid", cli_report("grid=no-such-grid"), "no-such-grid.yaml not found; grids live in"),
    Case("report CLI: a grid with no runs yet", cli_report("grid=grid-smoke", "extra_runs="),
         "grid grid-smoke has no evaluation run yet in"),
    Case("report CLI: run name with a space", cli_report("run=my report"), "run 'my report': expected a folder name"),
    Case("report CLI: misspelt key", cli_report("resampels=5"), "unknown ReportConfig parameters ['resampels']"),
    Case("grid CLI: --only trian", cli_grid("--only", "trian"),
         "python -m lib.grid: error: --only trian: unknown job kind(s) ['trian']; trian: did you mean train?"),
    Case("grid CLI: --workers 0", cli_grid("--workers", "0"), "workers=0: expected 1 or more"),
    Case("grid CLI: missing grid file", lambda t: run_cli(grid_main, "python -m lib.grid", (), ["nowhere.yaml"]),
         "grid file nowhere.yaml not found"),
    Case("grid CLI: alphas without a hybrid sampler", cli_grid("--dry-run", grid={"samplers": ["mono", "cross"]}),
         "alphas [0.5] apply to no cell (only the hybrid sampler has an alpha"),
    Case("grid CLI: a second grid on the same outputs folder", locked_grid, "is in use by another grid (pid", False),
    Case("notebooks CLI: --parameters not JSON", cli_notebooks("--parameters", "{fail: true}"),
         "python -m lib.notebooks: error: --parameters '{fail: true}' is not valid JSON"),
    Case("notebooks CLI: --parameters a list", cli_notebooks("--parameters", "[1, 2]"),
         "--parameters '[1, 2]': expected a JSON object of name: value"),
    Case("notebooks CLI: undeclared parameter", cli_notebooks("--parameters", '{"fial": true}'),
         "probe.ipynb has no parameter(s) ['fial']"),
    Case("notebooks CLI: a bad value is refused before a kernel starts", lambda t: run_cli(
        notebooks_main, "python -m lib.notebooks", (TrainError,), ["03_train.ipynb", "--run", "r", "--parameters",
                                                                   '{"steps": "abc"}']),
         "python -m lib.notebooks: error: training parameter steps 'abc': expected a whole number"),
    Case("notebooks: alpha with sampler mono refused before a kernel starts", lambda t: execute(
        "03_train.ipynb", "r", {"sampler": "mono", "alpha": 0.5}), "alpha=0.5 has no effect with sampler 'mono'"),
    Case("notebooks: evaluation batch_size=0 refused before a kernel starts", lambda t: execute(
        "04_evaluate.ipynb", "r", {"batch_size": 0}), "batch_size 0: expected a value in [1, inf]"),
    Case("notebooks: a probe into a training run", into_existing("train", lambda t: execute(probe_notebook(t), "r", {}),
                                                                 config=TRAINING_CONFIG),
         "holds a 'train' run, not 'probe'; choose another run name, or --force", False),
    Case("train CLI: alpha=0.5 (the hybrid default) with sampler=mono", cli_train("backbone=tiny", "sampler=mono", "alpha=0.5"),
         "alpha=0.5 has no effect with sampler 'mono'"),
    Case("train: alpha unset with sampler=mono is fine", expect_value(
        lambda t: TrainConfig(backbone="tiny", sampler="mono", device="cpu").resolved().alpha, None), None),
    Case("train: alpha unset with hybrid is 0.5", expect_value(
        lambda t: TrainConfig(backbone="tiny", device="cpu").resolved().alpha, 0.5), None),
    Case("train: run name with a newline (from a notebook)", config(run="a\nb"), "run 'a\\nb': expected a folder name"),
    Case("train CLI: run name with a space", cli_train("backbone=tiny", "run=a b"), "run 'a b': expected a folder name"),
    Case("train CLI: device=bogus", cli_train("backbone=tiny", "device=bogus"), "device 'bogus': expected auto, cpu, cuda"),
    Case("train CLI: device=cuda without CUDA", cli_train("backbone=tiny", "device=cuda"), "this machine has no CUDA GPU"),
    Case("train CLI: report_to=wandb without wandb", cli(train_main, "python -m lib.train", "backbone=tiny", "device=cpu",
                                                         "report_to=wandb", errors=TRAIN_ERRORS),
         "report_to='wandb' needs the wandb package, which is not installed: pip install wandb"),
    Case("train CLI: unknown source leaves no folder", cli(train_main, "python -m lib.train", "backbone=tiny", "device=cpu",
                                                           "train_sources=nope", errors=TRAIN_ERRORS),
         "unknown training source 'nope'"),
    Case("train CLI: empty sources leave no folder", cli(train_main, "python -m lib.train", "backbone=tiny", "device=cpu",
                                                         "train_sources=", errors=TRAIN_ERRORS),
         "train_sources '' gave no training groups"),
    Case("train CLI: unknown language leaves no folder", cli(train_main, "python -m lib.train", "backbone=tiny",
                                                             "device=cpu", "languages=xx", errors=TRAIN_ERRORS),
         "languages ['xx'] are in no training group"),
    Case("train CLI: into an evaluation run", into_existing("evaluate", cli(
        train_main, "python -m lib.train", "backbone=tiny", "device=cpu", "run=r", errors=TRAIN_ERRORS)),
         "holds a 'evaluate' run, not 'train'; choose another run name, or resume=False to write over it", False),
    Case("a full disk names the file", raising(OSError(errno.ENOSPC, "No space left on device", "/full/r/ranks.parquet")),
         "no space left on the device while writing /full/r/ranks.parquet; free space, or point HBT_OUTPUTS"),
    Case("a full disk in safetensors", raising(SafetensorError("Error while serializing: IoError(No space left on device "
                                                               "(os error 28))"), EVALUATE_ERRORS),
         "no space left on the device while writing a file"),
    Case("a read-only disk names the file", raising(OSError(errno.EROFS, "Read-only file system", "/ro/cache/x.npy")),
         "/ro/cache/x.npy is on a read-only file system; point HBT_OUTPUTS (runs) and HBT_CACHE"),
    Case("tatoeba CLI: run name with a space", cli(tatoeba_main, "python -m lib.tatoeba", "--backbone", "tiny", "--run",
                                                   "a b"), "python -m lib.tatoeba: error: --run 'a b': expected a folder name"),
    Case("tatoeba CLI: --batch-size 0", cli(tatoeba_main, "python -m lib.tatoeba", "--batch-size", "0"),
         "--batch-size 0: expected a value in [1, inf]"),
    Case("miracl CLI: --batch-size -1", cli(miracl_main, "python -m lib.miracl", "--batch-size", "-1"),
         "python -m lib.miracl: error: --batch-size -1: expected a value in [1, inf]"),
    Case("miracl CLI: --shard-size 0", cli(miracl_main, "python -m lib.miracl", "--shard-size", "0"),
         "--shard-size 0: expected a value in [1, inf]"),
    Case("slurm CLI: missing grid file", cli(slurm_main, "python -m lib.slurm", "nowhere.yaml", "--cluster", "debug"),
         "grid file nowhere.yaml not found"),
    Case("model_card CLI: a folder without a model", lambda t: run_cli(model_card_main, "python -m lib.model_card", (), [
        str(t), "--repo-id", "u/m", "--dry-run"]), "expected a trained model folder with model.safetensors"),
    Case("CLI: read-only outputs folder", read_only_outputs,
         "no permission to write /ro/r (Permission denied); make the folder writable or point HBT_OUTPUTS"),
]


@pytest.fixture
def _no_progress_bars():
    """The tiny model's "Loading weights" bar is not part of a message."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    yield
    transformers_logging.enable_progress_bar()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.usefixtures("_no_progress_bars")
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


def test_the_table_covers_at_least_90_cases():
    assert len(CASES) >= 90


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
    result = train(tiny_config(resume=False, keep_optimizer_state=True), groups=groups(), progress=False)
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
