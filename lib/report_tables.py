"""06_report's tables: mean ± std over seeds, the paper side by side, the samplers' paired tests,
and one descriptive table per dataset that is not LAReQA's.

    summary = seed_summary(results)                      # mean, std, n over seeds (lib.gather rows)
    format_mean_std(summary, ["mono map", "cross map"])  # "0.773 ± 0.006 (3)"
    paper_side_by_side(summary)                          # ours next to lib/reference's numbers
    significance_table(results)                          # paired bootstrap + permutation, Holm
"""

from __future__ import annotations

import importlib.resources
from typing import Sequence

import numpy as np
import pandas as pd

from lib.evaluate import DATASETS, LAREQA_DATASETS
from lib.gather import SUMMARY_METRICS, summary_metrics
from lib.io import outputs_dir
from lib.retrieval import SETTINGS
from lib.significance import holm, mean_over_seeds, pairwise_comparisons

# evaluated datasets that are not LAReQA's (MIRACL, Tatoeba): a descriptive table each, no tests
OTHER_DATASETS = tuple(d for d in DATASETS if d not in LAREQA_DATASETS)
DATASET_TITLE = "{dataset} (mean ± std over seeds, number of seeds; descriptive, not tested)"
DATASET_CAPTION = ("{dataset}: the summary metrics its evaluator declares ({metrics}; lib.results), per system, "
                   "mean ± std over seeds. Descriptive only: the paired and seed-aware tests, the verdicts, the "
                   "language bias and the seen/unseen split above are LAReQA's.")
# the paper's model names for our registry backbones (lib/reference/paper_2408.10536.csv)
PAPER_MODELS = {"xlmr-base": "xlmr", "labse": "labse", "labse-paper": "labse"}
PAPER_SAMPLERS = {"mono": "mono", "cross": "cross", "hybrid a=0.5": "hybrid"}


def seed_summary(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation and number of seeds per (backbone, train_sources, dataset, system).

    Columns are a two-level index ``(metric, mean|std|n)``; std is NaN with a single seed.
    """
    complete = results[results.status == "complete"].copy()
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in complete.columns]
    complete["train_sources"] = complete["train_sources"].fillna("-")
    keys = ["backbone", "train_sources", "dataset", "system"]
    if complete.empty:
        return pd.DataFrame(columns=pd.MultiIndex.from_product([metrics, ["mean", "std", "n"]]))
    grouped = complete.groupby(keys, sort=False)[metrics]
    table = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}, axis=1)
    return table.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)[metrics]


def format_mean_std(summary: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """``0.612 ± 0.004 (3)`` cells: mean ± std over seeds (number of seeds), for a paper-style table."""
    out = pd.DataFrame(index=summary.index)
    for metric in metrics:
        if metric not in summary.columns.get_level_values(0):
            continue
        mean, std, n = summary[(metric, "mean")], summary[(metric, "std")], summary[(metric, "n")]
        out[metric] = [("-" if pd.isna(m) else f"{m:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}")
                        + (f" ({int(c)})" if c and c > 1 else ""))
                       for m, s, c in zip(mean, std, n)]
    return out


def load_reference(name: str = "paper") -> pd.DataFrame:
    """Published numbers shipped with the package (``lib/reference``): ``paper`` (arXiv
    2408.10536: model, dataset, setting, metric, lang, sampler, value) or ``lareqa`` (mBERT baselines)."""
    files = {"paper": "paper_2408.10536.csv", "lareqa": "lareqa_baselines.csv"}
    if name not in files:
        raise ValueError(f"reference {name!r}: expected one of {sorted(files)}")
    resource = importlib.resources.files("lib") / "reference" / files[name]
    with importlib.resources.as_file(resource) as path:
        return pd.read_csv(path)


def paper_side_by_side(summary: pd.DataFrame, metrics: Sequence[str] = ("mono map", "cross map", "multi map"),
                       digits: int = 3, train_sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Our mean over seeds next to the paper's number for the same backbone, dataset and sampler.

    Rows exist only where the backbone is one of the paper's (``PAPER_MODELS``) and, with
    ``train_sources`` (mixtures such as ``lib.sources.PAPER_TRAIN_SOURCES``, order ignored), only
    for cells trained on one of them: a LAReQA-trained cell is not the paper's experiment. Columns
    ``<metric> ours``, ``<metric> paper``, ``<metric> diff``.
    """
    allowed = None if train_sources is None else {frozenset(m.split(",")) for m in train_sources}
    reference = load_reference("paper")
    reference = reference[reference.lang == "mean"]
    rows = []
    for key in summary.index:
        backbone, _, dataset, system = key
        model, sampler = PAPER_MODELS.get(backbone), PAPER_SAMPLERS.get(system)
        if model is None or sampler is None:
            continue
        if allowed is not None and frozenset(str(key[1]).split(",")) not in allowed:
            continue
        row = dict(zip(["backbone", "train_sources", "dataset", "system"], key))
        for metric in metrics:
            setting, name = metric.split(" ", 1)
            found = reference[(reference.model == model) & (reference.dataset == dataset) & (reference.setting == setting)
                              & (reference.metric == name) & (reference.sampler == sampler)]
            ours = summary.loc[key, (metric, "mean")] if (metric, "mean") in summary.columns else np.nan
            paper = float(found.value.iloc[0]) if len(found) else np.nan
            row.update({f"{metric} ours": round(ours, digits), f"{metric} paper": paper,
                        f"{metric} diff": round(ours - paper, digits)})
        rows.append(row)
    return pd.DataFrame(rows)


def significance_table(results: pd.DataFrame, metric: str = "map", settings: Sequence[str] = SETTINGS,
                       resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Paired tests of every pair of systems, per (backbone, train_sources, dataset) and setting.

    Each system's per-query metric is first averaged over its seeds (queries common to all
    seeds); then :func:`lib.significance.pairwise_comparisons` (sign-flip permutation p-value,
    bootstrap interval, Cohen's d_z, clusters = question ids, Holm over the whole table).
    Untrained systems (zero-shot) are compared with the samplers of every training mixture; only
    runs over the same candidate pool (``n_candidates``) are compared.
    """
    complete = results[results.status == "complete"]
    tables = []
    # only runs over the same pool are comparable (same dataset, languages and max_questions)
    for (backbone, dataset, _), group in complete.groupby(["backbone", "dataset", "n_candidates"], sort=False):
        untrained = group[group.train_sources.isna()]
        trained = group[group.train_sources.notna()]
        mixtures = trained.train_sources.unique().tolist() or [None]
        for mixture in mixtures:
            members = pd.concat([untrained, trained[trained.train_sources == mixture]]) if mixture else untrained
            systems = {}
            for system, runs in members.groupby("system", sort=False):
                frames = [pd.read_parquet(outputs_dir() / r / "per_query.parquet") for r in runs.eval_run]
                systems[system] = mean_over_seeds(frames)
            if len(systems) < 2:
                continue
            table = pairwise_comparisons(systems, metric=metric, settings=settings, resamples=resamples, seed=seed)
            tables.append(table.assign(backbone=backbone, dataset=dataset, train_sources=mixture or "-"))
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = holm(table.p_value.to_numpy())
    front = ["backbone", "train_sources", "dataset", "setting", "metric", "a", "b"]
    return table[front + [c for c in table.columns if c not in front]]


def split_datasets(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(LAReQA rows, rows of OTHER_DATASETS)``; a row of an unregistered dataset stays with LAReQA's."""
    if "dataset" not in results:
        return results, pd.DataFrame(columns=[*results.columns, "dataset"])
    other = results.dataset.isin(OTHER_DATASETS)
    return results[~other], results[other]


def dataset_tables(results: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, str], list[pd.DataFrame]]:
    """One table per evaluated dataset other than LAReQA's: rows (backbone, training mixture, system:
    sampler, zero-shot or merged), columns the summary metrics its evaluator declares
    (:func:`lib.gather.summary_metrics`), cells mean ± std over seeds (:func:`format_mean_std`).
    Returns the tables and their captions by title (``DATASET_TITLE``), and their seed summaries."""
    tables, captions, summaries = {}, {}, []
    _, others = split_datasets(results)
    for dataset, rows in others.groupby("dataset", sort=False):
        metrics = summary_metrics(dataset)
        summary = seed_summary(rows, metrics)
        table = format_mean_std(summary, metrics)
        if isinstance(table.index, pd.MultiIndex):
            table = table.droplevel("dataset")
        title = DATASET_TITLE.format(dataset=dataset)
        tables[title] = table
        captions[title] = DATASET_CAPTION.format(dataset=dataset, metrics=", ".join(metrics))
        summaries.append(summary)
    return tables, captions, summaries


PAGE_WIDTH = 110        # characters of a markdown table line that fit a page (A4, 9 pt monospace)


def page_tables(frame: pd.DataFrame, keys: int = 1, width: int = PAGE_WIDTH, digits: int = 3) -> list[str]:
    """``frame`` (columns already flat, index reset) as markdown tables that each fit ``width``
    characters: the first ``keys`` columns (what a row is) repeated in every table, the other
    columns filled into each table in order until the next would make it too wide.

        page_tables(wide_summary, keys=3)   # ["| backbone | ... | xquad-r mono map | ...", "| backbone | ... "]
    """
    def render(columns):
        return frame[columns].to_markdown(index=False, floatfmt=f".{digits}f")

    key_columns, chunks, current = list(frame.columns[:keys]), [], []
    for column in frame.columns[keys:]:
        if current and max(map(len, render(key_columns + current + [column]).splitlines())) > width:
            chunks.append(current)
            current = []
        current.append(column)
    chunks.append(current)
    return [render(key_columns + chunk) for chunk in chunks]
