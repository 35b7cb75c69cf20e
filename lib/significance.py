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
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

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
