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
    assert metrics == {"summary": {"map": 0.5}, "primary_metric": None, "greater_is_better": {"map": None},
                       "timings": {"total_s": 1.0},
                       "per_language": [{"lang": "en", "map": 0.5}], "per_pair": None}
    assert json.loads((path / "config.json").read_text())["dataset"] == "toy"
    assert pd.read_parquet(path / "neighbours.parquet").equals(extra)
    assert (path / "per_query.parquet").is_file() and not (path / "ranks.parquet").exists()


# --------------------------------------------------------------------------------------------
# One metric key scheme: {dataset}_{setting}_{metric}, primary metric, direction, old files

def test_every_evaluator_declares_a_primary_metric_and_keys_in_one_scheme():
    primaries = {name: evaluator_for(name).primary() for name in results.EVALUATORS}
    assert primaries == {"xquad-r": "xquad-r_multi_map", "mlqa-r": "mlqa-r_multi_map",
                         "tatoeba": "tatoeba_xtreme-r-xx2eng_accuracy", "miracl": "miracl_mean_ndcg@10"}
    for name, evaluator in results.EVALUATORS.items():
        keys = list(evaluator.summary_keys(name))
        assert evaluator.primary() in keys and set(evaluator.report_keys()) <= set(keys)
        for key in keys:
            dataset, setting, metric = results.parse_metric_key(key)
            assert dataset == name and results.metric_key(dataset, setting, metric) == key
    assert results.greater_is_better("xquad-r_multi_rank_distance") is False
    assert results.greater_is_better("miracl_mean_ndcg@10") is True
    assert results.greater_is_better("tatoeba_xtreme-r_n_languages") is None
    with pytest.raises(ValueError, match="no underscore"):
        results.metric_key("xquad_r", "mono", "map")


OLD_SUMMARIES = {   # metrics.json summaries as written before the key scheme
    "xquad-r": ({"mono map": 0.5, "multi map@20": 0.25, "multi rank_distance": 1.5},
                {"xquad-r_mono_map": 0.5, "xquad-r_multi_map@20": 0.25, "xquad-r_multi_rank_distance": 1.5}),
    "tatoeba": ({"tatoeba_xtreme_r_xx_to_eng": 0.8, "tatoeba_all_mean": 0.7, "tatoeba_xquad_r_n_languages": 10},
                {"tatoeba_xtreme-r-xx2eng_accuracy": 0.8, "tatoeba_all-mean_accuracy": 0.7,
                 "tatoeba_xquad-r_n_languages": 10}),
    "miracl": ({"ndcg@10_mean": 0.6, "recall@100_median": 0.9, "n_languages": 15.0},
               {"miracl_mean_ndcg@10": 0.6, "miracl_median_recall@100": 0.9, "miracl_all_n_languages": 15.0}),
}


@pytest.mark.parametrize("dataset", sorted(OLD_SUMMARIES))
def test_old_metrics_files_are_read_in_todays_keys(dataset):
    old, new = OLD_SUMMARIES[dataset]
    assert results.read_summary({"summary": old}, dataset) == new
    assert results.read_summary({"summary": new}, dataset) == new          # today's files pass unchanged


def test_report_reads_old_and_new_metrics_files_into_the_same_columns(tmp_path):
    from lib.gather import report_values, summary_metrics

    old = {"mono map": 0.5, "cross map": 0.4, "multi map": 0.3, "multi rank_distance": 2.0}
    new = {results.metric_key("mlqa-r", *label.split(" ")): value for label, value in old.items()}
    assert report_values({"summary": old}, "mlqa-r") == report_values({"summary": new}, "mlqa-r")
    assert report_values({"summary": new}, "mlqa-r")["multi rank_distance"] == 2.0
    assert summary_metrics("miracl")[:2] == ["ndcg@10_mean", "recall@100_mean"]     # the report's labels
    assert report_values({"summary": {"miracl_mean_ndcg@10": 0.6}}, "miracl")["ndcg@10_mean"] == 0.6
