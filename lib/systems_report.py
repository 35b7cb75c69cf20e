"""Exploratory comparisons over systems, with seeds as the unit, and the trade-off figure.

Systems are (sampler or weight-space method) x debiasing variant (``lib.grid`` rows:
``base_system``, ``method``, ``debias``). Per (backbone, training mixture, dataset, pool), every
comparison below that the grid's primary analysis (:mod:`lib.analysis_plan`) does not declare is
tested with the primary test (:mod:`lib.seed_tests`: a t-test on the runs' macro metrics, paired
by seed within one trained model, Welch between separately trained ones, one-sample against a
single untrained run), two-sided, Holm over this exploratory table only:

| question                         | A                          | B                                         |
|----------------------------------|----------------------------|-------------------------------------------|
| hybrid vs each pure sampler      | hybrid                     | mono; cross (each, never "the better")    |
| hybrid vs no training            | hybrid                     | zero-shot + center-pool (training-free)   |
| hybrid vs the weight-space mix   | hybrid                     | soup mono+cross                           |
| what debiasing adds (paired)     | each trained system + v    | the same system (v: every non-transductive variant) |
| what WiSE-FT adds (paired)       | system WiSE-FT lam         | the same system                           |

``verdict``: ``better`` / ``worse`` (A against B in the metric's good direction; lower rank
distance is better) when p_holm < 0.05, else ``no significant difference``: exploratory tests
never claim equivalence (that needs a TOST in a primary family). Transductive variants
(statistics from the test queries) are upper bounds: in the tables and the figure, never in a test.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.analysis_plan import direction
from lib.io import outputs_dir
from lib.naming import debias_system_name
from lib.seed_tests import SeedLevelEstimate, seed_level_estimate
from lib.significance import holm

EXPLORATORY_TITLE = "Exploratory comparisons (not in the primary analysis; seeds as the unit, two-sided)"
TRAINING_FREE = "center-pool"                   # the training-free competitor: zero-shot + this variant
TESTS = (("map", "mono"), ("map", "cross"), ("map", "multi"), ("rank_distance", "multi"))
LEVEL = 0.05
EXPLORATORY_COLUMNS = ["question", "backbone", "train_sources", "dataset", "setting", "metric", "a", "b", "design",
                       "seeds_a", "seeds_b", "mean_a", "mean_b", "delta", "se", "df", "ci_low", "ci_high", "p_value",
                       "p_holm", "verdict"]


def given(value) -> bool:
    """Not None, NaN or empty (a cell of a results table that holds a value)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""


def _with_system_columns(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``base_system``, ``method``, ``debias``, ``transductive`` filled for every row."""
    results = results.copy()
    defaults = {"base_system": results.get("system"), "method": "sampler", "debias": "none", "transductive": False}
    for column, default in defaults.items():
        if column not in results:
            results[column] = default
        results[column] = results[column].where(results[column].map(given), default)
    results.loc[results.sampler.eq("zero-shot") if "sampler" in results else [], "method"] = "zero-shot"
    return results


def comparison_contexts(results: pd.DataFrame) -> Iterator[tuple[dict, pd.DataFrame]]:
    """``({backbone, train_sources, dataset}, rows)`` per (backbone, dataset, pool, training mixture):
    the complete rows of that mixture's systems plus the untrained ones (zero-shot)."""
    results = _with_system_columns(results)
    complete = results[results.status == "complete"].copy()
    if complete.empty:
        return
    complete["train_sources"] = complete.train_sources.where(complete.train_sources.map(given), None)
    for (backbone, dataset, _), group in complete.groupby(["backbone", "dataset", "n_candidates"], sort=False):
        untrained = group[group.train_sources.isna()]
        trained = group[group.train_sources.notna()]
        for mixture in trained.train_sources.unique():
            members = pd.concat([untrained, trained[trained.train_sources == mixture]])
            yield {"backbone": backbone, "train_sources": mixture, "dataset": dataset}, members


def trained_model(row) -> str | None:
    """The trained model a system's runs come from (``hybrid a=0.5`` for its debias variants and its
    WiSE-FT), None for the untrained backbone: two systems of one trained model pair by seed."""
    if row["method"] == "zero-shot":
        return None
    return str(row["base_system"]).rsplit(" WiSE-FT ", 1)[0]


def seed_values(members: pd.DataFrame, system: str, column: str) -> pd.Series:
    """The per-seed values of ``column`` (``multi map``) of one system, by seed (an untrained run: one value)."""
    rows = members[members.system == system]
    if rows.empty or column not in rows:
        return pd.Series(dtype=float)
    seeds = rows.seed.where(rows.seed.map(given), -1).astype(int)
    return rows[column].astype(float).groupby(seeds.to_numpy()).mean().dropna()


def system_estimate(members: pd.DataFrame, a: str, b: str, column: str) -> SeedLevelEstimate | None:
    """:func:`lib.seed_tests.seed_level_estimate` of A - B on ``column``; paired by seed when both
    systems come from one trained model (their common seeds), None without values on a side."""
    values_a, values_b = seed_values(members, a, column), seed_values(members, b, column)
    first = members[members.system == a].iloc[0] if (members.system == a).any() else None
    second = members[members.system == b].iloc[0] if (members.system == b).any() else None
    if first is None or second is None or values_a.empty or values_b.empty:
        return None
    model = trained_model(first)
    if model is not None and model == trained_model(second):
        common = values_a.index.intersection(values_b.index)
        if len(common) == 0:
            return None
        return seed_level_estimate(values_a.loc[common], values_b.loc[common], paired=True)
    return seed_level_estimate(values_a, values_b)


def comparison_pairs(systems: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(question, a, b)`` of one (backbone, mixture, dataset, pool); ``systems``: one row per
    system with ``base_system, method, debias, transductive, train_sources``."""
    plain = systems[systems.debias == "none"]
    trained = plain[plain.method.isin(["sampler"]) & plain.train_sources.map(given)].base_system.tolist()
    hybrids = [s for s in trained if s.startswith("hybrid")]
    names = set(systems.system)
    pairs = []
    for hybrid in hybrids:
        for sampler in ("mono", "cross"):
            if sampler in trained:
                pairs.append(("hybrid vs each pure sampler", hybrid, sampler))
        competitor = debias_system_name("zero-shot", TRAINING_FREE)
        if competitor in names:
            pairs.append(("hybrid vs zero-shot + centering (no training)", hybrid, competitor))
        for soup in plain[plain.method == "soup"].base_system:
            pairs.append(("hybrid vs the soup (weight-space mix)", hybrid, soup))
    for row in systems[(systems.debias != "none") & ~systems.transductive.astype(bool)].itertuples():
        if row.base_system in names and row.method != "zero-shot":
            pairs.append(("what debiasing adds", row.system, row.base_system))
    for row in plain[plain.method == "wise-ft"].itertuples():
        base = row.base_system.rsplit(" WiSE-FT ", 1)[0]
        if base in names:
            pairs.append(("what WiSE-FT adds", row.system, base))
    return list(dict.fromkeys(pairs))


def _per_query(runs: Sequence[str]) -> list[pd.DataFrame]:
    return [pd.read_parquet(outputs_dir() / run / "per_query.parquet") for run in runs]


def exploratory_comparisons(results: pd.DataFrame, exclude: Sequence[tuple] = ()) -> pd.DataFrame:
    """Every comparison of the module's table not in ``exclude`` (``(a, b, "setting metric")`` of
    the primary analysis), with the seed-level test, Holm over this table, and a verdict."""
    excluded = {tuple(e) for e in exclude}
    rows = []
    for context, members in comparison_contexts(results):
        systems = members.groupby("system", sort=False).first().reset_index()
        for question, a, b in comparison_pairs(systems):
            for metric, setting in TESTS:
                column = f"{setting} {metric}"
                if (a, b, column) in excluded or (b, a, column) in excluded:
                    continue
                estimate = system_estimate(members, a, b, column)
                if estimate is None or not estimate.testable:
                    continue
                low, high = estimate.interval(0.95)
                rows.append({"question": question, **context, "setting": setting, "metric": metric, "a": a, "b": b,
                             "seeds_a": estimate.n_a, "seeds_b": estimate.n_b, **estimate.as_dict(),
                             "ci_low": low, "ci_high": high, "p_value": estimate.p_difference()})
    if not rows:
        return pd.DataFrame(columns=EXPLORATORY_COLUMNS)
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table.p_value.to_numpy())
    table["verdict"] = [verdict(r.delta, r.p_holm, r.metric) for r in table.itertuples()]
    return table[EXPLORATORY_COLUMNS]


def verdict(delta: float, p_holm: float, metric: str, level: float = LEVEL) -> str:
    """``better`` / ``worse`` (A against B, at p_holm < level), else ``no significant difference``."""
    if p_holm < level and delta != 0:
        return "better" if direction(metric) * delta > 0 else "worse"
    return "no significant difference"


def exploratory_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, question, A, B): each setting's verdict with delta, interval and p_holm."""
    sentences = []
    if table is None or table.empty:
        return sentences
    for (sources, dataset, question, a, b), group in table.groupby(
            ["train_sources", "dataset", "question", "a", "b"], sort=False):
        parts = [f"{r.setting} {r.metric}: {r.verdict} ({r.delta:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}], "
                 f"{r.design} t-test df {r.df:.1f}, p_holm {r.p_holm:.2g})" for r in group.itertuples()]
        sentences.append(f"Exploratory: {dataset} (trained on {sources}), {question}: {a} against {b}: "
                         + "; ".join(parts) + ".")
    return sentences


# --------------------------------------------------------------------------------------------
# the trade-off figure

TRADEOFF_METRICS = ("mono map", "multi map", "multi rank_distance")


def tradeoff_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per system: mean, min and max over seeds of ``TRADEOFF_METRICS`` (the seed interval: min to max)."""
    results = _with_system_columns(results)
    complete = results[results.status == "complete"]
    present = [m for m in TRADEOFF_METRICS if m in complete]
    if complete.empty or not present:
        return pd.DataFrame()
    keys = ["backbone", "dataset", "system", "base_system", "debias", "transductive"]
    complete = complete.assign(**{k: "-" for k in keys if k not in complete})
    grouped = complete.groupby(keys, sort=False)[present]
    table = pd.concat({"mean": grouped.mean(), "min": grouped.min(), "max": grouped.max()}, axis=1)
    table.columns = [f"{metric} {stat}" for stat, metric in table.columns]
    table["seeds"] = grouped.size()
    return table.reset_index()


def tradeoff_figure(results: pd.DataFrame, title: str = "Monolingual against multilingual retrieval"):
    """Per dataset: mono mAP against multi mAP, and against rank distance; one point per system
    (colour: sampler or weight-space method, marker: debiasing variant; hollow: transductive upper
    bound), bars from the lowest to the highest seed."""
    table = tradeoff_table(results)
    if table.empty:
        return None
    datasets = table.dataset.unique().tolist()
    figure, axes = plt.subplots(len(datasets), 2, figsize=(13, 5.2 * len(datasets)), squeeze=False)
    systems = table.base_system.unique()
    palette = dict(zip(systems, sns.color_palette("tab10" if len(systems) <= 10 else "tab20", len(systems))))
    markers = dict(zip(table.debias.unique(), ["o", "s", "^", "D", "v", "P", "X"] * 3))
    for row_axes, dataset in zip(axes, datasets):
        frame = table[table.dataset == dataset]
        for axis, x in zip(row_axes, ("multi map", "multi rank_distance")):
            for point in frame.to_dict(orient="records"):
                colour = palette[point["base_system"]]
                mean_x, mean_y = point[f"{x} mean"], point["mono map mean"]
                xerr = [[mean_x - point[f"{x} min"]], [point[f"{x} max"] - mean_x]]
                yerr = [[mean_y - point["mono map min"]], [point["mono map max"] - mean_y]]
                axis.errorbar(mean_x, mean_y, xerr=xerr, yerr=yerr, fmt=markers[point["debias"]], color=colour,
                              markerfacecolor="none" if point["transductive"] else colour, capsize=2, markersize=7)
            axis.set_xlabel(x + (" (lower: less language bias)" if "rank" in x else ""))
            axis.set_ylabel("mono map")
            axis.set_title(dataset)
        handles = [plt.Line2D([], [], color=c, marker="o", linestyle="", label=s) for s, c in palette.items()]
        handles += [plt.Line2D([], [], color="black", markerfacecolor="none", marker=m, linestyle="", label=v
                               + (" (upper bound)" if v.endswith("transductive") else "")) for v, m in markers.items()]
        row_axes[1].legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.suptitle(title + " (bars: lowest to highest seed)")
    figure.tight_layout()
    return figure

