"""Metrics on hand-worked rankings, and AP against scikit-learn on random rankings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from lib.metrics import average_precision, average_precision_at, per_query_metrics, summarise


def test_hand_worked_average_precision():
    assert average_precision([1]) == 1.0
    assert average_precision([4]) == 0.25
    assert average_precision([1, 3]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([3, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([2, 5, 10]) == pytest.approx((1 / 2 + 2 / 5 + 3 / 10) / 3)


def test_xtreme_r_ap_at_20():
    assert average_precision_at([1, 3], 20) == pytest.approx((1 + 2 / 3) / 2)
    # a hit beyond the cut-off adds nothing but still counts in min(R, 20)
    assert average_precision_at([1, 30], 20) == pytest.approx(1 / 2)
    assert average_precision_at([25], 20) == 0.0
    ranks = list(range(1, 31))  # 30 relevant items all on top: AP@20 = 20 / 20
    assert average_precision_at(ranks, 20) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    relevant = rng.random(n) < 0.1
    relevant[rng.integers(n)] = True
    scores = rng.permutation(n).astype(float)  # no ties
    order = np.argsort(-scores)
    ranks = np.flatnonzero(relevant[order]) + 1
    assert average_precision(ranks) == pytest.approx(average_precision_score(relevant, scores))


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
