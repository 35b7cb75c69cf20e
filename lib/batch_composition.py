"""What the batches of a sampler look like: language composition, summaries, figures, rule checks.

02_sampling's tables and figures, built from a copy of a sampler (``lib.sampling``), which is never
advanced. Separate from the samplers: they decide the batches, this module only describes them.

    table = batch_composition(build_sampler("hybrid", groups, 32), groups, n_batches=500)
    summary = batch_summary(table); composition_checks(summary, table, alpha=0.5)

``SamplingConfig`` is 02_sampling's parameters (its parameters cell is generated from it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.data import ParallelGroup
from lib.parameters import param
from lib.sampling import SAMPLERS, BatchSampler, SamplingError


@dataclass
class SamplingConfig:
    """02_sampling's parameters: which groups every sampler draws from, and how many batches
    (``notebook_config(SamplingConfig, globals())`` reads them in the notebook)."""

    dataset: str = param("mlqa-r", "training groups: lib.training_data.lareqa_groups(dataset)")
    batch_size: int = param(32, "pairs per batch")
    alpha: float = param(0.5, "hybrid: probability that a batch is monolingual")
    n_batches: int = param(500, "batches drawn from each sampler", smoke=50)
    seed: int = param(0, "seed of every sampler")
    run: str = param("sampling-mlqa-r", "output folder, outputs/<run>/")


def batch_composition(sampler: BatchSampler, groups: Sequence[ParallelGroup], n_batches: int) -> pd.DataFrame:
    """One row per pair of the next ``n_batches`` batches of ``sampler`` (continuing into the
    following epochs if needed): ``sampler, epoch, batch, group, qid, source, query_lang,
    passage_lang, monolingual``. The sampler itself is not advanced (a copy draws).

        table = batch_composition(build_sampler("hybrid", groups, 32), groups, n_batches=500)
        table.groupby("batch").monolingual.mean()   # 1.0 for a mono batch, 0.0 for a cross one
    """
    if len(groups) != len(sampler.groups):
        raise SamplingError(
            f"groups has {len(groups)} entries but the sampler was built on {len(sampler.groups)}; "
            "pass the same group list")
    draw = copy.copy(sampler)
    draw.load_state_dict(sampler.state_dict())
    rows = []
    batch_number = 0
    while batch_number < n_batches:
        for batch in draw:
            for pair in batch:
                group = groups[pair.group]
                rows.append((sampler.name, draw.epoch, batch_number, pair.group, group.qid, group.source,
                             pair.query_lang, pair.passage_lang))
            batch_number += 1
            if batch_number >= n_batches:
                break
    table = pd.DataFrame(rows, columns=["sampler", "epoch", "batch", "group", "qid", "source",
                                        "query_lang", "passage_lang"])
    table["monolingual"] = table.query_lang == table.passage_lang
    return table


def language_pair_counts(composition: pd.DataFrame, languages: list[str] | None = None) -> pd.DataFrame:
    """Query language (rows) x passage language (columns) pair counts of a composition table."""
    languages = languages or sorted(set(composition.query_lang) | set(composition.passage_lang))
    counts = pd.crosstab(composition.query_lang, composition.passage_lang)
    return counts.reindex(index=languages, columns=languages, fill_value=0).rename_axis(
        index="query_lang", columns="passage_lang")


def batch_summary(composition: pd.DataFrame) -> pd.DataFrame:
    """One row per batch: ``sampler, batch, source, pairs, languages`` (distinct languages of the
    batch), ``monolingual_share`` (share of pairs with query and passage in one language) and
    ``kind``: ``mono`` (one language throughout), ``cross`` (no same-language pair) or ``mixed``."""
    composition = composition.assign(
        lang_set=[frozenset(pair) for pair in zip(composition.query_lang, composition.passage_lang)])
    summary = composition.groupby(["sampler", "batch"], sort=False).agg(
        source=("source", "first"), pairs=("group", "size"),
        languages=("lang_set", lambda sets: len(frozenset().union(*sets))),
        monolingual_share=("monolingual", "mean")).reset_index()
    summary["kind"] = np.select(
        [(summary.monolingual_share == 1.0) & (summary.languages == 1), summary.monolingual_share == 0.0],
        ["mono", "cross"], default="mixed")
    return summary


def composition_overview(summary: pd.DataFrame) -> pd.DataFrame:
    """Per sampler, from :func:`batch_summary`: ``batches``, ``monolingual_pairs`` (share of pairs
    with query and passage in one language), ``mono_batches`` / ``cross_batches`` /
    ``mixed_batches`` (shares of batches of each kind) and ``languages_per_batch`` (mean)."""
    kinds = pd.crosstab(summary.sampler, summary.kind, normalize="index").reindex(
        columns=["mono", "cross", "mixed"], fill_value=0.0).add_suffix("_batches")
    weighted = summary.assign(mono_pairs=summary.monolingual_share * summary.pairs)
    totals = weighted.groupby("sampler", sort=False).agg(
        batches=("batch", "size"), pairs=("pairs", "sum"), mono_pairs=("mono_pairs", "sum"),
        languages_per_batch=("languages", "mean"))
    totals["monolingual_pairs"] = totals.mono_pairs / totals.pairs
    overview = totals[["batches", "monolingual_pairs", "languages_per_batch"]].join(kinds)
    return overview.rename_axis(columns=None)


# --------------------------------------------------------------------------------------------
# Figures and checks of 02_sampling (compositions from ``batch_composition``, summaries from
# ``batch_summary``)


def language_pair_figure(compositions: pd.DataFrame, languages: list[str], title: str = ""):
    """One heatmap per sampler: share of pairs per (query language, passage language)."""

    names = [name for name in SAMPLERS if name in set(compositions.sampler)]
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        counts = language_pair_counts(compositions[compositions.sampler == name], languages)
        sns.heatmap(counts / counts.to_numpy().sum(), ax=ax, cmap="viridis", square=True, vmin=0,
                    annot=True, fmt=".2f", annot_kws={"size": 6}, cbar=False)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("passage language")
        ax.set_ylabel("query language" if ax is axes[0][0] else "")
    figure.suptitle(title or "share of pairs per language pair")
    figure.tight_layout()
    return figure


def monolingual_share_figure(summary: pd.DataFrame, shown: int = 60):
    """Share of monolingual pairs in each of the first ``shown`` batches, one row per sampler."""

    strip = summary[summary.batch < shown].pivot(index="sampler", columns="batch", values="monolingual_share")
    figure, ax = plt.subplots(figsize=(12, 2.6))
    sns.heatmap(strip.loc[[name for name in SAMPLERS if name in strip.index]], ax=ax, cmap="vlag", vmin=0,
                vmax=1, linewidths=0.5, cbar_kws={"label": "monolingual pairs"})
    ax.set_title(f"share of monolingual pairs in each of the first {min(shown, strip.shape[1])} batches")
    return figure


def batch_kinds_figure(summary: pd.DataFrame, alpha: float):
    """Share of mono, cross and mixed batches per sampler; the dashed line is alpha."""

    kinds = (composition_overview(summary)[["mono_batches", "cross_batches", "mixed_batches"]]
             .rename(columns=lambda column: column.removesuffix("_batches"))
             .reset_index().melt(id_vars="sampler", var_name="kind", value_name="share of batches"))
    figure, ax = plt.subplots(figsize=(7, 3))
    sns.barplot(data=kinds, x="sampler", y="share of batches", hue="kind",
                order=[name for name in SAMPLERS if name in set(kinds.sampler)], ax=ax)
    ax.axhline(alpha, color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"kinds of batch (dashed: alpha = {alpha})")
    return figure


def mono_batch_languages(summary: pd.DataFrame, compositions: pd.DataFrame) -> pd.DataFrame:
    """The language of every monolingual batch of the mono and hybrid samplers."""
    first = compositions.groupby(["sampler", "batch"]).query_lang.first().reset_index()
    mono = summary[summary.kind == "mono"].merge(first, on=["sampler", "batch"])
    return mono[mono.sampler.isin(["mono", "hybrid"])]


def mono_language_figure(summary: pd.DataFrame, compositions: pd.DataFrame, languages: list[str]):

    figure, ax = plt.subplots(figsize=(7, 3))
    sns.countplot(data=mono_batch_languages(summary, compositions), x="query_lang", hue="sampler",
                  order=languages, ax=ax)
    ax.set(xlabel="language of a monolingual batch", ylabel="batches")
    return figure


def composition_checks(summary: pd.DataFrame, compositions: pd.DataFrame, alpha: float) -> dict:
    """Hybrid's share of mono batches against its 4-sigma binomial band, and repeated ids per batch."""
    hybrid = summary[summary.sampler == "hybrid"]
    per_batch = compositions.groupby(["sampler", "batch"]).qid
    return {
        "hybrid_mono_share": float((hybrid.kind == "mono").mean()) if len(hybrid) else float("nan"),
        "alpha": alpha,
        "four_sigma_band": 4 * (alpha * (1 - alpha) / max(len(hybrid), 1)) ** 0.5,
        "batches_with_repeated_qid": int((per_batch.nunique() != per_batch.size()).sum()),
    }
