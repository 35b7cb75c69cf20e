"""lib.metrics.per_query_metrics (the path evaluations use) on hand-worked rankings, and against\nscikit-learn and a brute-force XTREME-R reference on random rankings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from lib.metrics import per_query_metrics, summarise


def one_query_per_row(ranks_by_query: dict[str, list[int]]) -> pd.DataFrame:
    """A ranks table (``lib.retrieval`` layout) with one multilingual query per entry."""
    return pd.DataFrame([("multi", "en", "all", qid, rank) for qid, ranks in ranks_by_query.items() for rank in ranks],
                        columns=["setting", "query_lang", "target_lang", "qid", "rank"])


def metrics_of(ranks_by_query: dict[str, list[int]]) -> pd.DataFrame:
    return per_query_metrics(one_query_per_row(ranks_by_query)).set_index("qid")


def brute_force_ap_at(ranking: list[int], relevant: set[int], k: int | None = None) -> float:
    """AP@k as XTREME-R defines it (google-research/xtreme third_party/utils_lareqa.py,
    ``average_precision_at_k``): walk the ranked list down to position k, add the precision at
    each relevant hit, divide by min(R, k); without k, AP over the whole list."""
    top = ranking[:k] if k else ranking
    hits, score = 0, 0.0
    for position, item in enumerate(top, start=1):
        if item in relevant:
            hits += 1
            score += hits / position
    return score / (min(len(relevant), k) if k else len(relevant))


def test_hand_worked_average_precision():
    table = metrics_of({"a": [1], "b": [4], "c": [1, 3], "d": [3, 1], "e": [2, 5, 10]})
    assert table.loc["a", "map"] == 1.0
    assert table.loc["b", "map"] == 0.25
    assert table.loc["c", "map"] == pytest.approx((1 + 2 / 3) / 2)
    assert table.loc["d", "map"] == pytest.approx((1 + 2 / 3) / 2)     # order of the rows does not matter
    assert table.loc["e", "map"] == pytest.approx((1 / 2 + 2 / 5 + 3 / 10) / 3)


def test_xtreme_r_ap_at_20():
    table = metrics_of({"a": [1, 3], "b": [1, 30], "c": [25], "d": list(range(1, 31)),
                        "e": [*range(1, 11), *range(21, 41)]})
    assert table.loc["a", "map@20"] == pytest.approx((1 + 2 / 3) / 2)
    # a hit beyond the cut-off adds nothing but still counts in min(R, 20)
    assert table.loc["b", "map@20"] == pytest.approx(1 / 2)
    assert table.loc["c", "map@20"] == 0.0
    # more than 20 relevant items: the divisor is 20, not R
    assert table.loc["d", "map@20"] == pytest.approx(1.0)               # 30 relevant, all on top
    assert table.loc["e", "map@20"] == pytest.approx(10 / 20)           # 30 relevant, 10 in the top 20
    assert table.loc["d", "map"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_per_query_metrics_match_a_brute_force_reference(seed):
    """Random rankings, some with more than 20 relevant items: AP against scikit-learn (LAReQA's
    reference, utils_lareqa.mean_avg_prec) and a ranked-list walk, AP@20 against XTREME-R's walk,
    recall and rank distance by counting."""
    rng = np.random.default_rng(seed)
    rankings, relevant_sets, ranks_by_query = {}, {}, {}
    for q in range(8):
        n = int(rng.integers(30, 300))
        n_relevant = int(rng.integers(21, 30)) if q % 2 else int(rng.integers(1, 8))   # odd queries: R > 20
        relevant = set(rng.choice(n, size=n_relevant, replace=False).tolist())
        ranking = rng.permutation(n).tolist()                       # ranking[i]: the item at rank i + 1
        if q == 1:                                                   # many hits inside the top 20
            ranking = sorted(ranking, key=lambda item: (item not in relevant) + rng.random())
        qid = f"q{q}"
        rankings[qid], relevant_sets[qid] = ranking, relevant
        ranks_by_query[qid] = [ranking.index(item) + 1 for item in relevant]
    table = metrics_of(ranks_by_query)
    assert (table.loc[["q1", "q3", "q5", "q7"], "n_relevant"] > 20).all()
    assert table.loc["q1", "map@20"] > 0.3                           # the R > 20 branch is exercised with hits
    for qid, ranking in rankings.items():
        relevant = relevant_sets[qid]
        labels = np.isin(np.arange(len(ranking)), list(relevant))
        scores = np.empty(len(ranking))
        scores[ranking] = -np.arange(len(ranking))                   # higher score = better rank, no ties
        row = table.loc[qid]
        assert row["map"] == pytest.approx(average_precision_score(labels, scores))
        assert row["map"] == pytest.approx(brute_force_ap_at(ranking, relevant))
        assert row["map@20"] == pytest.approx(brute_force_ap_at(ranking, relevant, k=20))
        assert row["recall@1"] == pytest.approx(len(relevant & set(ranking[:1])) / len(relevant))
        assert row["recall@10"] == pytest.approx(len(relevant & set(ranking[:10])) / len(relevant))
        positions = sorted(ranking.index(item) + 1 for item in relevant)
        assert row["rank_distance"] == positions[-1] - positions[0]


def test_per_query_and_macro_averaging():
    ranks = pd.DataFrame([
        # mono: en query q1 at rank 1, de query q1 at rank 2
        ("mono", "en", "en", "q1", 1), ("mono", "de", "de", "q1", 2),
        # cross en->de two queries, en->es one
        ("cross", "en", "de", "q1", 1), ("cross", "en", "de", "q2", 4), ("cross", "en", "es", "q1", 2),
        # multi: q1 from en has relevant at ranks 1, 3, 12
        ("multi", "en", "all", "q1", 12), ("multi", "en", "all", "q1", 1), ("multi", "en", "all", "q1", 3),
    ], columns=["setting", "query_lang", "target_lang", "qid", "rank"])
    per_query = per_query_metrics(ranks).set_index(["setting", "query_lang", "target_lang", "qid"])
    multi = per_query.loc[("multi", "en", "all", "q1")]
    assert multi["map"] == pytest.approx((1 + 2 / 3 + 3 / 12) / 3)
    assert multi["recall@10"] == pytest.approx(2 / 3)
    assert multi["rank_distance"] == 11
    tables = summarise(per_query.reset_index())
    # cross en: mean over target languages of per-pair means: ((1 + 1/4)/2 + 1/2) / 2
    assert tables["per_language"].loc[("cross", "en"), "map"] == pytest.approx(((1 + 0.25) / 2 + 0.5) / 2)
    assert tables["macro"].loc["mono", "map"] == pytest.approx((1 + 0.5) / 2)
    assert tables["macro"].loc["mono", "recall@1"] == pytest.approx(0.5)
