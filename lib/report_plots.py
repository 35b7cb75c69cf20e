"""06_report's figures that need no report: metrics per system, the paired differences, and the
language-pair heatmap of one evaluation (04_evaluate, 05_bias).

    metric_figure(results)                 # dot plot: mean over seeds per system, seed range, seeds
    significance_figure(significance)      # forest plot of A - B with intervals
    pair_heatmap(evaluation.per_pair)      # query language x candidate language
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


SEED_POINT = {"marker": "o", "s": 14, "facecolors": "none", "edgecolors": "0.35", "linewidths": 0.8}


def metric_figure(results: pd.DataFrame, metrics: Sequence[str] = ("mono map", "cross map", "multi map"),
                  title: str = "mAP per sampler", ylim: tuple[float, float] | None = None):
    """Dot plot, one panel per (dataset, metric): one row per system, its mean over seeds (dot), the
    range of its seeds (line, min to max) and each seed (hollow points).

    Each panel's value axis spans its own data (plus a margin), so a difference of .005 between
    systems is visible; bars from zero would hide it. ``ylim`` fixes that axis instead (e.g. (0, 1)).
    The axis is labelled with the metric, the rows with the system; the legend sits outside the panels.

    Args:
        results: one row per run (``lib.gather.grid_results``): ``dataset``, ``system``, ``status`` and the metrics.
        metrics: the columns to show (those present are shown).
        title: the figure's title.
        ylim: fixed limits of the value axis; None: each panel's own data range.

    Returns:
        The matplotlib figure.
    """
    complete = results[results.status == "complete"]
    present = [m for m in metrics if m in complete.columns and complete[m].notna().any()] or list(metrics[:1])
    datasets = complete.dataset.dropna().unique().tolist() or ["-"]
    systems = list(dict.fromkeys(complete.system)) if len(complete) else []
    height = 0.8 + 0.32 * max(len(systems), 2)
    figure, axes = plt.subplots(len(datasets), len(present), figsize=(3.6 * len(present) + 1.8, height * len(datasets) + 0.6),
                                squeeze=False, layout="constrained")
    for row, dataset in enumerate(datasets):
        for column, metric in enumerate(present):
            _dot_panel(axes[row][column], complete[complete.dataset == dataset], metric, systems, ylim)
            axes[row][column].set_title(f"{dataset}: {metric}", fontsize=9)
            axes[row][column].set_ylabel("system" if column == 0 else "")
            if column:
                axes[row][column].tick_params(labelleft=False)
    handles = [plt.Line2D([], [], marker="o", color="tab:blue", linestyle="", label="mean over seeds"),
               plt.Line2D([], [], color="tab:blue", linewidth=2, alpha=0.5, label="range of seeds (min to max)"),
               plt.Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="0.35", linestyle="",
                          label="one seed")]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=8)
    figure.suptitle(title)
    return figure


def _dot_panel(axis, frame: pd.DataFrame, metric: str, systems: list[str], limits) -> None:
    """One metric of one dataset: mean, seed range and seeds per system, on the data's own scale."""
    positions = {system: index for index, system in enumerate(systems)}
    values = frame[["system", metric]].dropna() if metric in frame else pd.DataFrame(columns=["system", metric])
    for system, group in values.groupby("system", sort=False):
        y, points = positions[system], group[metric].astype(float)
        axis.hlines(y, points.min(), points.max(), color="tab:blue", linewidth=2, alpha=0.5)
        axis.scatter(points, [y] * len(points), zorder=3, **SEED_POINT)
        axis.plot([points.mean()], [y], "o", color="tab:blue", zorder=4)
    axis.set_yticks(range(len(systems)), systems, fontsize=8)
    axis.set_ylim(len(systems) - 0.5, -0.5)
    axis.set_xlabel(metric)
    axis.grid(axis="x", linewidth=0.4, alpha=0.6)
    if limits is not None:
        axis.set_xlim(*limits)
    elif len(values):
        low, high = float(values[metric].min()), float(values[metric].max())
        margin = max((high - low) * 0.15, 0.002)
        axis.set_xlim(low - margin, high + margin)
        axis.xaxis.set_major_locator(plt.MaxNLocator(5))


def significance_figure(table: pd.DataFrame, title: str = "A - B with 95% bootstrap interval"):
    """Forest plot of the paired differences (one row per comparison, one panel per setting)."""
    panels = list(dict.fromkeys(zip(table.setting, table.metric)))     # (setting, metric), in table order
    height = max(2.5, 0.35 * table.groupby(["setting", "metric"]).size().max() + 1.2)
    columns = min(len(panels), 2)
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.5 * columns, height * lines + 0.5), squeeze=False,
                                sharey=False, layout="constrained")
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (setting, metric) in zip(axes.flat, panels):
        frame = table[(table.setting == setting) & (table.metric == metric)].reset_index(drop=True)
        labels = [f"{a} - {b} ({d})" for a, b, d in zip(frame.a, frame.b, frame.dataset)]
        y = np.arange(len(frame))
        for position, row in zip(y, frame.itertuples()):
            color = "tab:red" if row.p_holm < 0.05 else "tab:gray"
            axis.errorbar([row.delta], [position], xerr=[[row.delta - row.ci_low], [row.ci_high - row.delta]],
                          fmt="o", color=color, capsize=3)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.xaxis.set_major_locator(plt.MaxNLocator(4))
        axis.set_yticks(y, labels, fontsize=8)
        axis.set_title(f"{setting} {frame.metric.iloc[0]}")
        axis.set_xlabel(f"difference in {setting} {frame.metric.iloc[0]} (A - B)")
        axis.set_ylabel("comparison (dataset)")
        axis.invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", color=color, label=label) for color, label in
               (("tab:red", "Holm-adjusted p < 0.05"), ("tab:gray", "not significant"))]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    figure.suptitle(title)
    return figure


def language_pair_matrix(per_pair: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """Query language x candidate language matrix of a metric: mono on the diagonal, cross elsewhere."""
    frame = per_pair.reset_index()
    frame = frame[frame.setting.isin(["mono", "cross"])]
    return frame.pivot(index="query_lang", columns="target_lang", values=metric)


def pair_heatmap(per_pair: pd.DataFrame, metric: str = "map", title: str = ""):
    """Heatmap of :func:`language_pair_matrix` for one evaluation (04_evaluate, 05_bias)."""
    matrix = language_pair_matrix(per_pair, metric)
    size = max(4.0, 0.55 * len(matrix) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(matrix, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, square=True,
                cbar_kws={"label": metric}, ax=axes, annot_kws={"size": 7})
    axes.set_xlabel("candidate language")
    axes.set_ylabel("query language")
    axes.set_title(title or f"{metric} per language pair (diagonal: monolingual)")
    figure.tight_layout()
    return figure
