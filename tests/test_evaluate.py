"""The whole evaluation on a small real subset with the tiny model: files and their contents."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lib.evaluate import run_evaluation
from lib.hardware import resolve_precision


@pytest.mark.real_data
def test_run_evaluation_writes_a_complete_run(lareqa_dir, tmp_path):
    evaluation, path = run_evaluation("tiny", "mlqa-r", max_questions=30, device="cpu", run="t")
    for name in ("config.json", "versions.json", "metrics.json", "ranks.parquet", "per_query.parquet",
                 "neighbours.parquet", "alignment.parquet", "trec/mono.run.gz", "trec/mono.qrels",
                 "trec/cross.run.gz", "trec/multi.qrels"):
        assert (path / name).is_file(), name
    metrics = json.loads((path / "metrics.json").read_text())
    assert set(metrics["summary"]) >= {"mlqa-r_mono_map", "mlqa-r_cross_map", "mlqa-r_multi_map",
                                        "mlqa-r_multi_rank_distance", "mlqa-r_mono_recall@1",
                                        "mlqa-r_multi_recall@10", "mlqa-r_mono_map@20"}
    assert metrics["primary_metric"] == "mlqa-r_multi_map"
    assert metrics["greater_is_better"]["mlqa-r_multi_rank_distance"] is False
    assert metrics["greater_is_better"]["mlqa-r_mono_map@20"] is True
    config = json.loads((path / "config.json").read_text())
    assert config["backbone_settings"]["query_prefix"] == "query: "
    assert config["candidate_context"] == "sentence"
    assert config["precision"] == resolve_precision("auto", "cpu")      # the resolved one, recorded
    versions = json.loads((path / "versions.json").read_text())
    assert versions["hardware"]["cpu_model"] and "cpu_has_bf16" in versions["hardware"]
    ranks = pd.read_parquet(path / "ranks.parquet")
    # MLQA-R: 7 mono settings; cross only where the id exists in both languages
    assert ranks.query("setting == 'mono'").query_lang.nunique() == 7
    assert len(ranks.query("setting == 'cross'").groupby(["query_lang", "target_lang"])) <= 42
    multi = ranks.query("setting == 'multi'")
    assert multi.groupby(["query_lang", "qid"]).size().between(2, 4).all()
    for setting in ("mono", "cross", "multi"):
        assert 0 < metrics["summary"][f"mlqa-r_{setting}_map"] <= 1


def test_run_evaluation_dispatches_tatoeba(tmp_path):
    import os

    root = os.environ.get("TATOEBA_DIR")
    if not root:
        pytest.skip("TATOEBA_DIR is not set")
    evaluation, path = run_evaluation("tiny", "tatoeba", languages=["deu"], device="cpu", run="tt")
    metrics = json.loads((path / "metrics.json").read_text())
    assert 0 <= metrics["summary"]["tatoeba_all-xx2eng_accuracy"] <= 1
    assert metrics["primary_metric"] == "tatoeba_xtreme-r-xx2eng_accuracy"
    assert metrics["greater_is_better"]["tatoeba_all_n_languages"] is None
    assert json.loads((path / "config.json").read_text())["dataset"] == "tatoeba"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="tatoeba"):
        run_evaluation("tiny", "squad", device="cpu")
