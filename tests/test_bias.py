"""Language-bias measures on a hand-made multilingual ranking whose every rank is known.

Two questions (q1, q2) in English and German; candidates c0..c5 (en: c0 answer q1, c1 answer
q2, c2 wrong; de: c3 answer q1, c4 answer q2, c5 wrong). Candidate embeddings are the unit
vectors, so a question's embedding *is* its score for each candidate:

    query   scores c0..c5                 relevant ranks   distance  same first  aligned  distractor
    q1 en   .9 .1 .8 .7 .2 .3             c0:1  c3:3       2         yes         no       yes (c2:2 < 3)
    q1 de   .8 .0 .1 .9 .2 .3             c3:1  c0:2       1         yes         yes      no  (c5:3 > 2)
    q2 en   .3 .5 .1 .2 .9 .0             c1:2  c4:1       1         no          yes      no  (c0:3 > 1)
    q2 de   .6 .4 .0 .1 .5 .7             c4:3  c1:4       1         yes         no       yes (c5:1 < 4)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.bias import (ALIGNMENT_FILE, NEIGHBOURS_FILE, analyse_run, analyse_tables, multilingual_neighbours,
                      pool_language_share, rank_distance_by_language, rank_agreement, relevant_rank_matrix,
                      relevant_rank_table, run_bias_analysis, top_k_language_share)
from lib.data import RetrievalDataset
from lib.io import run_dir, write_json
from lib.metrics import per_query_metrics
from lib.retrieval import lareqa_ranks

SCORES = {("q1", "en"): [.9, .1, .8, .7, .2, .3], ("q1", "de"): [.8, .0, .1, .9, .2, .3],
          ("q2", "en"): [.3, .5, .1, .2, .9, .0], ("q2", "de"): [.6, .4, .0, .1, .5, .7]}
ANSWER = {("q1", "en"): 0, ("q2", "en"): 1, ("q1", "de"): 3, ("q2", "de"): 4}


def hand_made(extra_english_only: bool = False):
    candidates = pd.DataFrame({
        "cid": [f"c{i}" for i in range(6)], "lang": ["en"] * 3 + ["de"] * 3,
        "paragraph_id": ["en:0", "en:0", "en:0", "de:0", "de:0", "de:0"],
        "sentence": [f"s{i}" for i in range(6)], "paragraph": ["p"] * 6})
    candidates["text"] = candidates.sentence
    keys = list(SCORES)
    scores = [SCORES[k] for k in keys]
    if extra_english_only:              # q3 exists in English only: answer c2
        keys.append(("q3", "en"))
        scores.append([.1, .2, .3, .9, .8, .7])
    questions = pd.DataFrame({"qid": [k[0] for k in keys], "lang": [k[1] for k in keys],
                              "text": [f"{k[0]}-{k[1]}" for k in keys],
                              "answer": [ANSWER.get(k, 2) for k in keys]})
    dataset = RetrievalDataset("hand", questions, candidates, "sentence", ["de", "en"])
    return dataset, np.array(scores, dtype=np.float32), np.eye(6, dtype=np.float32)


@pytest.fixture(scope="module")
def example():
    dataset, questions, candidates = hand_made()
    ranks = lareqa_ranks(dataset, questions, candidates)
    neighbours = multilingual_neighbours(dataset, questions, candidates, k=2)
    return dataset, ranks, neighbours


def _by_query(frame, column):
    return {(row.qid, row.query_lang): row[column] for _, row in frame.iterrows()}


def test_relevant_rank_table_by_hand(example):
    _, ranks, _ = example
    table = relevant_rank_table(ranks)
    assert _by_query(table, "rank_distance") == {("q1", "en"): 2, ("q1", "de"): 1, ("q2", "en"): 1, ("q2", "de"): 1}
    assert _by_query(table, "same_language_first") == {("q1", "en"): True, ("q1", "de"): True,
                                                       ("q2", "en"): False, ("q2", "de"): True}
    assert _by_query(table, "strong_alignment") == {("q1", "en"): False, ("q1", "de"): True,
                                                    ("q2", "en"): True, ("q2", "de"): False}
    assert set(table.chance) == {0.5}
    # the paper's rank distance from lib.metrics agrees
    metrics = per_query_metrics(ranks)
    multi = metrics[metrics.setting == "multi"]
    assert _by_query(multi, "rank_distance") == _by_query(table, "rank_distance")


def test_neighbours_by_hand(example):
    _, ranks, neighbours = example
    alignment = neighbours.alignment
    assert _by_query(alignment, "same_language_distractor") == {("q1", "en"): 1.0, ("q1", "de"): 0.0,
                                                                ("q2", "en"): 0.0, ("q2", "de"): 1.0}
    assert _by_query(alignment, "wrong_same_language_rank") == {("q1", "en"): 2, ("q1", "de"): 3,
                                                                ("q2", "en"): 3, ("q2", "de"): 1}
    assert _by_query(alignment, "best_other_rank") == {("q1", "en"): 3, ("q1", "de"): 2,
                                                       ("q2", "en"): 1, ("q2", "de"): 4}
    assert rank_agreement(ranks, neighbours) == 1.0
    top = neighbours.top_k
    q1_en = top[(top.qid == "q1") & (top.query_lang == "en")]
    assert q1_en.cid.tolist() == ["c0", "c2"] and q1_en.relevant.tolist() == [True, False]
    q2_de = top[(top.qid == "q2") & (top.query_lang == "de")]
    assert q2_de.cid.tolist() == ["c5", "c0"] and q2_de.candidate_lang.tolist() == ["de", "en"]


def test_top_k_language_share_by_hand(example):
    _, _, neighbours = example
    share = top_k_language_share(neighbours.top_k)
    assert share.loc["en", "en"] == 0.75 and share.loc["en", "de"] == 0.25
    assert share.loc["de", "de"] == 0.5 and share.loc["de", "en"] == 0.5
    np.testing.assert_allclose(share.sum(axis=1), 1.0)
    hits = top_k_language_share(neighbours.top_k, relevant_only=True)
    assert hits.loc["en", "en"] == pytest.approx(2 / 3)      # hits of en queries: c0, c4, c1


def test_summary_is_the_macro_mean_over_query_languages(example):
    dataset, ranks, neighbours = example
    analysis = analyse_tables(ranks, neighbours, pool_language_share(dataset.candidates), run="hand")
    per_language = analysis.per_language
    assert per_language.loc["en", "rank_distance"] == 1.5 and per_language.loc["de", "rank_distance"] == 1.0
    assert per_language.loc["de", "same_language_first"] == 1.0
    assert analysis.summary["rank_distance"] == 1.25
    assert analysis.summary["same_language_first"] == 0.75
    assert analysis.summary["strong_alignment"] == 0.5
    assert analysis.summary["same_language_distractor"] == 0.5
    assert analysis.summary["pool_same_language"] == 0.5


def test_rank_distance_distribution_and_matrix(example):
    _, ranks, _ = example
    table = rank_distance_by_language(per_query_metrics(ranks))
    assert table.loc["en", "mean"] == 1.5 and table.loc["en", "max"] == 2 and table.loc["de", "queries"] == 2
    assert table.loc["macro mean", "mean"] == 1.25
    matrix = relevant_rank_matrix(ranks, "mean")
    assert matrix.loc["en", "en"] == 1.5 and matrix.loc["en", "de"] == 2.0     # c0:1, c1:2 / c3:3, c4:1


def test_distractor_undefined_without_other_languages():
    dataset, questions, candidates = hand_made(extra_english_only=True)
    neighbours = multilingual_neighbours(dataset, questions, candidates, k=3)
    q3 = neighbours.alignment.set_index(["qid", "query_lang"]).loc[("q3", "en")]
    assert np.isnan(q3.same_language_distractor) and np.isnan(q3.best_other_rank)
    assert q3.same_language_rank == 4                 # c3, c4, c5 score higher than c2
    table = relevant_rank_table(lareqa_ranks(dataset, questions, candidates))
    assert table.set_index("qid").loc["q3", "rank_distance"] == 0


def test_errors_name_the_input(example):
    dataset, _, _ = example
    with pytest.raises(ValueError, match="embeddings do not match"):
        multilingual_neighbours(dataset, np.zeros((2, 6)), np.eye(6), k=2)
    with pytest.raises(ValueError, match="ranks lacks columns"):
        relevant_rank_table(pd.DataFrame({"rank": [1]}))
    with pytest.raises(FileNotFoundError, match="04_evaluate"):
        analyse_run("no-such-run", neighbours=False)


def test_run_folder_with_stored_neighbours(example):
    """A run folder as lib.evaluate writes it (plus the neighbour tables): no model needed."""
    dataset, ranks, neighbours = example
    path = run_dir("eval-hand")
    write_json(path / "config.json", {"backbone": "tiny", "dataset": "xquad-r",
                                      "backbone_settings": {"name": "tiny", "source": "tiny"}})
    ranks.to_parquet(path / "ranks.parquet")
    per_query_metrics(ranks).to_parquet(path / "per_query.parquet")
    neighbours.top_k.to_parquet(path / NEIGHBOURS_FILE)
    neighbours.alignment.to_parquet(path / ALIGNMENT_FILE)
    analyses, out = run_bias_analysis("eval-hand", run="bias-hand", top_k=1)
    analysis = analyses[0]
    assert analysis.label == "zero-shot tiny"
    assert analysis.summary["same_language_distractor"] == 0.5 and analysis.summary["rank_agreement"] == 1.0
    assert analysis.top_k.position.max() == 1
    from lib.io import read_json

    metrics = read_json(out / "metrics.json")
    assert metrics["runs"]["eval-hand"]["rank_distance"] == 1.25
    assert metrics["summary"]["strong_alignment"] == 0.5
    assert (out / "config.json").is_file() and (out / "bias_per_query-eval-hand.parquet").is_file()
    only_ranks = analyse_run("eval-hand", neighbours=False)
    assert "same_language_distractor" not in only_ranks.summary and only_ranks.summary["rank_distance"] == 1.25
