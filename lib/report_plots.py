"""06_report's figures that need no report: metrics per system, the paired differences, and the
language-pair heatmap of one evaluation (04_evaluate, 05_bias).

    metric_figure(results)                 # bars: mean over seeds per system; points: seeds
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


def metric_figure(results: pd.DataFrame, metrics: Sequence[str] = ("mono map", "cross map", "multi map"),
                  title: str = "mAP per sampler (points: seeds)", ylim: tuple[float, float] | None = (0, 1)):
    """One panel per dataset: bars of the mean over seeds per system and setting, seeds as points."""
    complete = results[results.status == "complete"]
    present = [m for m in metrics if m in complete.columns]
    long = complete.melt(id_vars=["dataset", "system"], value_vars=present, var_name="metric", value_name="value")
    datasets = long.dataset.unique().tolist() or ["-"]
    figure, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        frame = long[long.dataset == dataset]
        sns.barplot(data=frame, x="metric", y="value", hue="system", errorbar=None, ax=axis, alpha=0.8)
        sns.stripplot(data=frame, x="metric", y="value", hue="system", dodge=True, ax=axis, legend=False,
                      palette="dark:black", size=3)   # black points (color= with hue is deprecated)
        axis.set_title(f"{dataset}")
        axis.set_xlabel("")
        if ylim is not None:
            axis.set_ylim(*ylim)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def significance_figure(table: pd.DataFrame, title: str = "A - B with 95% bootstrap interval"):
    """Forest plot of the paired differences (one row per comparison, one panel per setting)."""
    panels = list(dict.fromkeys(zip(table.setting, table.metric)))     # (setting, metric), in table order
    height = max(2.5, 0.35 * table.groupby(["setting", "metric"]).size().max() + 1.2)
    columns = min(len(panels), 2)
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.5 * columns, height * lines), squeeze=False, sharey=False)
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
        axis.invert_yaxis()
    figure.suptitle(title + " (red: Holm-adjusted p < 0.05)")
    figure.tight_layout()
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
