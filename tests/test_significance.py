"""Paired significance tests: null, shifted, reproducible, clustered, Holm, macro weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.metrics import summarise
from lib.significance import (compare_per_query, holm, macro_weights, mean_over_seeds, paired_test,
                              pairwise_comparisons)


def test_identical_systems_give_p_one_and_no_effect():
    scores = np.random.default_rng(0).uniform(size=300)
    result = paired_test(scores, scores.copy(), resamples=500, seed=1)
    assert result.p_value == pytest.approx(1.0)
    assert result.delta == 0 and result.effect_size == 0
    assert result.ci_low == result.ci_high == 0
    assert (result.wins, result.ties, result.losses) == (0, 300, 0)


def test_clearly_shifted_system_gives_small_p_and_covers_the_shift():
    rng = np.random.default_rng(0)
    b = rng.uniform(size=400)
    a = b + 0.1 + rng.normal(0, 0.05, size=400)
    result = paired_test(a, b, resamples=2000, seed=0)
    assert result.p_value < 0.001                       # smallest possible: 1 / 2001
    assert result.delta == pytest.approx(np.mean(a - b))
    assert result.ci_low < 0.1 < result.ci_high and result.ci_low > 0.05
    assert result.effect_size > 1
    assert result.wins > 350


def test_no_difference_in_distribution_is_not_significant():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=500), rng.uniform(size=500)
    assert paired_test(a, b, resamples=1000, seed=0).p_value > 0.05


def test_same_seed_same_result_and_seed_recorded():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=100), rng.uniform(size=100)
    first, again = paired_test(a, b, resamples=300, seed=7), paired_test(a, b, resamples=300, seed=7)
    assert first == again and first.seed == 7
    other = paired_test(a, b, resamples=300, seed=8)
    assert other.delta == first.delta                  # only the resampling changes


def test_clusters_move_together():
    # each question counted 10 times (like 10 target languages): treating the copies as
    # independent overstates the evidence; clustering by question does not
    rng = np.random.default_rng(2)
    base = rng.normal(0.03, 0.3, size=40)
    a = np.repeat(base, 10)
    b = np.zeros_like(a)
    clusters = np.repeat(np.arange(40), 10)
    naive = paired_test(a, b, resamples=2000, seed=0)
    clustered = paired_test(a, b, clusters=clusters, resamples=2000, seed=0)
    assert clustered.n_clusters == 40 and clustered.n_queries == 400
    assert clustered.delta == pytest.approx(naive.delta)
    assert clustered.p_value > naive.p_value


def test_holm_adjustment():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same queries"):
        paired_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        paired_test([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="resamples"):
        paired_test([1, 2], [1, 2], resamples=0)


def _per_query(seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Unequal group sizes, so that the macro average differs from the plain mean."""
    rng = np.random.default_rng(seed)
    rows = []
    for setting, pairs in {"mono": [("en", "en"), ("de", "de")], "cross": [("en", "de"), ("de", "en"), ("de", "fr")]}.items():
        for x, y in pairs:
            n = 30 if x == "en" else 10
            for q in range(n):
                value = float(np.clip(rng.uniform(0, 0.8) + shift, 0, 1))
                rows.append({"setting": setting, "query_lang": x, "target_lang": y, "qid": f"q{q}",
                             "map": value, "map@20": value, "recall@1": float(value > 0.5),
                             "recall@10": 1.0, "rank_distance": 0})
    return pd.DataFrame(rows)


def test_macro_weights_reproduce_the_paper_average():
    per_query = _per_query(0)
    macro = summarise(per_query)["macro"]["map"]
    weights = macro_weights(per_query)
    for setting in ("mono", "cross"):
        mask = per_query.setting == setting
        assert weights[mask].sum() == pytest.approx(1.0)
        assert (weights[mask] * per_query["map"][mask]).sum() == pytest.approx(macro[setting])


def test_compare_per_query_delta_is_the_macro_difference():
    a, b = _per_query(0, shift=0.2), _per_query(0)
    result = compare_per_query(a, b, metric="map", setting="cross", resamples=500)
    expected = summarise(a)["macro"].loc["cross", "map"] - summarise(b)["macro"].loc["cross", "map"]
    assert result.delta == pytest.approx(expected)
    assert result.n_clusters == 30                       # question ids q0..q29
    assert result.p_value < 0.01


def test_pairwise_comparisons_over_systems_and_settings():
    systems = {"mono": mean_over_seeds([_per_query(0), _per_query(1)]), "hybrid": _per_query(2, shift=0.1),
               "cross": _per_query(3)}
    table = pairwise_comparisons(systems, metric="map", resamples=200, seed=0)
    assert len(table) == 2 * 3                           # 2 settings x 3 pairs
    assert set(table.columns) >= {"setting", "a", "b", "delta", "p_value", "p_holm", "ci_low", "effect_size"}
    assert (table.p_holm >= table.p_value).all()


def test_mean_over_seeds_keeps_common_queries():
    first, second = _per_query(0), _per_query(1).iloc[:-5]
    mean = mean_over_seeds([first, second])
    assert len(mean) == len(second)
    key = ["setting", "query_lang", "target_lang", "qid"]
    expected = (first.set_index(key)["map"] + second.set_index(key)["map"]).dropna() / 2
    np.testing.assert_allclose(mean.set_index(key)["map"].sort_index(), expected.sort_index())
