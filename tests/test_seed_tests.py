"""The primary test (lib.seed_tests): scipy's t-tests, TOST, intersection-union, power, and its level."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import stats

from lib.io import PROJECT_ROOT
from lib.seed_tests import intersection_union, seed_level_estimate

A = [0.541, 0.548, 0.537, 0.545, 0.550]
B = [0.536, 0.538, 0.533, 0.541, 0.539]


def test_welch_paired_and_one_sample_agree_with_scipy():
    welch = seed_level_estimate(A, B)
    expected = stats.ttest_ind(A, B, equal_var=False)
    assert welch.design == "welch" and welch.p_difference() == pytest.approx(expected.pvalue, rel=1e-10)
    assert welch.df == pytest.approx(expected.df) and welch.delta == pytest.approx(np.mean(A) - np.mean(B))
    paired = seed_level_estimate(A, B, paired=True)
    assert paired.design == "paired" and paired.df == 4
    assert paired.p_difference() == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-10)
    one = seed_level_estimate(A, [0.537])                   # an untrained system: one deterministic run
    assert one.design == "one-sample" and one.df == 4
    assert one.p_difference() == pytest.approx(stats.ttest_1samp(A, 0.537).pvalue, rel=1e-10)
    assert one.p_superiority() == pytest.approx(stats.ttest_1samp(A, 0.537, alternative="greater").pvalue, rel=1e-10)
    low, high = paired.interval(0.95)
    ci = stats.ttest_rel(A, B).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_one_sided_tests_follow_the_metric_direction_and_margin():
    estimate = seed_level_estimate(A, B)
    assert estimate.p_superiority(1) < 0.05 < estimate.p_superiority(-1)   # higher mAP is better; lower rank distance
    assert estimate.p_non_inferiority(0.005) < estimate.p_superiority(1)
    shifted = [b - 0.005 for b in B]                        # non-inferiority at m = superiority over B - m
    assert estimate.p_non_inferiority(0.005) == pytest.approx(seed_level_estimate(A, shifted).p_superiority())


def test_tost_p_and_its_90_percent_interval_agree():
    estimate = seed_level_estimate(A, B, paired=True)
    for margin in (0.002, 0.004, 0.006, 0.01):
        p, low, high = estimate.tost(margin, 0.05)
        assert (p < 0.05) == (-margin < low and high < margin)
    assert (low, high) == pytest.approx(estimate.interval(0.90))
    with pytest.raises(ValueError, match="margin"):
        estimate.tost(0.0)


def test_intersection_union_is_the_largest_p():
    assert intersection_union([0.01, 0.04, 0.02]) == 0.04
    assert np.isnan(intersection_union([0.01, float("nan")]))


def test_untestable_and_bad_inputs():
    single = seed_level_estimate([0.5], [0.4])                # one run each: no seed variance
    assert not single.testable and np.isnan(single.p_difference()) and np.isnan(single.interval()[0])
    with pytest.raises(ValueError, match="paired test needs one value per seed"):
        seed_level_estimate([0.5, 0.6], [0.4], paired=True)
    with pytest.raises(ValueError, match="no NaN"):
        seed_level_estimate([0.5, float("nan")], [0.4, 0.3])


def test_minimum_detectable_effect_shrinks_with_seeds_and_is_detected_at_80_percent():
    rng = np.random.default_rng(0)
    sd = 0.006
    three = seed_level_estimate(rng.normal(0, sd, 3), rng.normal(0, sd, 3), paired=True)
    ten = seed_level_estimate(rng.normal(0, sd, 10), rng.normal(0, sd, 10), paired=True)
    scale = lambda e: e.minimum_detectable_effect() / e.se          # noqa: E731  the t quantiles only
    assert scale(three) == pytest.approx(stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2))
    assert scale(ten) < scale(three)
    # a true paired difference of (t_.975 + t_.8) * sd / sqrt(n) is found in about 80% of samples
    n = 10
    delta = (stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) * sd / np.sqrt(n)
    found = np.mean([seed_level_estimate(rng.normal(delta, sd, n), np.zeros(n), paired=True).p_difference() < 0.05
                     for _ in range(1000)])
    assert 0.74 <= found <= 0.86


def _simulation():
    spec = importlib.util.spec_from_file_location("simulate_statistics", PROJECT_ROOT / "scripts" / "simulate_statistics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seeds, paired", [(3, False), (3, True), (5, True)])
def test_primary_test_holds_its_level_on_data_with_the_readme_variances(seeds, paired):
    """scripts/simulate_statistics.py with 600 simulations: level .05 within 3.5 Monte-Carlo
    standard errors (.031), TOST false equivalence at the margin at most .05 + .031."""
    simulation = _simulation()
    rates = simulation.primary_rates(600, seeds, paired, np.random.default_rng(seeds + 10 * paired))
    assert abs(rates["level"] - 0.05) <= 0.031
    assert abs(rates["coverage"] - 0.95) <= 0.031
    assert rates["false_equivalence"] <= 0.05 + 0.031


def test_the_level_check_fails_a_test_that_ignores_the_small_sample_df():
    """The same data and tolerance reject a z-test (normal quantiles with 3 seeds: level about .15)."""
    simulation, rng = _simulation(), np.random.default_rng(1)
    rejected = 0
    for _ in range(600):
        estimate = seed_level_estimate(*simulation.run_means(rng, 3, paired=True), paired=True)
        rejected += 2 * stats.norm.sf(abs(estimate.delta) / estimate.se) < 0.05
    assert rejected / 600 > 0.05 + 0.031


def test_crossed_mixed_model_estimates_the_difference_and_the_seed_variance():
    pytest.importorskip("statsmodels")
    from lib.seed_tests import crossed_mixed_model

    rng = np.random.default_rng(3)
    clusters, seeds = 20, 4                             # small: statsmodels' crossed design is dense
    difficulty = rng.normal(0, 0.2, clusters)

    def system(mean):                                   # per-run cluster contributions: rows sum to run metrics
        y = (mean + rng.normal(0, 0.02, (seeds, 1)) + difficulty + rng.normal(0, 0.01, clusters)
             + rng.normal(0, 0.01, (seeds, clusters)))
        return y / clusters
    a, b = system(0.05), system(0.0)
    result = crossed_mixed_model(a, b)
    assert result.delta == pytest.approx(a.sum(1).mean() - b.sum(1).mean(), abs=1e-6)   # balanced: the mean difference
    assert result.p_value < 0.05 and result.se > 0 and result.converged
    assert 0.0001 < result.variances["run"] < 0.002     # seed variance 0.0004
    assert result.variances["question"] > 0.01          # question variance 0.04
