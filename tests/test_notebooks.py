"""The notebooks executed as a user runs them (papermill, a real kernel), and the numbers they record.

As microsoft/recommenders' ``tests/functional/examples/test_notebooks_python.py``: every step
notebook runs once with its smoke parameters (``lib.parameters.smoke_values``, injected by
papermill; tiny backbone, CPU, fp32) in one chain sharing an outputs folder, 01 -> 06, where
03's trained model is what 04 evaluates, 05 analyses 04's run and 06 reports it; then each test
reads what its notebook wrote (``summary.json``, ``metrics.json``, csv files) and compares it with
``EXPECTED`` (``pytest.approx``). ``make test-notebooks`` (nbval) still executes every notebook
under ``HBT_PROFILE=smoke``; these tests check the numbers and the outputs.

EXPECTED was obtained by running the chain once on CPU (fp32, torch's default thread count) and
is regenerated with ``python tests/test_notebooks.py`` (needs LAREQA_DIR), which runs the chain in
a temporary folder and prints the dictionary to paste. Tolerances allow for the last bits that
thread count and CPU change; a changed metric, count or sampler rule is far outside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest

from lib.batch_composition import SamplingConfig
from lib.bias import BiasConfig
from lib.data_figures import DataConfig
from lib.evaluate import EvaluateConfig
from lib.gather import report_values
from lib.io import PROJECT_ROOT
from lib.parameters import smoke_values
from lib.report import ReportConfig
from lib.train import TrainConfig

NOTEBOOKS = PROJECT_ROOT / "notebooks"
TRAIN_RUN = "train-nb"
EVAL_RUN = "eval-nb"


def chain_parameters() -> dict[str, dict[str, Any]]:
    """Each notebook's papermill parameters: its smoke values, CPU and fp32 (the same numbers on every
    machine), and the run names that link the chain."""
    cpu = {"device": "cpu", "precision": "fp32"}
    return {
        "01_data": smoke_values(DataConfig) | {"run": "data-nb"},
        "02_sampling": smoke_values(SamplingConfig) | {"run": "sampling-nb"},
        "03_train": smoke_values(TrainConfig) | cpu | {"run": TRAIN_RUN},
        "04_evaluate": smoke_values(EvaluateConfig) | cpu | {"backbone": f"../outputs/{TRAIN_RUN}/model-best",
                                                             "run": EVAL_RUN},
        "05_bias": smoke_values(BiasConfig) | {"runs": EVAL_RUN, "device": "cpu", "run": "bias-nb"},
        "06_report": smoke_values(ReportConfig) | {"grid": "", "extra_runs": EVAL_RUN, "run": "report-nb"},
    }


def execute(notebook: str, outputs: Path, parameters: dict[str, Any]) -> Path:
    """``notebooks/<notebook>.ipynb`` executed as the grid does (``lib.notebooks.execute``: papermill,
    then the completion marker) into ``outputs/<run>/``; the executed notebook's path."""
    from lib.notebooks import execute as execute_notebook

    previous = os.environ.get("HBT_OUTPUTS")
    os.environ["HBT_OUTPUTS"] = str(outputs)    # the kernel inherits it
    try:
        values = dict(parameters)
        run = execute_notebook(f"{notebook}.ipynb", values.pop("run"), values, force=True)
    finally:
        if previous is None:
            os.environ.pop("HBT_OUTPUTS", None)
        else:
            os.environ["HBT_OUTPUTS"] = previous
    return run / f"{notebook}.ipynb"


def run_chain(outputs: Path) -> dict[str, Path]:
    # the trained model's path is relative to the kernel's folder, notebooks/; make it point to ``outputs``
    parameters = chain_parameters()
    parameters["04_evaluate"]["backbone"] = str(outputs / TRAIN_RUN / "model-best")
    return {name: execute(name, outputs, values) for name, values in parameters.items()}


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def recorded_values(outputs: Path) -> dict[str, dict[str, Any]]:
    """What the notebooks recorded, the numbers ``EXPECTED`` holds."""
    data = _read(outputs / "data-nb" / "summary.json")
    sampling = pd.read_csv(outputs / "sampling-nb" / "batch_summary.csv")
    checks = _read(outputs / "sampling-nb" / "checks.json")
    trained = _read(outputs / TRAIN_RUN / "metrics.json")
    evaluation = report_values(_read(outputs / EVAL_RUN / "metrics.json"), "xquad-r")   # the report's labels
    bias = _read(outputs / "bias-nb" / "metrics.json")
    report = pd.read_csv(outputs / "report-nb" / "results.csv")
    batches = {f"batches {sampler}": int(count) for sampler, count in sampling.groupby("sampler").size().items()}
    return {
        "01_data": {"groups": data["groups"], "train_groups": data["train_groups"],
                    "validation_groups": data["validation_groups"],
                    "question_exact_share": data["leakage"]["question"]["exact_share"],
                    "passage_exact_share": data["leakage"]["passage"]["exact_share"],
                    "n_eval_questions": data["leakage"]["question"]["n_eval"]},
        "02_sampling": batches | {"hybrid_mono_share": checks["hybrid_mono_share"],
                                  "batches_with_repeated_qid": checks["batches_with_repeated_qid"]},
        "03_train": {key: trained[key] for key in ("steps", "pairs", "final_train_loss", "best_val_loss")},
        "04_evaluate": {key: evaluation[key] for key in ("mono map", "cross map", "multi map", "multi rank_distance")},
        "05_bias": {key: value for key, value in bias["summary"].items() if isinstance(value, (int, float))},
        "06_report": {"runs": len(report), "complete": int((report.status == "complete").sum()),
                      "n_questions": int(report.n_questions.iloc[0]), "train_steps": int(report.train_steps.iloc[0]),
                      "multi map": float(report["multi map"].iloc[0]),
                      "mono map unseen": float(report["mono map unseen"].iloc[0])},
    }


# From ``python tests/test_notebooks.py`` (CPU, fp32); regenerate the same way after an intended change.
EXPECTED: dict[str, dict[str, Any]] = {
    "01_data": {"groups": 1148, "train_groups": 1033, "validation_groups": 115, "question_exact_share": 0.0,
                "passage_exact_share": 0.0, "n_eval_questions": 1100},
    "02_sampling": {"batches cross": 50, "batches en": 50, "batches hybrid": 50, "batches mono": 50, "batches xx": 50,
                    "hybrid_mono_share": 0.5, "batches_with_repeated_qid": 0},
    "03_train": {"steps": 4, "pairs": 32, "final_train_loss": 2.5729007720947266, "best_val_loss": 2.748032867908478},
    "04_evaluate": {"mono map": 0.37129949595858686, "cross map": 0.23282339440862165,
                    "multi map": 0.11386344966996455, "multi rank_distance": 115.05},
    "05_bias": {"rank_distance": 115.05, "same_language_first": 0.3522727272727273, "chance": 0.09090909090909091,
                "strong_alignment": 0.0, "same_language_distractor": 0.7818181818181817,
                "top_k_same_language": 0.20250000000000004, "top_k_hits_same_language": 0.38369481108260933,
                "rank_agreement": 1.0},
    "06_report": {"runs": 1, "complete": 1, "n_questions": 440, "train_steps": 4,
                  "multi map": 0.11386344966996455, "mono map unseen": 0.3780948391885892},
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, lareqa_dir) -> tuple[Path, dict[str, Path]]:
    """Every step notebook executed once, 01 -> 06, into one outputs folder."""
    outputs = tmp_path_factory.mktemp("notebooks") / "outputs"
    return outputs, run_chain(outputs)


@pytest.mark.parametrize("notebook", ["01_data", "02_sampling", "03_train", "04_evaluate", "05_bias", "06_report"])
def test_notebook_records_the_expected_numbers(chain, notebook):
    outputs, _ = chain
    recorded = recorded_values(outputs)[notebook]
    expected = EXPECTED[notebook]
    assert recorded == pytest.approx(expected, rel=1e-3, abs=1e-4), (
        f"{notebook} recorded {recorded!r}, expected {expected!r}; if the change is intended, "
        "regenerate EXPECTED with python tests/test_notebooks.py")


def test_executed_notebooks_have_no_warnings_or_errors(chain):
    """No warning noise (tqdm's "IProgress not found", deprecations) in what a user opens."""
    _, executed = chain
    for name, path in executed.items():
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for output in cell.get("outputs", []):
                assert output.output_type != "error", f"{name} cell {number}: {output.get('ename')}"
                if output.output_type == "stream" and output.name == "stderr":
                    assert "Warning" not in output.text, f"{name} cell {number}: {output.text[:300]}"


def test_train_notebook_ends_with_a_command_that_evaluates_its_model(chain):
    outputs, executed = chain
    last = nbformat.read(executed["03_train"], as_version=4).cells[-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    model = outputs / TRAIN_RUN / "model-best"
    assert f"python -m lib.notebooks 04_evaluate.ipynb --run eval-{TRAIN_RUN} " in text
    assert f'--parameters \'{{"backbone": "{model}"}}\'' in text
    assert f"python -m lib.evaluate backbone={model} run=eval-{TRAIN_RUN}" in text


def _check_lab_render():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_lab_render", PROJECT_ROOT / "scripts" / "check_lab_render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(_check_lab_render().chromium() is None,
                    reason="Chromium is not installed (apt-get install chromium): the browser check of "
                           "JupyterLab (scripts/check_lab_render.py) is skipped")
@pytest.mark.parametrize("view", ["lab", "html"])
def test_jupyterlab_renders_the_parameters_tables_and_figures(chain, tmp_path, view):
    """02_sampling executed, opened in JupyterLab (and as nbconvert HTML) in headless Chromium."""
    _, executed = chain
    result = _check_lab_render().check(executed["02_sampling"], view, tmp_path)
    assert result["expected_tables"] >= 2 and result["expected_figures"] >= 4     # what the notebook holds
    assert result["ok"], result


# ------------------------------------------------------------------ parameters a notebook lacks


def test_plain_papermill_refuses_a_parameter_the_notebook_lacks(tmp_path):
    """papermill itself only warns ("Passed unknown parameter"); the notebook's second cell stops
    with one line naming the parameter and the closest declared one (02_sampling: no model)."""
    env = {**os.environ, "HBT_OUTPUTS": str(tmp_path / "outputs")}
    result = subprocess.run([sys.executable, "-m", "papermill", str(NOTEBOOKS / "02_sampling.ipynb"),
                             str(tmp_path / "out.ipynb"), "-p", "n_batchs", "5", "--cwd", str(NOTEBOOKS)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    line = ("UnknownParameterError: unknown SamplingConfig parameters ['n_batchs'] injected by papermill "
            "(n_batchs: did you mean n_batches?)")
    assert line in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()       # refused before any folder was made


def test_train_notebook_refuses_a_misspelt_learning_rate_before_loading_a_model(tmp_path, monkeypatch):
    """The issue's command: ``papermill 03_train.ipynb out.ipynb -p lerning_rate 1e-4``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(PapermillExecutionError) as error:
        papermill.execute_notebook(str(NOTEBOOKS / "03_train.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"lerning_rate": 1e-4}, cwd=str(NOTEBOOKS), progress_bar=False)
    assert error.value.ename == "UnknownParameterError"
    assert "['lerning_rate'] injected by papermill (lerning_rate: did you mean learning_rate?)" in error.value.evalue
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = next(c for c in executed.cells if any(o.output_type == "error" for o in c.get("outputs", [])))
    assert "notebook_config(TrainConfig" in failed.source   # the cell after the parameters: nothing loaded yet
    assert not (tmp_path / "outputs").exists()


def main(argv: list[str]) -> None:
    """Run the chain (in ``argv[0]`` if given, else a temporary folder) and print EXPECTED and
    each notebook's duration."""
    with tempfile.TemporaryDirectory() as folder:
        outputs = Path(argv[0] if argv else folder) / "outputs"
        executed = run_chain(outputs)
        for name, path in executed.items():
            print(f"{name}: {nbformat.read(path, as_version=4).metadata.papermill.duration:.0f} s")
        print("EXPECTED = " + json.dumps(recorded_values(outputs), indent=4))


if __name__ == "__main__":
    main(sys.argv[1:])
