"""The extended question: hybrid against every cheap alternative, with statistics that count seeds.

Systems are (sampler or weight-space method) x debiasing variant (``lib.grid`` rows:
``base_system``, ``method``, ``debias``). Per (backbone, training mixture, dataset, pool), every
comparison below is tested in each setting with :func:`lib.significance.seed_aware_comparisons`
(hierarchical bootstrap over seeds then question ids: interval and p-value; exact seed
permutation p-value; TOST with margins 0.005 mAP and 1% of the better rank distance):

| question                         | A                          | B                                         |
|----------------------------------|----------------------------|-------------------------------------------|
| hybrid vs the samplers           | hybrid                     | the better of mono and cross (by mean)    |
| hybrid vs no training            | hybrid                     | zero-shot + center-pool (training-free)   |
| hybrid vs the weight-space mix   | hybrid                     | soup mono+cross                           |
| what debiasing adds              | each trained system + v    | the same system (v: every non-transductive variant) |
| what WiSE-FT adds                | system WiSE-FT lam         | the same system                           |

Holm runs over the whole table (``p_holm``; its floor ``p_holm_floor = min(1, m * 2 / (B + 1))``).
``verdict`` (A against B, in the metric's good direction: lower rank distance is better):
``better`` / ``worse`` when p_holm < 0.05, ``equivalent within ±margin`` when TOST shows it
(p_equivalence <= 0.05 and the 90% interval inside the margin; not Holm-adjusted), else
``inconclusive``: a non-significant difference is never read as a match. Transductive variants
(statistics from the test queries) are upper bounds: in the tables and the figure, never in a test.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.io import outputs_dir
from lib.naming import debias_system_name
from lib.significance import seed_aware_comparisons

EXTENDED_TITLE = "The extended question: hybrid against the cheap alternatives (seeds counted)"
TRAINING_FREE = "center-pool"                   # the training-free competitor: zero-shot + this variant
TESTS = (("map", "mono"), ("map", "cross"), ("map", "multi"), ("rank_distance", "multi"))
DIRECTION = {"map": 1, "rank_distance": -1}
LEVEL = 0.05
EXTENDED_COLUMNS = ["question", "backbone", "train_sources", "dataset", "setting", "metric", "a", "b", "seeds_a",
                    "seeds_b", "mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value", "p_floor",
                    "p_seed_permutation", "p_seed_permutation_floor", "margin", "p_equivalence", "equivalent",
                    "p_holm", "p_holm_floor", "verdict"]


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


def comparison_pairs(systems: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(question, a, b)`` of one (backbone, mixture, dataset, pool); ``systems``: one row per
    system with ``base_system, method, debias, transductive`` and the means of the tested metrics.
    ``b`` of the first question is chosen per metric later (``"better of mono/cross"``)."""
    plain = systems[systems.debias == "none"]
    trained = plain[plain.method.isin(["sampler"]) & plain.train_sources.map(given)].base_system.tolist()
    hybrids = [s for s in trained if s.startswith("hybrid")]
    names = set(systems.system)
    pairs = []
    for hybrid in hybrids:
        if {"mono", "cross"} <= set(trained):
            pairs.append(("hybrid vs the better of mono and cross", hybrid, "better of mono/cross"))
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


def extended_comparisons(results: pd.DataFrame, resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Every comparison of the module's table, seed-aware, Holm over all rows, with a verdict."""
    results = _with_system_columns(results)
    complete = results[(results.status == "complete")].copy()
    if complete.empty:
        return pd.DataFrame(columns=EXTENDED_COLUMNS)
    complete["train_sources"] = complete.train_sources.where(complete.train_sources.map(given), None)
    rows = []
    for (backbone, dataset, _), group in complete.groupby(["backbone", "dataset", "n_candidates"], sort=False):
        untrained = group[group.train_sources.isna()]
        trained = group[group.train_sources.notna()]
        for mixture in trained.train_sources.unique():
            members = pd.concat([untrained, trained[trained.train_sources == mixture]])
            runs = members.groupby("system", sort=False).eval_run.apply(list).to_dict()
            systems = members.groupby("system", sort=False).first().reset_index()
            means = members.groupby("system")[[f"{s} {m}" for m, s in TESTS]].mean()
            for question, a, b in comparison_pairs(systems):
                for metric, setting in TESTS:
                    other = b
                    if b == "better of mono/cross":         # by mean over seeds, in the metric's direction
                        other = max(("mono", "cross"),
                                    key=lambda s: DIRECTION[metric] * means.loc[s, f"{setting} {metric}"])
                    table = seed_aware_comparisons({a: _per_query(runs[a]), other: _per_query(runs[other])},
                                                   metric=metric, settings=(setting,), resamples=resamples, seed=seed)
                    if len(table):
                        rows.append({"question": question, "backbone": backbone, "train_sources": mixture,
                                     "dataset": dataset, **table.iloc[0].to_dict()})
    if not rows:
        return pd.DataFrame(columns=EXTENDED_COLUMNS)
    table = pd.DataFrame(rows)
    order = np.argsort(table.p_value.to_numpy(), kind="stable")
    table["p_holm"] = _holm(table.p_value.to_numpy(), order)
    table["p_holm_floor"] = np.minimum(1.0, len(table) * table.p_floor)
    table["verdict"] = [verdict(r.delta, r.p_holm, r.equivalent, r.margin, r.metric) for r in table.itertuples()]
    return table[EXTENDED_COLUMNS]


def _holm(p_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    m = len(p_values)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p_values[order]))
    return adjusted


def verdict(delta: float, p_holm: float, equivalent: bool, margin: float, metric: str) -> str:
    """``better`` / ``worse`` (A against B, at p_holm < LEVEL), ``equivalent within ±margin`` (TOST),
    else ``inconclusive``."""
    if p_holm < LEVEL and delta != 0:
        return "better" if DIRECTION.get(metric, 1) * delta > 0 else "worse"
    if equivalent:
        return f"equivalent within ±{margin:.3g}"
    return "inconclusive"


def extended_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, question, A, B): each setting's verdict with delta, interval and p_holm."""
    sentences = []
    if table is None or table.empty:
        return sentences
    for (sources, dataset, question, a, b), group in table.groupby(
            ["train_sources", "dataset", "question", "a", "b"], sort=False):
        parts = [f"{r.setting} {r.metric}: {r.verdict} ({r.delta:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}], "
                 f"p_holm {max(r.p_holm, r.p_holm_floor):.2g}" + (" = floor" if r.p_holm <= r.p_holm_floor else "")
                 + ")" for r in group.itertuples()]
        sentences.append(f"{dataset} (trained on {sources}), {question}: {a} against {b}: " + "; ".join(parts) + ".")
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

