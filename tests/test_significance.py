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


# --------------------------------------------------------------------------------------------
# Statistics that count seeds

from lib.significance import (equivalence_margin, two_way_bootstrap, p_value_floor,  # noqa: E402
                              seed_aware_comparisons, seed_aware_test, seed_cluster_tables,
                              seed_permutation_test)


def simulate(rng, clusters=60, seeds=3, delta=0.0, seed_sd=0.01, question_sd=0.2, noise_sd=0.1):
    """Per-run cluster contributions (seeds x clusters) of two systems; row sums = the runs' metric.

    Shared question difficulty (paired), a per-run seed effect, per-run per-question noise;
    the true difference of system means is ``delta``.
    """
    difficulty = rng.normal(0, question_sd, clusters)

    def system(mean):
        return (mean + rng.normal(0, seed_sd, (seeds, 1)) + difficulty
                + rng.normal(0, noise_sd, (seeds, clusters))) / clusters
    return system(delta), system(0.0)


def test_p_value_floor_and_its_holm_version():
    assert p_value_floor(9_999) == pytest.approx(1e-4)
    assert p_value_floor(10_000, comparisons=40) == pytest.approx(40 / 10_001)
    assert p_value_floor(999, two_sided_bootstrap=True) == pytest.approx(0.002)
    assert p_value_floor(10, comparisons=100) == 1.0
    with pytest.raises(ValueError, match="resamples"):
        p_value_floor(0)


def test_seed_aware_test_finds_a_true_difference():
    a, b = simulate(np.random.default_rng(0), clusters=300, seeds=5, delta=0.02, seed_sd=0.002, noise_sd=0.05)
    result = seed_aware_test(a, b, resamples=2000, seed=0)
    assert result.delta == pytest.approx(a.sum(1).mean() - b.sum(1).mean())
    assert 0 < result.ci_low < 0.02 < result.ci_high
    assert result.p_value == result.p_floor == pytest.approx(2 / 2001)
    assert result.p_seed_permutation == pytest.approx(2 / 252)   # 5 + 5 runs: C(10, 5) = 252 splits
    assert not result.equivalent


def test_no_difference_gives_uniform_p_and_correct_coverage():
    rng = np.random.default_rng(0)
    covered, p_values = 0, []
    for i in range(200):
        a, b = simulate(rng)
        result = seed_aware_test(a, b, resamples=300, seed=i)
        covered += result.ci_low <= 0 <= result.ci_high
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    assert 0.91 <= covered / 200 <= 0.99                  # nominal 0.95 (measured 0.955)
    assert (p_values < 0.05).mean() <= 0.09
    assert 0.4 <= p_values.mean() <= 0.65 and (p_values < 0.5).mean() == pytest.approx(0.5, abs=0.12)


def test_seed_variance_widens_the_interval_over_the_seed_averaged_test():
    # question-level differences are tiny and consistent; the seeds themselves differ a lot
    a, b = simulate(np.random.default_rng(1), clusters=200, seeds=3, delta=0.01, seed_sd=0.03, noise_sd=0.02)
    n = a.shape[1]                                        # paired_test averages: scale contributions to sum
    averaged = paired_test(n * a.mean(0), n * b.mean(0), resamples=2000, seed=0)
    aware = seed_aware_test(a, b, resamples=2000, seed=0)
    assert averaged.delta == pytest.approx(aware.delta)
    assert (aware.ci_high - aware.ci_low) > 3 * (averaged.ci_high - averaged.ci_low)
    assert averaged.p_value < 0.01 and aware.p_value > averaged.p_value


def test_two_way_bootstrap_of_identical_systems_is_zero_and_reproducible():
    a, _ = simulate(np.random.default_rng(2))
    replicates = two_way_bootstrap(a, a, resamples=200, seed=3)
    np.testing.assert_array_equal(replicates, two_way_bootstrap(a, a, resamples=200, seed=3))
    single = two_way_bootstrap(a[:1], a[:1], resamples=200, seed=3)  # one seed each: nothing to resample
    assert np.all(single == 0)
    result = seed_aware_test(a[:1], a[:1], resamples=200)
    assert result.p_value == 1 and result.delta == 0 and result.equivalent
    with pytest.raises(ValueError, match="clusters"):
        two_way_bootstrap(a, a[:, :10])


def test_seed_permutation_test_has_the_floor_of_a_three_seed_design():
    assert seed_permutation_test([0.50, 0.51, 0.52], [0.40, 0.41, 0.42]) == (pytest.approx(0.1), pytest.approx(0.1))
    p, floor = seed_permutation_test([0.5, 0.4, 0.45], [0.45, 0.5, 0.4])
    assert p == 1.0 and floor == pytest.approx(0.1)


def test_tost_claims_equivalence_only_inside_the_margin():
    rng = np.random.default_rng(4)
    close_a, close_b = simulate(rng, clusters=400, seeds=5, delta=0.0, seed_sd=0.0005, noise_sd=0.02)
    result = seed_aware_test(close_a, close_b, resamples=1000)
    assert result.margin == 0.005 and result.equivalent and result.p_equivalence <= 0.05
    assert -0.005 < result.equivalence_ci_low and result.equivalence_ci_high < 0.005
    far_a, far_b = simulate(rng, clusters=400, seeds=5, delta=0.02, seed_sd=0.0005, noise_sd=0.02)
    assert not seed_aware_test(far_a, far_b, resamples=1000).equivalent
    decisions = []
    for i in range(40):
        a, b = simulate(rng, clusters=200, seeds=3, delta=0.003, seed_sd=0.001, noise_sd=0.01)
        r = seed_aware_test(a, b, resamples=300, seed=i)
        decisions.append(r.equivalent)
        if r.equivalent:
            assert -r.margin < r.equivalence_ci_low and r.equivalence_ci_high < r.margin
        else:
            assert r.p_equivalence > 0.05 or r.equivalence_ci_low <= -r.margin or r.equivalence_ci_high >= r.margin
    assert 0 < sum(decisions) < 40                         # a borderline case: both outcomes occur


def test_margins_default_to_absolute_map_and_relative_rank_distance():
    assert equivalence_margin("map", 0.5, 0.6) == 0.005
    assert equivalence_margin("rank_distance", 370.0, 365.0) == pytest.approx(3.65)


def test_seed_cluster_tables_sum_to_each_runs_macro_metric():
    runs_a, runs_b = [_per_query(0, 0.1), _per_query(1, 0.1)], [_per_query(2), _per_query(3), _per_query(4)]
    runs_b[1] = runs_b[1].iloc[:-3]                       # a missing query is dropped everywhere
    table_a, table_b, clusters = seed_cluster_tables(runs_a, runs_b, metric="map", setting="cross")
    assert table_a.shape == (2, 30) and table_b.shape == (3, 30) and len(clusters) == 30
    full = seed_cluster_tables(runs_a, [_per_query(2)], metric="map", setting="cross")[0]
    for run, row in zip(runs_a, full):
        assert row.sum() == pytest.approx(summarise(run)["macro"].loc["cross", "map"])
    with pytest.raises(ValueError, match="lacks columns"):
        seed_cluster_tables([runs_a[0].drop(columns="qid")], runs_b)


def test_seed_aware_comparisons_table():
    systems = {"mono": [_per_query(0), _per_query(1)], "hybrid": [_per_query(2, 0.1), _per_query(3, 0.1)],
               "same": [_per_query(0), _per_query(1)]}
    table = seed_aware_comparisons(systems, metric="map", resamples=300, seed=0)
    assert len(table) == 2 * 3
    assert {"delta", "ci_low", "p_value", "p_floor", "p_holm", "p_holm_floor", "p_seed_permutation",
            "p_equivalence", "equivalent", "margin"} <= set(table.columns)
    assert (table.p_holm >= table.p_value).all()
    np.testing.assert_allclose(table.p_holm_floor, min(1.0, 6 * 2 / 301))
    identical = table[(table.a == "mono") & (table.b == "same")]
    assert (identical.delta == 0).all() and (identical.p_value > 0.5).all()
    # the same two runs, but they differ from each other wildly (random AP per seed): resampling
    # seeds makes the interval wide, so no equivalence may be claimed
    assert not identical.equivalent.any()
    assert (identical.equivalence_ci_high - identical.equivalence_ci_low > 2 * identical.margin).all()
    hybrid = table[(table.a == "mono") & (table.b == "hybrid")]
    expected = np.mean([summarise(t)["macro"].loc["mono", "map"] for t in systems["mono"]]) - np.mean(
        [summarise(t)["macro"].loc["mono", "map"] for t in systems["hybrid"]])
    assert hybrid.loc[hybrid.setting == "mono", "delta"].item() == pytest.approx(expected)
