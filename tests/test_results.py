"""The evaluation record, its run folder, and the dataset -> evaluator registry (lib.results)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lib.evaluate  # noqa: F401  registers every dataset's evaluator
from lib import results
from lib.results import Evaluation, EvaluationRequest, evaluator_for, register_evaluator, write_evaluation


def test_every_dataset_registers_its_evaluator():
    assert set(results.EVALUATORS) == {"xquad-r", "mlqa-r", "tatoeba", "miracl"}
    assert set(lib.evaluate.DATASETS) == set(results.EVALUATORS)
    assert evaluator_for("tatoeba").evaluate.__module__ == "lib.tatoeba"
    assert evaluator_for("miracl").evaluate.__module__ == "lib.miracl"
    paragraph = EvaluationRequest("mlqa-r", candidate_context="paragraph")
    assert evaluator_for("mlqa-r").run_suffix(paragraph) == "-paragraph"
    assert evaluator_for("tatoeba").run_suffix(EvaluationRequest("tatoeba", candidate_context="paragraph")) == ""


def test_registering_a_second_evaluator_for_a_dataset_is_refused(monkeypatch):
    monkeypatch.setattr(results, "EVALUATORS", {})

    @register_evaluator("toy")
    def first(model, request):
        return None, {}

    register_evaluator("toy")(first)                         # the same one again (a reload): fine

    def second(model, request):
        return None, {}

    with pytest.raises(ValueError, match="already has an evaluator"):
        register_evaluator("toy")(second)
    with pytest.raises(ValueError, match="'squad'.*toy"):
        evaluator_for("squad")


def test_write_evaluation_writes_metrics_and_every_table(tmp_path):
    per_language = pd.DataFrame({"lang": ["en"], "map": [0.5]}).set_index("lang")
    extra = pd.DataFrame({"qid": ["q1"], "rank": [3]})
    evaluation = Evaluation({"map": 0.5}, per_language, per_query=extra, timings={"total_s": 1.0},
                            tables={"neighbours.parquet": extra})
    path = write_evaluation(tmp_path / "run", evaluation, {"dataset": "toy"})
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics == {"summary": {"map": 0.5}, "timings": {"total_s": 1.0},
                       "per_language": [{"lang": "en", "map": 0.5}], "per_pair": None}
    assert json.loads((path / "config.json").read_text())["dataset"] == "toy"
    assert pd.read_parquet(path / "neighbours.parquet").equals(extra)
    assert (path / "per_query.parquet").is_file() and not (path / "ranks.parquet").exists()
