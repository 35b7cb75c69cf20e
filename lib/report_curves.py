"""Curves: each system's metrics against its training steps (budget grids) or its alpha (the
paper's ablation), with the seeds' range.

A budget grid (``budgets: [40, 160, 640]`` in a grid file, :mod:`lib.grid_plan`) trains every
sampler once per budget, each run with its own warm-up and decay; its systems are named
``hybrid a=0.5 @160`` (:func:`lib.naming.budget_system_name`) and its rows carry ``budget``. This
module turns the gathered rows (:func:`lib.gather.grid_results`) into

* :func:`budget_table`: one row per (dataset, curve, budget, metric) with the mean, standard
  deviation, minimum and maximum over seeds and the number of seeds;
* :func:`budget_figure`: one panel per metric, steps on a log axis, one line per curve with its
  seed band (min to max), and the untrained backbone's systems (zero-shot, zero-shot +
  center-pool, ...) as horizontal reference lines.

A *curve* is the system name without its budget (``hybrid a=0.5 + center-pool``), so a debias
variant or WiSE-FT of a budget's model lies on its own curve. The same table and figure serve the
alpha ablation (``alphas: [0, 0.25, ..., 1]`` with one sampler, ``params/grid-alpha.yaml``):
:func:`alpha_table` puts alpha on the x axis and names the curve without it (``hybrid +
center-pool``); :func:`curve_figures` draws whichever axis a grid varies.
"""

from __future__ import annotations

import re
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

BUDGET_METRICS = ("mono map", "cross map", "multi map", "multi rank_distance")
METRIC_LABELS = {"mono map": "monolingual mAP", "cross map": "cross-lingual mAP", "multi map": "multilingual mAP",
                 "multi rank_distance": "rank distance (lower: less bias)"}
_BUDGET = re.compile(r" @\d+")
_ALPHA = re.compile(r" a=[0-9.]+")
AXIS_LABELS = {"budget": "training steps (log scale)", "alpha": "alpha (share of monolingual batches)"}


def curve_name(system: str) -> str:
    """``hybrid a=0.5 @160 + center-pool`` -> ``hybrid a=0.5 + center-pool``."""
    return _BUDGET.sub("", str(system))


def budget_table(results: pd.DataFrame, metrics: Sequence[str] = BUDGET_METRICS) -> pd.DataFrame:
    """Mean, sd, min, max and seed count per (dataset, curve, budget, metric) over complete rows
    with a budget; rows without one (the zero-shot systems) are :func:`reference_lines`."""
    return _axis_table(results, "budget", curve_name, metrics)


def alpha_table(results: pd.DataFrame, metrics: Sequence[str] = BUDGET_METRICS) -> pd.DataFrame:
    """As :func:`budget_table` with ``alpha`` on the x axis: hybrid systems of several alphas, the
    curve named without its alpha (``hybrid + center-pool``); empty unless 2 alphas or more."""
    if "alpha" not in results or results.alpha.dropna().nunique() < 2:
        return _axis_table(results.iloc[:0].assign(alpha=pd.Series(dtype=float)), "alpha", str, metrics)
    return _axis_table(results, "alpha", lambda system: _ALPHA.sub("", curve_name(system)), metrics)


def _axis_table(results: pd.DataFrame, axis: str, name_curve, metrics: Sequence[str]) -> pd.DataFrame:
    columns = ["dataset", "curve", axis, "metric", "mean", "sd", "min", "max", "n_seeds"]
    if axis not in results or results[axis].isna().all():
        return pd.DataFrame(columns=columns)
    rows = results[(results.status == "complete") & results[axis].notna()].copy()
    rows["curve"] = rows.system.map(name_curve)
    rows[axis] = rows[axis].astype(int if axis == "budget" else float)
    present = [m for m in metrics if m in rows]
    long = rows.melt(id_vars=["dataset", "curve", axis, "seed"], value_vars=present, var_name="metric",
                     value_name="value").dropna(subset=["value"])
    grouped = long.groupby(["dataset", "curve", axis, "metric"], sort=False).value
    table = grouped.agg(mean="mean", sd="std", min="min", max="max", n_seeds="count").reset_index()
    return table.sort_values(["dataset", "metric", "curve", axis], kind="stable").reset_index(drop=True)[columns]


def reference_lines(results: pd.DataFrame, metrics: Sequence[str] = BUDGET_METRICS) -> pd.DataFrame:
    """The untrained systems' values (rows without a training run), one row per (dataset, system, metric)."""
    untrained = results[(results.status == "complete") & results.get("train_run", pd.Series(index=results.index))
                        .isna()]
    present = [m for m in metrics if m in untrained]
    long = untrained.melt(id_vars=["dataset", "system"], value_vars=present, var_name="metric", value_name="value")
    return long.groupby(["dataset", "system", "metric"], sort=False).value.mean().reset_index()


def budget_figure(table: pd.DataFrame, references: pd.DataFrame | None = None, dataset: str | None = None):
    """One panel per metric: mean over seeds against steps (log axis), band = min..max over seeds,
    dashed horizontal lines for the untrained systems; the legend sits below the panels.
    A table of :func:`alpha_table` (an ``alpha`` column) is drawn against alpha on a linear axis."""
    axis_name = "alpha" if "alpha" in table.columns else "budget"
    dataset = dataset or (table.dataset.iloc[0] if len(table) else "-")
    table = table[table.dataset == dataset]
    metrics = [m for m in BUDGET_METRICS if m in set(table.metric)]
    figure, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.8), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for curve, rows in table[table.metric == metric].groupby("curve", sort=False):
            line, = axis.plot(rows[axis_name], rows["mean"], marker="o", label=curve)
            axis.fill_between(rows[axis_name], rows["min"], rows["max"], alpha=0.2, color=line.get_color())
        if references is not None:
            for row in references[(references.dataset == dataset) & (references.metric == metric)].itertuples():
                axis.axhline(row.value, linestyle="--", linewidth=1, color="grey")
                axis.annotate(row.system, (1.0, row.value), xycoords=("axes fraction", "data"), fontsize=7,
                              ha="right", va="bottom", color="grey")
        axis.set_xscale("log" if axis_name == "budget" else "linear")
        axis.set_xlabel(AXIS_LABELS[axis_name])
        axis.set_ylabel(METRIC_LABELS.get(metric, metric))
        axis.set_title(METRIC_LABELS.get(metric, metric))
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    what = "the training budget" if axis_name == "budget" else "alpha"
    figure.suptitle(f"{dataset}: metrics against {what} (band: range over seeds)")
    figure.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    return figure


def curve_figures(results: pd.DataFrame) -> dict:
    """``{"budget_<dataset>": figure}`` for every dataset with budget rows and ``{"alpha_<dataset>":
    figure}`` where a grid varies alpha; empty for other grids."""
    figures, references = {}, None
    for axis, table in (("budget", budget_table(results)), ("alpha", alpha_table(results))):
        if len(table):
            references = reference_lines(results) if references is None else references
            figures.update({f"{axis}_{d}": budget_figure(table, references, d) for d in table.dataset.unique()})
    return figures
