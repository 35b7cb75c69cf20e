"""Figures and tables of the training data (``01_data``): groups per language, the split training
uses, and the leakage of training texts into the evaluation benchmark.

Inputs are the tables ``lib.training_data`` computes (``language_counts``, ``languages_per_group``,
``leakage_report``); these functions only reshape and draw them (seaborn), so a notebook calls
them and saves what they return.

    figure = groups_figure(language_counts(groups), languages_per_group(groups), "mlqa-r")
    split_counts(train, validation)                      # groups per language on each side
    grid = leakage_figure(report, "mlqa-r", "xquad-r")   # a seaborn FacetGrid, one panel per kind
    data_summary("mlqa-r", "xquad-r", groups, train, validation, report)   # summary.json

``DataConfig`` is 01_data's parameters (its parameters cell is generated from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.data import ParallelGroup
from lib.parameters import param
from lib.training_data import language_counts, languages_per_group


@dataclass
class DataConfig:
    """01_data's parameters: the training groups of one LAReQA benchmark and their leakage into
    another (``notebook_config(DataConfig, globals())`` reads them in the notebook)."""

    train_dataset: str = param("mlqa-r", "LAReQA benchmark of the training groups: mlqa-r | xquad-r")
    eval_dataset: str = param("xquad-r", "LAReQA benchmark checked for leakage of training texts")
    candidate_context: str = param("sentence", "positives as sentences, or sentence + paragraph (as TrainConfig)")
    max_negatives: int = param(3, "hard negatives kept per group and language (as TrainConfig)")
    near_threshold: float = param(0.9, "near duplicate: character 3-5-gram TF-IDF cosine at or above this")
    eval_max_questions: int | None = param(None, "evaluation questions kept per language for the leakage "
                                           "check; None: all", smoke=100)
    run: str = param("data-mlqa-r", "output folder, outputs/<run>/")


def groups_figure(counts: pd.DataFrame, languages_per_group: dict[int, int], dataset: str):
    """Two bar panels: groups (query + positive) per language, and how many languages a group has.

    ``counts`` is ``language_counts(groups)`` (index ``lang``, column ``groups``);
    ``languages_per_group`` maps a number of languages to the number of groups with that many.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    sns.barplot(data=counts.reset_index(), x="lang", y="groups", color="C0", ax=axes[0])
    axes[0].set_title(f"{dataset}: groups (query + positive) per language")
    per_group = pd.Series(languages_per_group, name="groups").rename_axis("languages").reset_index()
    sns.barplot(data=per_group, x="languages", y="groups", color="C1", ax=axes[1])
    axes[1].set_title("languages per group")
    figure.tight_layout()
    return figure


def split_counts(train: Sequence[ParallelGroup], validation: Sequence[ParallelGroup]) -> pd.DataFrame:
    """Groups per language on each side of a split (index ``lang``; columns train, validation)."""
    return pd.concat({"train": language_counts(train).groups,
                      "validation": language_counts(validation).groups}, axis=1).fillna(0).astype(int)


def leakage_shares(report: pd.DataFrame) -> pd.DataFrame:
    """``leakage_report`` per language in long form, shares in percent: kind, lang, duplicate
    (``exact_share`` | ``near_share``), share. The ``all`` rows (sums over languages) are left out."""
    shares = report[report.lang != "all"].melt(id_vars=["kind", "lang"], value_vars=["exact_share", "near_share"],
                                               var_name="duplicate", value_name="share")
    shares["share"] *= 100
    return shares


def leakage_figure(report: pd.DataFrame, train_dataset: str, eval_dataset: str):
    """Bars of the exact and near duplicate shares per language, one panel per kind (question,
    passage): the evaluation rows of ``eval_dataset`` found among ``train_dataset``'s training texts."""
    grid = sns.catplot(data=leakage_shares(report), x="lang", y="share", hue="duplicate", col="kind", kind="bar",
                       height=3.2, aspect=1.6)
    grid.set_axis_labels("language", "% of evaluation rows")
    grid.figure.suptitle(f"{train_dataset} training texts found in {eval_dataset}", y=1.04)
    return grid


def data_summary(train_dataset: str, eval_dataset: str, groups: Sequence[ParallelGroup],
                 train: Sequence[ParallelGroup], validation: Sequence[ParallelGroup],
                 report: pd.DataFrame) -> dict:
    """What ``01_data`` records in ``summary.json``: group counts, the split sizes, and the
    leakage totals (the ``all`` rows of ``leakage_report``) per kind."""
    counts = language_counts(groups)
    totals = report[report.lang == "all"].set_index("kind")
    return {
        "train_dataset": train_dataset, "eval_dataset": eval_dataset, "groups": len(groups),
        "languages_per_group": languages_per_group(groups),
        "groups_per_language": counts.groups.to_dict(), "negatives_per_language": counts.negatives.to_dict(),
        "train_groups": len(train), "validation_groups": len(validation),
        "leakage": {kind: {column: totals.loc[kind, column]
                           for column in ["n_eval", "exact", "near", "exact_share", "near_share"]}
                    for kind in totals.index},
        "near_threshold": float(report.near_threshold.iloc[0]),
    }
