"""The steps' command lines and notebooks share one parameter dataclass each (lib.parameters):
the notebooks' parameters cells are generated from it, ``--help`` lists every field, and the
command line runs the same step."""

from __future__ import annotations

import dataclasses
import json

import nbformat
import pytest

from lib import bias, evaluate, report
from lib.io import PROJECT_ROOT
from lib.parameters import fields_help, from_namespace, from_overrides, notebook_parameters

STEPS = {"04_evaluate": (evaluate.EvaluateConfig, evaluate.main), "05_bias": (bias.BiasConfig, bias.main),
         "06_report": (report.ReportConfig, report.main)}


def parameters_cell(notebook: str) -> str:
    cells = nbformat.read(PROJECT_ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4).cells
    return next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("notebook", STEPS)
def test_parameters_cell_is_generated_from_the_config(notebook):
    config, _ = STEPS[notebook]
    assert parameters_cell(notebook) == notebook_parameters(config), (
        f"notebooks/{notebook}.ipynb's parameters cell is out of date: paste the output of "
        f"python -m lib.{config.__module__.split('.')[-1]} --notebook-parameters")


@pytest.mark.parametrize("notebook", STEPS)
@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_parameters_cell_gives_the_config_defaults(monkeypatch, notebook, profile):
    config, _ = STEPS[notebook]
    monkeypatch.setenv("HBT_PROFILE", profile)
    namespace: dict = {}
    exec(parameters_cell(notebook), namespace)
    read = from_namespace(config, namespace)
    for f in dataclasses.fields(config):
        expected = f.metadata["smoke"] if profile == "smoke" and "smoke" in f.metadata else f.default
        assert getattr(read, f.name) == expected, f.name


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
    assert "mono map" in capsys.readouterr().out
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
