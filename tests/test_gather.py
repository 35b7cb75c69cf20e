"""lib.gather trusts only the completion marker: a metrics.json alone may be a killed run's."""

from __future__ import annotations

from lib.completion import mark_complete
from lib.gather import evaluation_complete
from lib.io import outputs_dir, write_json


def _evaluation(run: str, **config) -> None:
    write_json(outputs_dir() / run / "config.json", {"task": "evaluate", "run": run, **config})
    write_json(outputs_dir() / run / "metrics.json", {"summary": {"mono map": 0.5}})


def test_metrics_without_a_marker_are_not_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    _evaluation("eval-a")
    assert not evaluation_complete("eval-a") and not evaluation_complete("never-ran")
    mark_complete(outputs_dir() / "eval-a", notebook="04_evaluate.ipynb")
    assert evaluation_complete("eval-a")


def test_a_debias_variant_is_complete_with_the_evaluation_that_wrote_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    _evaluation("eval-b")
    _evaluation("eval-b-center-pool", debias={"name": "center-pool"}, debias_of="eval-b")
    assert not evaluation_complete("eval-b-center-pool")      # the notebook was killed after the variant
    mark_complete(outputs_dir() / "eval-b", notebook="04_evaluate.ipynb")
    assert evaluation_complete("eval-b-center-pool")
