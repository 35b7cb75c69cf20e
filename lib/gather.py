"""Gather a grid's results: one row per (cell, evaluation dataset) from each run's files.

:func:`grid_results` reads every complete evaluation's ``metrics.json`` (complete: the marker of
``lib.completion``, never a ``metrics.json`` alone; the summary metrics its dataset's evaluator
declares, :func:`summary_metrics`: LAReQA's mAP, recall and rank distance, MIRACL's nDCG@10 and
Recall@100, Tatoeba's accuracies), its bias run (``bias-<run>``, LAReQA only: the rates of
:mod:`lib.bias`) and its training run (steps, time, validation loss); :func:`add_language_split`
adds mAP over the languages seen and unseen in training.
The tables built from these rows are :mod:`lib.report`'s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lib.bias import run_label
from lib.completion import is_complete
from lib.evaluate import LAREQA_REPORT_METRICS
from lib.results import EVALUATORS, read_summary, report_columns
from lib.sources import source_languages
from lib.grid_plan import ZERO_SHOT, Grid, cell_table
from lib.io import outputs_dir, read_json
from lib.naming import bias_run_name, debias_system_name, system_name
from lib.retrieval import SETTINGS
from lib.sampling import run_options

SUMMARY_METRICS = list(LAREQA_REPORT_METRICS)      # LAReQA's: the tables, tests and verdict of lib.report
BIAS_METRICS = ["same_language_first", "chance", "strong_alignment", "same_language_distractor",
                "top_k_same_language", "top_k_hits_same_language", "pool_same_language"]


def describe_eval_run(run: str) -> dict[str, Any]:
    """The configuration of an evaluation run made outside a grid (from its config.json files)."""
    config = read_json(outputs_dir() / run / "config.json")
    settings = config.get("backbone_settings") or {}
    row = {"backbone": settings.get("name", config.get("backbone")), "system": run_label(run),
           "sampler": None, "seed": None, "train_sources": None,
           "dataset": config.get("dataset"), "train_run": None, "eval_run": run, "bias_run": None}
    if settings.get("source") not in (None, "path"):
        row.update(sampler=ZERO_SHOT)           # system stays "zero-shot <backbone>": not a grid cell
    train_dir = Path(str(config.get("backbone", ""))).parent
    if not (train_dir / "config.json").is_file():          # the outputs folder was moved: look in today's
        train_dir = outputs_dir() / train_dir.name
    if settings.get("source") == "path" and (train_dir / "config.json").is_file():
        train = read_json(train_dir / "config.json")
        sampler, options, labels = run_options(train)        # the options its sampler declares (lib.sampling)
        row.update(backbone=Path(str(train.get("backbone", row["backbone"]))).name, sampler=sampler, **options,
                   seed=train.get("seed"), train_sources=train.get("train_sources"), train_run=train_dir.name)
        row["system"] = system_name(sampler, labels) if sampler else row["system"]
    debias = config.get("debias")          # a variant's run: {"name": ...}; the evaluation itself: a list
    variant = debias.get("name", "none") if isinstance(debias, dict) else "none"
    row.update(base_system=row["system"], debias=variant, transductive=variant.endswith("-transductive"),
               system=debias_system_name(row["system"], variant))
    return row


def evaluation_complete(run: str) -> bool:
    """The evaluation ``run`` was written to the end: the completion marker (``lib.completion``) of
    the notebook run that wrote it, i.e. its own, or for a debias variant (``config.json``'s
    ``debias_of``) its evaluation's; a ``metrics.json`` alone may be a killed run's."""
    folder = outputs_dir() / run
    if not (folder / "metrics.json").is_file():
        return False
    if is_complete(folder):
        return True
    parent = read_json(folder / "config.json").get("debias_of") if (folder / "config.json").is_file() else None
    return bool(parent) and is_complete(outputs_dir() / parent)


def summary_metrics(dataset: str | None) -> list[str]:
    """The report columns of one evaluation's metrics: its evaluator's ``report_metrics`` by their
    labels (``lib.results.report_columns``), LAReQA's for a run whose dataset is not registered."""
    evaluator = EVALUATORS.get(str(dataset))
    return list(report_columns(dataset).values()) if evaluator is not None else SUMMARY_METRICS


def report_values(metrics: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """Report label -> value of one ``metrics.json`` (either key scheme, ``lib.results.read_summary``)."""
    if str(dataset) not in EVALUATORS:
        return {label: (metrics.get("summary") or {}).get(label) for label in SUMMARY_METRICS}
    summary = read_summary(metrics, dataset)
    return {label: summary.get(key) for key, label in report_columns(dataset).items()}


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def grid_results(grid: Grid | None, extra_runs: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (cell, evaluation dataset) with its summary metrics, bias rates and status.

    ``extra_runs`` adds evaluation runs made outside the grid (described from their configs);
    their bias run is looked up as ``bias-<run>``. ``status`` is complete | missing.
    """
    cells = cell_table(grid) if grid is not None else pd.DataFrame()
    extra = [describe_eval_run(r) for r in extra_runs if r and (outputs_dir() / r / "config.json").is_file()
             and (cells.empty or r not in set(cells.eval_run))]
    table = pd.concat([cells, pd.DataFrame(extra)], ignore_index=True) if extra else cells
    rows = []
    for row in table.to_dict(orient="records"):
        path = outputs_dir() / row["eval_run"] / "metrics.json"
        row["status"] = "complete" if evaluation_complete(row["eval_run"]) else "missing"
        config_path = outputs_dir() / row["eval_run"] / "config.json"
        if config_path.is_file():
            config = read_json(config_path)
            row.update(n_questions=config.get("n_questions"), n_candidates=config.get("n_candidates"))
        if row["status"] == "complete":
            metrics = read_json(path)
            row.update(report_values(metrics, row.get("dataset")))
            row["eval_s"] = (metrics.get("timings") or {}).get("total_s")
        bias_run = row["bias_run"] if _given(row.get("bias_run")) else bias_run_name(row["eval_run"])
        bias_path = outputs_dir() / bias_run / "metrics.json"
        if bias_path.is_file() and is_complete(bias_path.parent):
            bias = read_json(bias_path).get("runs", {}).get(row["eval_run"], {})
            row.update({f"bias {k}": bias.get(k) for k in BIAS_METRICS})
            row["bias_run"] = bias_run
        if _given(row.get("train_run")):
            train_metrics = outputs_dir() / row["train_run"] / "metrics.json"
            if train_metrics.is_file() and is_complete(train_metrics.parent):
                train = read_json(train_metrics)          # lib.train: a flat dict
                row.update(train_steps=train.get("steps"), train_s=train.get("wall_time_s"),
                           best_val_loss=train.get("best_val_loss"), stopped_early=train.get("stopped_early"))
        rows.append(row)
    return pd.DataFrame(rows)


LANGUAGE_SPLIT_TITLE = "Languages seen and unseen in training (mAP)"
LANGUAGE_SPLIT_METRICS = ["mono map seen", "mono map unseen", "cross map seen", "cross map unseen",
                          "multi map seen", "multi map unseen"]


def training_languages(sources: str) -> list[str]:
    """The languages of a training mixture (comma-separated registered sources), e.g. mlqa-r -> 7."""
    return sorted({lang for source in str(sources).split(",") if source.strip()
                   for lang in source_languages(source.strip())})


def language_split(per_pair: pd.DataFrame, seen: Sequence[str], metric: str = "map") -> dict[str, float]:
    """``metric`` over the languages of the training data (seen) and the others (unseen), per setting.

    ``per_pair``: an evaluation's ``per_pair`` table (metrics.json). mono and multi split by the
    query language; cross by the language pair: ``seen`` = both languages seen, ``unseen`` = at
    least one unseen. Each value is the mean over its languages (pairs for cross), NaN when none.
    """
    seen = set(seen)
    out = {}
    for setting in SETTINGS:
        rows = per_pair[per_pair.setting == setting]
        if setting == "cross":
            inside = rows.query_lang.isin(seen) & rows.target_lang.isin(seen)
        else:
            inside = rows.query_lang.isin(seen)
        for name, mask in (("seen", inside), ("unseen", ~inside)):
            values = rows.loc[mask, metric]
            out[f"{setting} {metric} {name}"] = float(values.mean()) if len(values) else np.nan
    return out


def add_language_split(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the columns of ``LANGUAGE_SPLIT_METRICS`` for every complete evaluation.

    Seen languages are those of the training data: the row's ``train_sources``, or, for a zero-shot
    row, the one training mixture of the other rows with its backbone and dataset (so that it is
    split the same way as the models it is compared with; left empty when there are several).
    Note that the ``en`` sampler trains on English only although its data has more languages.
    """
    results = results.copy()
    for column in LANGUAGE_SPLIT_METRICS:
        results[column] = np.nan
    if results.empty or "eval_run" not in results:
        return results
    trained = results[results.train_sources.map(_given)] if "train_sources" in results else results.iloc[:0]
    for index, row in results[results.status == "complete"].iterrows():
        sources = row.get("train_sources")
        if not _given(sources):
            mixtures = set(trained.loc[(trained.backbone == row.backbone) & (trained.dataset == row.dataset),
                                       "train_sources"])
            if len(mixtures) != 1:
                continue
            sources = mixtures.pop()
        per_pair = pd.DataFrame(read_json(outputs_dir() / row.eval_run / "metrics.json").get("per_pair") or [])
        if per_pair.empty or "target_lang" not in per_pair:
            continue
        for column, value in language_split(per_pair, training_languages(sources)).items():
            results.loc[index, column] = value
    return results
