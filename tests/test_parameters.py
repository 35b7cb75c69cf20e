"""The steps' command lines and notebooks share one parameter dataclass each (lib.parameters):
the notebooks' parameters cells are generated from it (plain constants), ``--help`` lists every
field, the command line runs the same step, and the smoke profile is one table applied in one
place (``notebook_config`` in the notebooks, ``from_overrides`` on the command lines)."""

from __future__ import annotations

import dataclasses
import json

import nbformat
import pytest

from lib import batch_composition, bias, data_figures, evaluate, report, train
from lib.io import PROJECT_ROOT
from lib.parameters import (UnknownParameterError, fields_help, from_overrides, notebook_config, notebook_parameters,
                            smoke_values)
from lib.validation import ParameterError

STEPS = {"04_evaluate": (evaluate.EvaluateConfig, evaluate.main), "05_bias": (bias.BiasConfig, bias.main),
         "06_report": (report.ReportConfig, report.main)}
CONFIGS = {"01_data": data_figures.DataConfig, "02_sampling": batch_composition.SamplingConfig,
           "03_train": train.TrainConfig} | {name: config for name, (config, _) in STEPS.items()}


def parameters_cell(notebook: str) -> str:
    cells = nbformat.read(PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4).cells
    return next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("notebook", CONFIGS)
def test_parameters_cell_is_generated_from_the_config(notebook):
    config = CONFIGS[notebook]
    assert parameters_cell(notebook) == notebook_parameters(config), (
        f"notebooks/{notebook}.ipynb's parameters cell is out of date: run python scripts/sync_parameters.py")
    for f in dataclasses.fields(config):
        assert f.metadata.get("help"), f"{config.__name__}.{f.name} needs its help"
        # papermill's parser skips a parameters line holding two '=' (the help is its comment)
        assert "=" not in f.metadata["help"], f"{config.__name__}.{f.name}: write ':' for '=' in its help"


@pytest.mark.parametrize("notebook", CONFIGS)
def test_parameters_cell_is_plain_constants_papermill_reads_with_their_help(notebook):
    """No import, no expression: papermill's own parser (``--help-notebook``) finds every field,
    its default and its help."""
    import papermill

    source = parameters_cell(notebook)
    assert "import" not in source and "[profile]" not in source and "environ" not in source
    inspected = papermill.inspect_notebook(str(PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb"))
    config = CONFIGS[notebook]
    assert list(inspected) == [f.name for f in dataclasses.fields(config)]
    for f in dataclasses.fields(config):
        assert inspected[f.name]["help"] == f.metadata["help"], f.name
        namespace: dict = {}
        exec(f"value = {inspected[f.name]['default']}", namespace)
        assert namespace["value"] == f.default, f.name


def _run_cells(notebook: str, injected: str = "", profile: str = "full") -> dict:
    """The namespace after the parameters cell, papermill's injected cell (IPython's ``In`` holds
    its source) and the cell after them (``notebook_config``)."""
    namespace: dict = {}
    exec(parameters_cell(notebook), namespace)
    exec(injected, namespace)
    namespace["In"] = ["", parameters_cell(notebook)] + ([injected] if injected else [])
    notebook_config(CONFIGS[notebook], namespace, profile=profile)
    return namespace


@pytest.mark.parametrize("notebook", CONFIGS)
@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_the_cell_after_the_parameters_applies_the_profile(notebook, profile):
    config = CONFIGS[notebook]
    namespace = _run_cells(notebook, profile=profile)
    smoke = smoke_values(config) if profile == "smoke" else {}
    for f in dataclasses.fields(config):
        assert namespace[f.name] == smoke.get(f.name, f.default), f.name


def test_smoke_table_is_the_fields_metadata_and_covers_the_tiny_run():
    assert smoke_values(train.TrainConfig) == {"backbone": "tiny", "batch_size": 8, "steps": 4}
    assert smoke_values(evaluate.EvaluateConfig) == {"backbone": "tiny", "max_questions": 40}
    assert smoke_values(data_figures.DataConfig) == {"eval_max_questions": 100}
    assert smoke_values(batch_composition.SamplingConfig) == {"n_batches": 50}


def test_injected_and_edited_values_win_over_the_smoke_profile():
    injected = "# Parameters\nsteps = 2\nrun = \"mine\"\n"
    namespace = _run_cells("03_train", injected, profile="smoke")
    assert (namespace["steps"], namespace["run"], namespace["backbone"], namespace["batch_size"]) == (
        2, "mine", "tiny", 8)
    namespace = _run_cells("03_train", "# Parameters\nsteps = 150\n", profile="smoke")   # injected at its default
    assert namespace["steps"] == 150 and namespace["batch_size"] == 8
    namespace: dict = {}
    exec(parameters_cell("04_evaluate").replace("max_questions = None", "max_questions = 7"), namespace)
    assert notebook_config(evaluate.EvaluateConfig, namespace, profile="smoke").max_questions == 7   # edited cell


def test_a_misspelt_injected_parameter_is_refused_with_the_closest_field():
    with pytest.raises(UnknownParameterError) as error:
        _run_cells("03_train", "# Parameters\nlerning_rate = 0.0001\nrun = \"x\"\n")
    message = str(error.value)
    assert "lerning_rate" in message and "did you mean learning_rate?" in message and "\n" not in message
    assert error.value._render_traceback_() == [f"UnknownParameterError: {message}"]   # IPython shows one line
    with pytest.raises(UnknownParameterError, match="max_qestions: did you mean max_questions"):
        _run_cells("04_evaluate", "# Parameters\nmax_qestions = 3\n")
    # names the user defines in other cells are not parameters; only papermill's cell is checked
    namespace = {"In": ["", "helper = 3"], "helper": 3}
    assert notebook_config(bias.BiasConfig, namespace).top_k == 10


def test_unknown_profile_is_refused(monkeypatch):
    monkeypatch.setenv("HBT_PROFILE", "smoek")
    with pytest.raises(ParameterError, match="HBT_PROFILE='smoek': expected one of \\['full', 'smoke'\\]"):
        _run_cells("05_bias", profile=None)


def test_command_lines_honour_the_smoke_profile(monkeypatch, tmp_path):
    """The CLIs start from the same table as the notebooks; key=value still wins."""
    from lib.parameters import parse_command_line

    monkeypatch.setenv("HBT_PROFILE", "smoke")
    config = parse_command_line(evaluate.EvaluateConfig, "python -m lib.evaluate", "", ["max_questions=5"])
    assert (config.backbone, config.max_questions) == ("tiny", 5)
    assert train.TrainConfig.from_file(None, ["steps=2"], profile="smoke").batch_size == 8
    path = tmp_path / "evaluate.yaml"
    path.write_text("dataset: mlqa-r\n")                 # a file keeps the profile's other values
    config = parse_command_line(evaluate.EvaluateConfig, "python -m lib.evaluate", "", ["--config", str(path)])
    assert (config.backbone, config.max_questions, config.dataset) == ("tiny", 40, "mlqa-r")
    monkeypatch.setenv("HBT_PROFILE", "full")
    config = parse_command_line(evaluate.EvaluateConfig, "python -m lib.evaluate", "", [])
    assert (config.backbone, config.max_questions) == ("me5-small-q4", None)


@pytest.mark.parametrize("notebook", STEPS)
def test_help_lists_every_parameter_and_its_default(capsys, notebook):
    config, main = STEPS[notebook]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(config):
        assert f"{f.name}={f.default!r}" in text and f.metadata["help"] in text, f.name
    assert fields_help(config) in text


def test_overrides_are_read_as_yaml_and_unknown_names_are_refused(tmp_path):
    path = tmp_path / "bias.yaml"
    path.write_text("runs: a,b\ntop_k: 5\n")
    config = from_overrides(bias.BiasConfig, path, ["top_k=20", "device=cpu"])
    assert (config.runs, config.top_k, config.device) == ("a,b", 20, "cpu")
    assert from_overrides(evaluate.EvaluateConfig, None, ["max_questions=null"]).max_questions is None
    listed = tmp_path / "listed.yaml"                   # a text field: a YAML list is its comma form, null empty
    listed.write_text("runs: [a, b]\ndevice: null\n")
    assert (from_overrides(bias.BiasConfig, listed).runs, from_overrides(bias.BiasConfig, listed).device) == ("a,b", "")
    with pytest.raises(ValueError, match="--config .*missing.yaml: no such file"):
        from_overrides(bias.BiasConfig, tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown BiasConfig parameters.*top_kk: did you mean top_k.*--help"):
        from_overrides(bias.BiasConfig, None, ["top_kk=3"])
    with pytest.raises(ValueError, match="key=value"):
        from_overrides(bias.BiasConfig, None, ["top_k"])


@pytest.mark.real_data
def test_command_lines_run_evaluate_bias_and_report(lareqa_dir, capsys):
    evaluation, path = evaluate.main(["backbone=tiny", "dataset=xquad-r", "max_questions=5", "device=cpu",
                                      "languages=en,de,es", "run=cli-eval"])
    assert json.loads((path / "config.json").read_text())["languages"] == ["de", "en", "es"]
    assert "xquad-r_mono_map" in capsys.readouterr().out
    analyses, bias_path = bias.main(["runs=cli-eval", "device=cpu"])
    assert bias_path.name == "bias-cli-eval" and (bias_path / "metrics.json").is_file()
    built, report_path = report.main(["grid=", "extra_runs=cli-eval", "resamples=20", "run=cli-report"])
    assert (report_path / "report.md").is_file()
    assert "cli-eval" in built.results.eval_run.tolist()


def test_sync_script_finds_every_parameters_cell_current():
    """scripts/sync_parameters.py (what a maintainer runs after adding a field) sees no stale cell."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_parameters", PROJECT_ROOT / "scripts" / "sync_parameters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.sync(check=True) == []
