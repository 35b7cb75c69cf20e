"""The papermill runner: parameters reach the notebook, complete runs are skipped, summary is written."""

from __future__ import annotations

import nbformat
import yaml

from lib.io import outputs_dir
from lib.runner import collect, execute, run_plan


def make_notebook(path):
    notebook = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("value = 1\nrun = ''")
    params.metadata["tags"] = ["parameters"]
    notebook.cells = [params, nbformat.v4.new_code_cell(
        "from lib.io import run_dir, write_json\n"
        "path = run_dir(run)\n"
        "(path / 'calls.txt').open('a').write('x')\n"
        "write_json(path / 'config.json', {'task': 'evaluate', 'dataset': 'toy', 'backbone': 'none'})\n"
        "write_json(path / 'metrics.json', {'summary': {'value': value}, 'timings': {'total_s': 0.1}})")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_execute_passes_parameters_and_skips_complete_runs(tmp_path):
    notebook = make_notebook(tmp_path / "toy.ipynb")
    path = execute(str(notebook), "toy-run", {"value": 7})
    assert (path / "toy.ipynb").is_file()
    assert collect(["toy-run"]).loc[0, "value"] == 7
    execute(str(notebook), "toy-run", {"value": 8})  # complete: skipped
    assert (path / "calls.txt").read_text() == "x"
    execute(str(notebook), "toy-run", {"value": 9}, force=True)
    assert collect(["toy-run"]).loc[0, "value"] == 9


def test_run_plan_writes_summary(tmp_path):
    notebook = make_notebook(tmp_path / "toy.ipynb")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"summary": "sum", "runs": [
        {"notebook": str(notebook), "run": "a", "value": 1},
        {"notebook": str(notebook), "run": "b", "value": 2}]}))
    table = run_plan(plan)
    assert table.value.tolist() == [1, 2]
    assert "| a " in (outputs_dir() / "sum" / "summary.md").read_text()
