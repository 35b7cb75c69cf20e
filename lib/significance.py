"""Paired significance of one run (or sampler) against another, over the same queries.

The paper's gains are small (e.g. mono mAP .792 vs .798) and its reviewers asked for tests.
Two systems A and B are scored on the same queries; the unit of comparison is the per-query
difference ``d_i = a_i - b_i`` of a metric (AP, R@1, rank distance ...).

* **Statistic.** ``delta = sum_i w_i d_i`` with weights that sum to one. With
  :func:`macro_weights` the weights reproduce the paper's averaging (mean over the queries of a
  language pair, mean over the candidate languages of a query language, mean over query
  languages), so ``delta`` is exactly the difference of the reported macro metric.
* **Clusters.** The queries of one question id are not independent: XQuAD-R asks the same
  question in 11 languages and scores it against 10 candidate languages. Resampling is done
  over clusters (by default the question id), ``D_c = sum_{i in c} w_i d_i`` and
  ``delta = sum_c D_c``; a cluster of one query is the classic per-query test.
* **Permutation p-value** (two-sided, paired sign flip): under H0 the labels A and B of each
  cluster are exchangeable, so ``T* = sum_c s_c D_c`` with random signs ``s_c = +-1``;
  ``p = (1 + #{|T*| >= |delta|}) / (1 + resamples)``. Identical systems give ``p = 1``.
* **Bootstrap interval**: the ``C`` clusters resampled with replacement, ``T* = sum_c n_c D_c``
  (``n_c`` multinomial counts summing to ``C``); the percentile interval of ``T*`` at ``confidence``.
* **Effect size**: Cohen's ``d_z`` of the paired cluster differences,
  ``mean(D_c) / std(D_c)`` (0 when every difference is 0); also wins/ties/losses over clusters.
* **Several comparisons**: :func:`holm` adjusts a family of p-values (Holm-Bonferroni).

Randomness comes from one ``numpy.random.default_rng(seed)`` per test: same seed, same p-value.

    result = paired_test(ap_hybrid, ap_mono, clusters=qids, seed=0)
    result.delta, result.p_value, result.ci_low, result.ci_high, result.effect_size
    table = pairwise_comparisons({"mono": pq_mono, "hybrid": pq_hybrid}, metric="map")

**Statistics that count seeds** (second half of the module). The tests above average each
system's seeds per query first, so they ask "do these trained models differ on these
questions?", not "does the sampler differ, given that another seed gives another model?". The
report's primary test is :mod:`lib.seed_tests` (a t-test on per-seed means); the functions
below are its **sensitivity analysis**. They keep each run: per system a table ``X[s, c]`` of
cluster contributions of run ``s`` (``sum_c X[s, c]`` = the run's macro metric), and

* **Two-way bootstrap** (:func:`two_way_bootstrap`; the pigeonhole bootstrap of Owen 2007):
  seeds and question ids are crossed factors, not nested ones. Per resample, the seeds of each
  system are drawn with replacement and, independently, the question ids (clusters, all their
  translations and target languages together) with replacement, shared by both systems (paired):
  ``T* = sum_c n_c (mean_{s in S*_A} X_A[s, c] - mean_{s in S*_B} X_B[s, c])``. Its percentile
  interval is the confidence interval of the difference of system means; its two-sided
  percentile p-value ``p = min(1, 2 (1 + min(#{T* <= 0}, #{T* >= 0})) / (B + 1))`` has the
  floor ``2 / (B + 1)``. No resampling scheme is exact for crossed random effects (McCullagh
  2000), and with few seeds resampling them underestimates their variance by ``(n - 1) / n``.
  Coverage of its 95% interval under no difference, re-measured by
  ``python scripts/simulate_statistics.py --sims 0 --bootstrap-sims 500`` (500 simulations each,
  500 resamples; Monte-Carlo se about .01): in the setting of this header's earlier figures (3 + 3
  seeds, 60 question ids, question sd 0.2, noise sd 0.1) .994, .988 and .948 with a seed sd of 0,
  0.01 and 0.02; with the README's variances (docs/statistics.md) .850, .902 and .934 at 3, 5 and
  10 seeds per system: too narrow with few seeds, hence a sensitivity analysis only.
* **One-sided versions** (:func:`bootstrap_one_sided`): superiority and non-inferiority
  p-values from the same replicates, ``(1 + #{g* <= -margin}) / (B + 1)`` with ``g* = direction T*``.
* **Per-test random streams**: :func:`stable_seed` derives each test's generator seed from its
  name (SHA-256, stable across runs and Python versions), so no two tests share a stream.
* **Seed permutation test** (:func:`seed_permutation_test`): exact, over every reassignment of
  the pooled runs to the two systems; with 3 + 3 seeds there are 20 assignments, so no p-value
  below 0.1 exists: the honest floor of a 3-seed design.
* **Equivalence** (:func:`equivalence_test`, TOST): ``H0: |delta| >= margin``; the two one-sided
  bootstrap p-values ``(1 + #{T* <= -margin}) / (B + 1)`` and ``(1 + #{T* >= margin}) / (B + 1)``,
  ``p_tost`` their maximum; equivalence is claimed only when ``p_tost <= alpha`` *and* the
  ``1 - 2 alpha`` percentile interval lies inside ``(-margin, margin)``. Default margins
  (:func:`equivalence_margin`): 0.005 absolute for mAP, mAP@20 and recall; for rank distance 1%
  of the better (lower) system mean, since its scale depends on the pool size.
* **Resolution**: a resampling p-value cannot go below ``1 / (B + 1)`` (``2 / (B + 1)`` for the
  two-sided bootstrap); after Holm over ``m`` tests the floor is ``min(1, m * floor)``
  (:func:`p_value_floor`). Tables report both, so "p = 0.0001" never reads as more than it is.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

KEY = ["setting", "query_lang", "target_lang", "qid"]


@dataclass(frozen=True)
class PairedTest:
    """Outcome of :func:`paired_test`: A minus B, with p-value, interval and effect size."""

    delta: float              # weighted mean of a - b (difference of the macro metric)
    mean_a: float             # weighted mean of a
    mean_b: float             # weighted mean of b
    p_value: float            # two-sided paired sign-flip permutation test
    ci_low: float             # bootstrap percentile interval of delta
    ci_high: float
    effect_size: float        # Cohen's d_z over cluster differences
    wins: int                 # clusters where A > B
    ties: int
    losses: int
    n_queries: int
    n_clusters: int
    resamples: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield min(size, total - start)


def paired_test(a, b, weights=None, clusters=None, resamples: int = 10_000, seed: int = 0,
                confidence: float = 0.95, chunk: int = 1_000) -> PairedTest:
    """Paired permutation test and bootstrap interval of ``a - b`` (arrays over the same queries).

    ``weights`` (default: uniform) are normalised to sum to one; ``clusters`` (default: each
    query its own cluster) are labels of queries that are resampled together.

        paired_test([0.5, 1.0, 0.2], [0.4, 1.0, 0.1], seed=0).p_value
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D arrays over the same queries, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("a and b are empty: no query to compare")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("a or b holds NaN: align both systems on the same queries first (see compare_per_query)")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    w = np.ones_like(a) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != a.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative, one per query, and not all zero")
    w = w / w.sum()
    labels = np.arange(a.size) if clusters is None else pd.factorize(np.asarray(clusters))[0]
    if len(labels) != a.size:
        raise ValueError(f"clusters has {len(labels)} labels for {a.size} queries")
    n_clusters = int(labels.max()) + 1
    cluster_diff = np.bincount(labels, weights=w * (a - b), minlength=n_clusters)
    delta = float(cluster_diff.sum())

    rng = np.random.default_rng(seed)
    exceed = 0
    boot = np.empty(resamples)
    tolerance = 1e-12 * max(1.0, abs(delta))
    done = 0
    chunk = max(1, min(chunk, 2_000_000 // n_clusters))   # bounded memory: chunk x clusters
    for size in _chunks(resamples, chunk):
        signs = rng.integers(0, 2, size=(size, n_clusters)) * 2 - 1
        permuted = signs @ cluster_diff
        exceed += int(np.sum(np.abs(permuted) >= abs(delta) - tolerance))
        counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=size)
        boot[done:done + size] = counts @ cluster_diff
        done += size
    p_value = (1 + exceed) / (1 + resamples)
    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(boot, [tail, 1 - tail])

    spread = cluster_diff.std(ddof=1) if n_clusters > 1 else 0.0
    effect = float(cluster_diff.mean() / spread) if spread > 0 else 0.0
    scale = 1e-12 * max(1.0, float(np.abs(cluster_diff).max()))
    return PairedTest(
        delta=delta, mean_a=float(w @ a), mean_b=float(w @ b), p_value=float(p_value),
        ci_low=float(ci_low), ci_high=float(ci_high), effect_size=effect,
        wins=int(np.sum(cluster_diff > scale)), ties=int(np.sum(np.abs(cluster_diff) <= scale)),
        losses=int(np.sum(cluster_diff < -scale)), n_queries=int(a.size), n_clusters=n_clusters,
        resamples=int(resamples), seed=int(seed))


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given): ``holm([0.01, 0.04]) -> [0.02, 0.04]``."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def macro_weights(per_query: pd.DataFrame) -> pd.Series:
    """Weight of each query such that the weighted sum equals the paper's macro average.

    Within a setting: ``w = 1 / (n_queries(x, y) * n_candidate_languages(x) * n_query_languages)``
    for a query in language ``x`` scored against candidate language ``y``, so the weights of a
    setting sum to one.
    """
    frame = per_query[["setting", "query_lang", "target_lang"]]
    pair_size = frame.groupby(["setting", "query_lang", "target_lang"]).transform("size")
    targets = frame.groupby(["setting", "query_lang"])["target_lang"].transform("nunique")
    languages = frame.groupby("setting")["query_lang"].transform("nunique")
    return 1.0 / (pair_size * targets * languages)


def align_per_query(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame, metric: str = "map",
                    setting: str = "multi") -> pd.DataFrame:
    """The queries of ``setting`` scored by both systems: ``query_lang, target_lang, qid, a, b``.

    Queries missing from either side are dropped; if none remain the two runs did not evaluate
    the same benchmark (different dataset or ``max_questions``) and an error says so.
    """
    for name, frame in (("per_query_a", per_query_a), ("per_query_b", per_query_b)):
        missing = {*KEY, metric} - set(frame.columns)
        if missing:
            raise ValueError(f"{name} lacks columns {sorted(missing)}: pass a per_query.parquet table of lib.evaluate")
    columns = KEY + [metric]
    left = per_query_a.loc[per_query_a.setting == setting, columns]
    right = per_query_b.loc[per_query_b.setting == setting, columns]
    merged = left.merge(right, on=KEY, suffixes=("_a", "_b"), validate="one_to_one")
    if merged.empty:
        raise ValueError(f"no common {setting} queries: the two runs must evaluate the same dataset "
                         "with the same max_questions")
    return merged.rename(columns={f"{metric}_a": "a", f"{metric}_b": "b"}).reset_index(drop=True)


def compare_per_query(per_query_a: pd.DataFrame, per_query_b: pd.DataFrame, metric: str = "map",
                      setting: str = "multi", cluster: str | None = "qid", **options) -> PairedTest:
    """:func:`paired_test` of two ``per_query`` tables on one setting, macro-weighted, clustered by qid."""
    aligned = align_per_query(per_query_a, per_query_b, metric, setting)
    clusters = aligned[cluster].to_numpy() if cluster else None
    return paired_test(aligned.a.to_numpy(), aligned.b.to_numpy(), weights=macro_weights(aligned).to_numpy(),
                       clusters=clusters, **options)


def mean_over_seeds(per_query_tables: list[pd.DataFrame],
                    metrics=("map", "map@20", "recall@1", "recall@10", "rank_distance")) -> pd.DataFrame:
    """Per-query metrics averaged over the seeds of one configuration (queries common to all)."""
    if not per_query_tables:
        raise ValueError("no per-query table to average")
    stacked = pd.concat([t[KEY + [m for m in metrics if m in t.columns]] for t in per_query_tables])
    counts = stacked.groupby(KEY).size()
    mean = stacked.groupby(KEY).mean(numeric_only=True)
    return mean[counts == len(per_query_tables)].reset_index()


def pairwise_comparisons(per_query_by_system: dict[str, pd.DataFrame], metric: str = "map",
                         settings=("mono", "cross", "multi"), resamples: int = 10_000, seed: int = 0,
                         confidence: float = 0.95, cluster: str | None = "qid") -> pd.DataFrame:
    """Every ordered-by-name pair of systems, in every setting: one row per (setting, A, B).

    Columns: ``setting, metric, a, b`` and the fields of :class:`PairedTest`, plus ``p_holm``
    (Holm adjustment over all rows of the table). ``delta > 0`` means A scores higher; for
    ``rank_distance`` lower is better.

        pairwise_comparisons({"mono": mean_over_seeds(mono_runs), "hybrid": ...}, metric="map")
    """
    rows = []
    for setting in settings:
        for name_a, name_b in itertools.combinations(per_query_by_system, 2):
            a, b = per_query_by_system[name_a], per_query_by_system[name_b]
            if not ((a.setting == setting).any() and (b.setting == setting).any()):
                continue
            result = compare_per_query(a, b, metric=metric, setting=setting, cluster=cluster,
                                       resamples=resamples, seed=seed, confidence=confidence)
            rows.append({"setting": setting, "metric": metric, "a": name_a, "b": name_b, **result.as_dict()})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table.p_value.to_numpy())
    return table


# --------------------------------------------------------------------------------------------
# Statistics that count seeds

RANK_DISTANCE_RELATIVE_MARGIN = 0.01   # equivalence margin of rank distance: 1% of the better mean
DEFAULT_MARGIN = 0.005                 # equivalence margin of mAP, mAP@20, recall (absolute)


def p_value_floor(resamples: int, comparisons: int = 1, two_sided_bootstrap: bool = False) -> float:
    """Smallest p-value ``resamples`` resamples can give, after Holm over ``comparisons`` tests.

    ``1 / (B + 1)`` for a permutation test (``2 / (B + 1)`` for the two-sided percentile
    bootstrap), times ``m`` after Holm (its smallest adjusted value is ``m * p_min``), capped at 1:
    ``p_value_floor(10_000, comparisons=40) == 40 / 10_001``.
    """
    if resamples < 1 or comparisons < 1:
        raise ValueError(f"resamples ({resamples}) and comparisons ({comparisons}) must be >= 1")
    return min(1.0, comparisons * (2 if two_sided_bootstrap else 1) / (resamples + 1))


def equivalence_margin(metric: str, mean_a: float, mean_b: float) -> float:
    """Default TOST margin: 1% of the better (lower) mean for rank distance, else 0.005 absolute."""
    if metric == "rank_distance":
        return RANK_DISTANCE_RELATIVE_MARGIN * min(abs(mean_a), abs(mean_b))
    return DEFAULT_MARGIN


def seed_cluster_tables(runs_a: Sequence[pd.DataFrame], runs_b: Sequence[pd.DataFrame], metric: str = "map",
                        setting: str = "multi", cluster: str = "qid") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-run cluster contributions ``X_A (S_A, C)``, ``X_B (S_B, C)`` and the cluster labels ``(C,)``.

    Only the queries of ``setting`` present in every run of both systems are kept; their
    :func:`macro_weights` make ``X[s].sum()`` the macro metric of run ``s``.
    """
    runs = list(runs_a) + list(runs_b)
    if not runs_a or not runs_b:
        raise ValueError("each system needs at least one per-query table (one per seed)")
    series = []
    for i, frame in enumerate(runs):
        missing = {*KEY, metric} - set(frame.columns)
        if missing:
            raise ValueError(f"run {i} lacks columns {sorted(missing)}: pass per_query.parquet tables of lib.evaluate")
        series.append(frame.loc[frame.setting == setting].set_index(KEY)[metric])
    common = series[0].index
    for other in series[1:]:
        common = common.intersection(other.index)
    if len(common) == 0:
        raise ValueError(f"no {setting} queries common to all runs: the runs must evaluate the same dataset "
                         "with the same max_questions")
    common = common.sort_values()
    keys = common.to_frame(index=False)
    weights = macro_weights(keys).to_numpy()
    labels, uniques = pd.factorize(keys[cluster].to_numpy())
    table = np.stack([np.bincount(labels, weights=weights * s.loc[common].to_numpy(float), minlength=len(uniques))
                      for s in series])
    return table[:len(runs_a)], table[len(runs_a):], np.asarray(uniques)


def two_way_bootstrap(table_a: np.ndarray, table_b: np.ndarray, resamples: int = 10_000, seed: int = 0,
                           chunk: int = 1_000) -> np.ndarray:
    """``B`` two-way (pigeonhole) bootstrap replicates of the difference of system means: seeds and
    clusters (question ids) are crossed, each resampled independently with replacement (Owen 2007).

    ``table_a`` (S_A, C), ``table_b`` (S_B, C): cluster contributions per run (:func:`seed_cluster_tables`).
    """
    table_a, table_b = np.atleast_2d(np.asarray(table_a, float)), np.atleast_2d(np.asarray(table_b, float))
    if table_a.shape[1] != table_b.shape[1]:
        raise ValueError(f"tables cover {table_a.shape[1]} and {table_b.shape[1]} clusters: align them first")
    n_a, n_b, n_clusters = len(table_a), len(table_b), table_a.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, min(chunk, 2_000_000 // n_clusters))
    done = 0
    for size in _chunks(resamples, chunk):
        mean_a = (rng.multinomial(n_a, np.full(n_a, 1 / n_a), size=size) / n_a) @ table_a
        mean_b = (rng.multinomial(n_b, np.full(n_b, 1 / n_b), size=size) / n_b) @ table_b
        counts = _resample_counts(rng, n_clusters, size)
        out[done:done + size] = np.einsum("rc,rc->r", counts, mean_a - mean_b)
        done += size
    return out


def stable_seed(name: str, base: int = 0) -> int:
    """A generator seed derived from a test's name: ``stable_seed("multi map: a vs b", 0)``.

    SHA-256 of ``"{base}:{name}"`` (Python's ``hash()`` changes between processes), 63 bits.
    """
    digest = hashlib.sha256(f"{int(base)}:{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def bootstrap_one_sided(replicates: np.ndarray, margin: float = 0.0, direction: int = 1) -> float:
    """One-sided bootstrap p-value of H0 ``direction * delta <= -margin`` (margin 0: superiority;
    > 0: non-inferiority): ``(1 + #{direction T* <= -margin}) / (B + 1)``."""
    replicates = direction * np.asarray(replicates, float)
    return float((1 + np.sum(replicates <= -margin)) / (len(replicates) + 1))


def _resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` rows of bootstrap counts over ``n`` items (multinomial(n, 1/n), via bincount: faster)."""
    draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)


@dataclass(frozen=True)
class SeedAwareTest:
    """A minus B over systems (not single models): interval and p-values that include seed variation."""

    delta: float              # mean over A's seeds - mean over B's seeds of the macro metric
    mean_a: float
    mean_b: float
    ci_low: float             # two-way bootstrap percentile interval of delta
    ci_high: float
    p_value: float            # two-sided percentile bootstrap p-value (seeds and clusters resampled)
    p_floor: float            # its resolution: 2 / (resamples + 1)
    p_seed_permutation: float  # exact permutation test over run labels (seed level only)
    p_seed_permutation_floor: float
    margin: float             # equivalence margin
    p_equivalence: float      # TOST p-value, max of the two one-sided bootstrap p-values
    equivalence_ci_low: float  # 1 - 2 alpha interval used by TOST
    equivalence_ci_high: float
    equivalent: bool          # p_equivalence <= alpha and the interval inside (-margin, margin)
    seeds_a: int
    seeds_b: int
    n_clusters: int
    resamples: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)


def seed_permutation_test(run_means_a, run_means_b, max_assignments: int = 200_000) -> tuple[float, float]:
    """Exact two-sided permutation test of the difference of run means; returns ``(p, floor)``.

    Every split of the pooled runs into groups of the original sizes is one equally likely
    assignment under H0; ``p = #{|T_perm| >= |T_obs|} / #assignments`` (the observed split counts).
    """
    a, b = np.asarray(run_means_a, float), np.asarray(run_means_b, float)
    pooled, n_a = np.concatenate([a, b]), len(a)
    total = math.comb(len(pooled), n_a)
    if total > max_assignments:
        raise ValueError(f"{total} run assignments exceed max_assignments={max_assignments}; use the bootstrap")
    observed = abs(a.mean() - b.mean())
    tolerance = 1e-12 * max(1.0, observed)
    extreme = 0
    for chosen in itertools.combinations(range(len(pooled)), n_a):
        mask = np.zeros(len(pooled), bool)
        mask[list(chosen)] = True
        extreme += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - tolerance
    floor = (2 if len(a) == len(b) else 1) / total
    return extreme / total, min(1.0, floor)


def equivalence_test(replicates: np.ndarray, margin: float, alpha: float = 0.05) -> dict[str, float]:
    """TOST from bootstrap replicates of delta: ``p_equivalence``, the ``1 - 2 alpha`` interval, ``equivalent``."""
    replicates = np.asarray(replicates, float)
    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    n = len(replicates)
    p_lower = (1 + np.sum(replicates <= -margin)) / (n + 1)
    p_upper = (1 + np.sum(replicates >= margin)) / (n + 1)
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    p = float(max(p_lower, p_upper))
    return {"p_equivalence": p, "equivalence_ci_low": float(low), "equivalence_ci_high": float(high),
            "equivalent": bool(p <= alpha and -margin < low and high < margin)}


def seed_aware_test(table_a: np.ndarray, table_b: np.ndarray, metric: str = "map", margin: float | None = None,
                    resamples: int = 10_000, seed: int = 0, confidence: float = 0.95,
                    alpha: float = 0.05) -> SeedAwareTest:
    """Two-way bootstrap interval and p-value, seed permutation test and TOST of two systems (a sensitivity analysis)."""
    table_a, table_b = np.atleast_2d(np.asarray(table_a, float)), np.atleast_2d(np.asarray(table_b, float))
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    runs_a, runs_b = table_a.sum(axis=1), table_b.sum(axis=1)
    mean_a, mean_b = float(runs_a.mean()), float(runs_b.mean())
    replicates = two_way_bootstrap(table_a, table_b, resamples=resamples, seed=seed)
    tail = (1 - confidence) / 2
    ci_low, ci_high = np.quantile(replicates, [tail, 1 - tail])
    scale = 1e-12 * max(1.0, float(np.abs(replicates).max()))
    below, above = np.sum(replicates <= scale), np.sum(replicates >= -scale)
    p_value = min(1.0, 2 * (1 + min(below, above)) / (resamples + 1))
    p_perm, perm_floor = seed_permutation_test(runs_a, runs_b)
    margin = equivalence_margin(metric, mean_a, mean_b) if margin is None else float(margin)
    return SeedAwareTest(
        delta=mean_a - mean_b, mean_a=mean_a, mean_b=mean_b, ci_low=float(ci_low), ci_high=float(ci_high),
        p_value=float(p_value), p_floor=p_value_floor(resamples, two_sided_bootstrap=True),
        p_seed_permutation=p_perm, p_seed_permutation_floor=perm_floor, margin=margin,
        **equivalence_test(replicates, margin, alpha), seeds_a=len(table_a), seeds_b=len(table_b),
        n_clusters=table_a.shape[1], resamples=int(resamples), seed=int(seed))


def seed_aware_comparisons(runs_by_system: dict[str, Sequence[pd.DataFrame]], metric: str = "map",
                           settings=("mono", "cross", "multi"), margin: float | None = None,
                           resamples: int = 10_000, seed: int = 0, confidence: float = 0.95,
                           alpha: float = 0.05, cluster: str = "qid") -> pd.DataFrame:
    """Every pair of systems in every setting, each system given as its per-query tables (one per seed).

    Columns: ``setting, metric, a, b``, the fields of :class:`SeedAwareTest`, ``p_holm`` (Holm over
    the table) and ``p_holm_floor`` (``min(1, m * p_floor)``). ``delta > 0``: A scores higher
    (for rank distance lower is better).

        seed_aware_comparisons({"mono": [pq_s0, pq_s1, pq_s2], "hybrid": [...]}, metric="map")
    """
    rows = []
    for setting in settings:
        for name_a, name_b in itertools.combinations(runs_by_system, 2):
            runs_a, runs_b = runs_by_system[name_a], runs_by_system[name_b]
            if not all((r.setting == setting).any() for r in [*runs_a, *runs_b]):
                continue
            table_a, table_b, _ = seed_cluster_tables(runs_a, runs_b, metric, setting, cluster)
            result = seed_aware_test(table_a, table_b, metric=metric, margin=margin, resamples=resamples,
                                     seed=seed, confidence=confidence, alpha=alpha)
            rows.append({"setting": setting, "metric": metric, "a": name_a, "b": name_b, **result.as_dict()})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table.p_value.to_numpy())
        table["p_holm_floor"] = np.minimum(1.0, len(table) * table.p_floor)
    return table
