"""06_report: the grid's ``Report``, the research-question verdict, its figures and files.

:func:`build_report` turns the gathered rows (:mod:`lib.gather`) into the primary analysis the
grid file declares, its sensitivity analysis and the exploratory comparisons (:func:`analysis_tables`:
:mod:`lib.analysis_report`, :mod:`lib.systems_report`; docs/statistics.md), the seed summary and
the paper-style tables (:mod:`lib.report_tables`: mean ± std over seeds, the paper side by side,
the samplers' paired tests, one descriptive table per dataset that is not LAReQA's) and
:func:`hybrid_verdict` (the paper's comparison with the better of mono and cross, exploratory). :func:`write_report` writes them; :func:`report_figures` draws them with
:mod:`lib.report_plots` (which also holds the language-pair heatmap of 04_evaluate and 05_bias).

    report = build_report("grid-smoke", resamples=1000)
    report.tables["mAP (mean ± std over seeds, number of seeds)"], report.significance
    write_report(run_dir("report-smoke"), report, report_figures(report))
    python -m lib.report grid=grid-smoke resamples=1000    # the same (ReportConfig, as 06_report)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.gather import (BIAS_METRICS, LANGUAGE_SPLIT_METRICS, LANGUAGE_SPLIT_TITLE, SUMMARY_METRICS,
                        add_language_split, grid_results, summary_metrics)
from lib.analysis_plan import AnalysisPlan
from lib.grid_plan import Grid, load_grid
from lib.cli import run_cli, without_flag
from lib.completion import check_run_claim, record_run
from lib.io import outputs_dir, run_dir, save_figure, write_json, write_provenance, write_text
from lib.parameters import param, parse_command_line
from lib.report_curves import alpha_table, budget_table, curve_figures
from lib.report_plots import metric_figure, significance_figure
from lib.sources import PAPER_TRAIN_SOURCES
from lib.report_tables import (page_tables, dataset_tables, format_mean_std, load_reference, paper_side_by_side, seed_summary,
                               significance_table, split_datasets)
from lib.retrieval import SETTINGS
from lib.significance import holm
from lib.validation import check_range, check_run_name, coerce_fields
from lib.analysis_report import (MARGIN_TITLE, PRIMARY_TITLE, SENSITIVITY_TITLE, margin_sensitivity, primary_analysis,
                                 primary_comparisons, sensitivity_analysis)
from lib.systems_report import EXPLORATORY_TITLE, exploratory_comparisons, exploratory_sentences, tradeoff_figure


@dataclass
class Report:
    """What 06_report shows and writes: the results table and the paper-style tables built from it."""

    grid: str
    results: pd.DataFrame                     # one row per (cell, dataset): see grid_results
    summary: pd.DataFrame                     # seed_summary(results)
    tables: dict[str, pd.DataFrame]           # title -> formatted table
    significance: pd.DataFrame                # significance_table(results)
    missing: list[str] = field(default_factory=list)
    extended: pd.DataFrame = field(default_factory=pd.DataFrame)   # exploratory (lib.systems_report)
    captions: dict[str, str] = field(default_factory=dict)         # title -> what the table is (and is not)
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)    # lib.analysis_report.primary_analysis
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)  # the same families, two-way bootstrap
    margins: pd.DataFrame = field(default_factory=pd.DataFrame)    # the primary p-values over margins

    def primary_analysis(self) -> tuple[pd.DataFrame, list[str]]:
        """The grid file's questions (confirmatory) and one sentence per in-family test."""
        return self.primary, primary_sentences(self.primary)

    def extended_question(self) -> tuple[pd.DataFrame, list[str]]:
        """The exploratory comparisons (not in the primary analysis) and their sentences."""
        return self.extended, exploratory_sentences(self.extended)

    def status(self) -> str:
        """``grid g: 4 evaluation run(s) complete, 1 missing`` and the missing runs' names."""
        complete = int((self.results.status == "complete").sum()) if len(self.results) else 0
        text = f"grid {self.grid}: {complete} evaluation run(s) complete, {len(self.missing)} missing"
        return text + (f"\nmissing: {', '.join(self.missing)}" if self.missing else "")

    def research_question(self) -> tuple[pd.DataFrame, list[str]]:
        """The verdict table of :func:`hybrid_verdict` (empty when there is no answer yet) and its
        sentences (:func:`verdict_sentences`), or the one sentence that says what is missing."""
        if VERDICT_TITLE not in self.tables:
            return pd.DataFrame(), ["no answer yet: needs complete mono, cross and hybrid runs on one dataset, "
                                    "and their paired tests"]
        verdict = self.tables[VERDICT_TITLE]
        return verdict, verdict_sentences(verdict)

    def results_overview(self, digits: int = 3) -> pd.DataFrame:
        """One row per run with its configuration, status and main metrics (``RESULTS_COLUMNS``, then
        the primary metric of every other dataset evaluated: MIRACL's nDCG@10, Tatoeba's accuracy)."""
        _, others = split_datasets(self.results)
        primary = [summary_metrics(d)[0] for d in others.dataset.unique()] if len(others) else []
        return self.results[[c for c in [*RESULTS_COLUMNS, *primary] if c in self.results.columns]].round(digits)

    def paper_tables(self) -> dict[str, pd.DataFrame]:
        """The paper-style tables by title, without the research question's (see research_question)."""
        analysis = (VERDICT_TITLE, EXPLORATORY_TITLE, PRIMARY_TITLE, SENSITIVITY_TITLE, MARGIN_TITLE)
        return {title: table for title, table in self.tables.items() if title not in analysis}

    def significance_overview(self, digits: int = 4) -> pd.DataFrame:
        """The paired tests with the columns a reader compares (empty: fewer than two systems to compare)."""
        if not len(self.significance):
            return pd.DataFrame(columns=SIGNIFICANCE_OVERVIEW)
        return self.significance[SIGNIFICANCE_OVERVIEW].round(digits)


RESULTS_COLUMNS = ["backbone", "system", "seed", "dataset", "status", "mono map", "cross map", "multi map",
                   "multi rank_distance"]
SIGNIFICANCE_OVERVIEW = ["dataset", "setting", "metric", "a", "b", "delta", "ci_low", "ci_high", "p_value", "p_holm",
                         "effect_size"]


SETTINGS_OF = {"rank_distance": ("multi",)}       # rank distance exists in the multilingual setting only
MAP_METRICS = ["mono map", "cross map", "multi map"]
RECALL_METRICS = ["mono recall@1", "cross recall@1", "multi recall@10", "mono map@20", "cross map@20", "multi map@20"]
BIAS_TABLE_METRICS = ["multi rank_distance", "bias same_language_first", "bias chance", "bias strong_alignment",
                      "bias same_language_distractor", "bias top_k_same_language", "bias pool_same_language"]


VERDICT_TITLE = ("Exploratory: the paper's per-question test of hybrid against the better of mono and cross "
                 "(seeds averaged, comparator picked by mean)")
# the metrics of the question, and which direction is better (+1: higher, -1: lower)
VERDICT_METRICS = {"mono map": 1, "cross map": 1, "multi map": 1, "multi rank_distance": -1}


def hybrid_verdict(summary: pd.DataFrame, significance: pd.DataFrame, level: float = 0.05,
                   digits: int = 3) -> pd.DataFrame:
    """Does hybrid match or beat the better of mono and cross in every setting, and is it less biased?

    For each (backbone, training mixture, dataset) that has mono, cross and a hybrid system, and
    each metric of ``VERDICT_METRICS``: the better of mono and cross by its mean over seeds, the
    hybrid mean, ``delta`` = hybrid - better (positive = hybrid higher), and the Holm-adjusted
    p-value of their paired test from ``significance`` (:func:`significance_table`). ``verdict``:
    ``better`` or ``worse`` when p_holm < ``level`` (in the metric's good direction: lower rank
    distance is better), ``no significant difference`` otherwise, ``not tested`` without a test.
    """
    columns = ["backbone", "train_sources", "dataset", "hybrid", "metric", "better of mono/cross",
               "hybrid mean ± std", "better mean ± std", "delta", "p_holm", "effect_size", "verdict"]
    if summary is None or summary.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (backbone, sources, dataset), group in summary.groupby(level=[0, 1, 2], sort=False):
        systems = group.index.get_level_values(3).tolist()
        hybrids = [s for s in systems if s.startswith("hybrid")]
        if not hybrids or not {"mono", "cross"} <= set(systems):
            continue
        for hybrid in hybrids:
            for metric, direction in VERDICT_METRICS.items():
                if (metric, "mean") not in summary.columns:
                    continue
                value = {s: summary.loc[(backbone, sources, dataset, s)] for s in ("mono", "cross", hybrid)}
                mean = {s: v[(metric, "mean")] for s, v in value.items()}
                if any(pd.isna(m) for m in mean.values()):
                    continue
                best = max(("mono", "cross"), key=lambda s: direction * mean[s])
                setting, name = metric.split(" ", 1)
                test = significance
                if len(test):
                    test = test[(test.backbone == backbone) & (test.train_sources == sources)
                                & (test.dataset == dataset) & (test.setting == setting) & (test.metric == name)
                                & (((test.a == hybrid) & (test.b == best)) | ((test.a == best) & (test.b == hybrid)))]
                p_holm = float(test.p_holm.iloc[0]) if len(test) else np.nan
                effect = float(test.effect_size.iloc[0]) * (1 if test.a.iloc[0] == hybrid else -1) if len(test) else np.nan
                delta = mean[hybrid] - mean[best]
                if np.isnan(p_holm):
                    verdict = "not tested"
                elif p_holm < level:
                    verdict = "better" if direction * delta > 0 else "worse"
                else:
                    verdict = "no significant difference"

                def cell(system):
                    std, n = value[system][(metric, "std")], value[system][(metric, "n")]
                    return (f"{mean[system]:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")
                            + (f" ({int(n)})" if n and n > 1 else ""))

                rows.append(dict(zip(columns, [backbone, sources, dataset, hybrid, metric, best, cell(hybrid), cell(best),
                                               round(float(delta), digits + 1), p_holm, effect, verdict])))
    return pd.DataFrame(rows, columns=columns)


def verdict_sentences(verdict: pd.DataFrame, level: float = 0.05) -> list[str]:
    """One plain sentence per (backbone, mixture, dataset, hybrid) of :func:`hybrid_verdict`."""
    sentences = []
    if verdict is None or verdict.empty:
        return sentences
    for (backbone, sources, dataset, hybrid), group in verdict.groupby(
            ["backbone", "train_sources", "dataset", "hybrid"], sort=False):
        maps = group[group.metric.str.endswith(" map")]
        worse = maps[maps.verdict == "worse"]
        better = maps[maps.verdict == "better"]
        where = f"{backbone} trained on {sources}, evaluated on {dataset}: {hybrid}"
        if worse.empty:
            text = (f"{where} is not significantly worse than the better of mono and cross on mAP in any setting "
                    "(not a claim of equality: see the equivalence tests of the extended question)")
        else:
            text = f"{where} is significantly worse than the better of mono and cross on " + ", ".join(
                f"{r.metric} ({r['better of mono/cross']}, delta {r.delta:+.3f}, p_holm {r.p_holm:.2g})"
                for _, r in worse.iterrows())
        if len(better):
            text += "; significantly better on " + ", ".join(
                f"{r.metric} (than {r['better of mono/cross']}, {r.delta:+.3f})" for _, r in better.iterrows())
        bias = group[group.metric == "multi rank_distance"]
        if len(bias):
            row = bias.iloc[0]
            text += (f". Language bias (rank distance, lower is better): {row['hybrid mean ± std']} against "
                     f"{row['better of mono/cross']}'s {row['better mean ± std']}, {row.verdict}"
                     + ("" if np.isnan(row.p_holm) else f" (p_holm {row.p_holm:.2g})"))
        sentences.append(text + f" (Holm-adjusted paired tests over questions, level {level}).")
    return sentences


def _wide(formatted: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, train_sources, system), columns (dataset, metric): the paper's layout."""
    if formatted.empty:
        return formatted
    wide = formatted.unstack("dataset")
    wide.columns = wide.columns.swaplevel(0, 1)
    return wide.sort_index(axis=1, level=0, sort_remaining=False)


def _lareqa_tables(summary: pd.DataFrame, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The paper's LAReQA tables from the LAReQA rows' seed summary, ours next to the paper's, the baselines."""
    tables = {
        "mAP (mean ± std over seeds, number of seeds)": _wide(format_mean_std(summary, MAP_METRICS)),
        "Recall and XTREME-R mAP@20": _wide(format_mean_std(summary, RECALL_METRICS)),
        "Language bias (multilingual setting)": _wide(format_mean_std(summary, BIAS_TABLE_METRICS)),
    }
    if results[[m for m in LANGUAGE_SPLIT_METRICS if m.endswith("unseen")]].notna().to_numpy().any():
        tables[LANGUAGE_SPLIT_TITLE] = _wide(format_mean_std(summary, LANGUAGE_SPLIT_METRICS))
    if len(summary):
        side = paper_side_by_side(summary, train_sources=[PAPER_TRAIN_SOURCES])   # cells trained as the paper
        if len(side):
            tables["Ours next to the paper (same backbone, sampler and training mix)"] = side
    lareqa = load_reference("lareqa")
    tables["LAReQA mBERT baselines (multi mAP, context only)"] = lareqa.pivot_table(
        index="sampler", columns="dataset", values="value")
    return tables


def _samplers_significance(results: pd.DataFrame, summary: pd.DataFrame, metrics: Sequence[str], resamples: int,
                           seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The samplers' pairwise tests (seeds averaged; the paper's systems only, not debiased or merged
    ones), Holm over all of them, and the research question's verdict built on them."""
    samplers_only = results
    if "debias" in results:
        samplers_only = results[results.debias.fillna("none").eq("none")
                                & results.get("method", pd.Series("sampler", index=results.index)).fillna("sampler")
                                .isin(["sampler"])]
    significance = [significance_table(samplers_only, metric=m, resamples=resamples, seed=seed,
                                       settings=SETTINGS_OF.get(m, SETTINGS)) for m in metrics]
    significance = pd.concat([t for t in significance if len(t)], ignore_index=True) if any(
        len(t) for t in significance) else pd.DataFrame()
    if not len(significance):
        return significance, pd.DataFrame()
    significance["p_holm"] = holm(significance.p_value.to_numpy())
    paper_systems = summary.index.get_level_values("system").isin(set(samplers_only.system))
    return significance, hybrid_verdict(summary[paper_systems], significance)


def analysis_tables(lareqa: pd.DataFrame, plan: AnalysisPlan | None, resamples: int = 10_000, seed: int = 0):
    """The primary analysis, its sensitivity analysis, the margins and the exploratory table, by
    title in that order (shown ones only), and the four full tables."""
    primary = primary_analysis(lareqa, plan)
    extended = exploratory_comparisons(lareqa, exclude=primary_comparisons(primary))
    sensitivity = sensitivity_analysis(lareqa, plan, primary, resamples=resamples, seed=seed)
    margins = margin_sensitivity(lareqa, plan) if len(primary) else pd.DataFrame()
    shown = {PRIMARY_TITLE: primary[PRIMARY_SHOWN] if len(primary) else None,
             SENSITIVITY_TITLE: sensitivity[SENSITIVITY_SHOWN] if len(sensitivity) else None,
             MARGIN_TITLE: margins if len(margins) else None,
             EXPLORATORY_TITLE: extended[EXPLORATORY_SHOWN] if len(extended) else None}
    return ({title: table for title, table in shown.items() if table is not None},
            (primary, sensitivity, margins, extended))


def build_report(grid: Grid | str | None, extra_runs: Sequence[str] | str = (), resamples: int = 10_000,
                 seed: int = 0, significance_metrics: Sequence[str] = ("map", "rank_distance")) -> Report:
    """Gather every run of a grid (plus ``extra_runs``) into the paper's tables and the tests.

    The LAReQA rows make the paper's tables, the tests and the verdicts; every other evaluated
    dataset (MIRACL, Tatoeba) gets one descriptive table (:func:`dataset_tables`).

        report = build_report("grid-smoke", resamples=1000)
        report.tables["mAP"], report.significance
    """
    if isinstance(grid, (str, Path)):
        grid = load_grid(grid) if str(grid) else None  # "": only the extra runs
    if isinstance(extra_runs, str):
        extra_runs = [r.strip() for r in extra_runs.split(",") if r.strip()]
    results = grid_results(grid, extra_runs)
    if grid is not None and not extra_runs and "status" in results and not len(results[results.status != "missing"]):
        raise ValueError(f"grid {grid.name if grid else ''} has no evaluation run yet in {outputs_dir()} "
                         f"({len(results)} missing); run the grid first (python -m lib.grid "
                         f"{grid.source if grid and grid.source else 'params/<grid>.yaml'}), or name complete "
                         "runs in extra_runs")
    if results.empty:
        results = pd.DataFrame(columns=["backbone", "system", "dataset", "eval_run", "status", "train_sources"])
    results = add_language_split(results)
    lareqa, _ = split_datasets(results)
    summary = seed_summary(lareqa, [*SUMMARY_METRICS, *(f"bias {m}" for m in BIAS_METRICS), *LANGUAGE_SPLIT_METRICS])
    tables = _lareqa_tables(summary, lareqa)
    significance, verdict = _samplers_significance(lareqa, summary, significance_metrics, resamples, seed)
    if len(verdict):
        tables = {VERDICT_TITLE: verdict, **tables}
    analysis, (primary, sensitivity, margins, extended) = analysis_tables(
        lareqa, grid.analysis if grid is not None else None, resamples, seed)
    tables = {**analysis, **tables}
    others, captions, other_summaries = dataset_tables(results)
    tables.update(others)
    summary = pd.concat([summary, *other_summaries]) if other_summaries else summary
    missing = results.loc[results.status == "missing", "eval_run"].tolist()
    return Report(grid.name if grid else "-", results, summary, tables, significance, missing, extended, captions,
                  primary, sensitivity, margins)


PRIMARY_SHOWN = ["question", "test", "dataset", "setting", "metric", "a", "b", "design", "seeds_a", "seeds_b", "delta",
                 "ci_low", "ci_high", "margin", "tost_low", "tost_high", "p_value", "p_holm", "mde", "verdict"]
SENSITIVITY_SHOWN = ["question", "test", "dataset", "setting", "metric", "a", "b", "delta", "ci_low", "ci_high",
                     "p_value", "p_floor", "p_holm", "verdict"]
EXPLORATORY_SHOWN = ["question", "dataset", "setting", "metric", "a", "b", "design", "delta", "ci_low", "ci_high",
                     "p_value", "p_holm", "verdict"]


def primary_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per in-family test of the primary analysis: verdict, delta, interval, p_holm, MDE."""
    if table is None or table.empty:
        return []
    sentences = []
    for row in table[table.in_family].itertuples():
        interval = (f"90% interval [{row.tost_low:+.4g}, {row.tost_high:+.4g}], margin ±{row.margin:.3g}"
                    if row.test == "equivalence" else f"95% interval [{row.ci_low:+.4g}, {row.ci_high:+.4g}]")
        sentences.append(f"{row.question} ({row.dataset}, {row.setting} {row.metric}, {row.test}): {row.a} against "
                         f"{row.b}: {row.verdict} (delta {row.delta:+.4g}, {interval}; {row.design} t-test, "
                         f"df {row.df:.1f}, p {row.p_value:.2g}, p_holm {row.p_holm:.2g}; detectable with 80% power: "
                         f"{row.mde:.3g}).")
    return sentences


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame is None or frame.empty:
        return "(nothing yet)\n"
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(c) for c in column if c) for column in frame.columns]
    keys = 1
    if isinstance(frame.index, pd.MultiIndex) or frame.index.name:
        keys = frame.index.nlevels
        frame = frame.reset_index()
    elif not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index().rename(columns={"index": ""})
    return "\n\n".join(page_tables(frame, keys=keys, digits=digits)) + "\n"      # each table fits a page


SIGNIFICANCE_COLUMNS = ["backbone", "train_sources", "dataset", "setting", "metric", "a", "b", "mean_a", "mean_b",
                        "delta", "ci_low", "ci_high", "p_value", "p_holm", "effect_size", "wins", "ties", "losses",
                        "n_queries", "n_clusters"]


def _analysis_notes(title: str, report: Report) -> list[str]:
    """What a reader needs under each analysis table: design, family, resolution, verdict words."""
    if title == PRIMARY_TITLE:
        primary = report.primary
        return ["Confirmatory: the questions, metrics, hypotheses, margins and level were fixed in the grid file "
                "before the run (its `analysis` section). Unit: the seed (each run's macro metric; questions "
                "averaged within the seed). `design`: paired by seed within one trained model, one-sample "
                "against a single untrained run, Welch otherwise; t-tests with their small-sample df, p-values "
                "exact (no resampling floor). Holm within each question (its `in_family` rows, including the "
                "TOST equivalence tests), nothing else. `tost_low`/`tost_high`: the 90% interval behind TOST; "
                f"`mde`: the smallest difference (TOST: margin) detectable with {80}% power at the unadjusted "
                "level. Several comparators: intersection-union test (the largest one-sided p; components in "
                "primary.csv). `equivalent`, `same` or `no effect` may be said only of a row whose verdict is "
                f"`equivalent within ±m`. {int(primary.in_family.sum())} tests in "
                f"{primary.question.nunique()} families.", ""] + [f"- {s}" for s in primary_sentences(primary)] + [""]
    if title == SENSITIVITY_TITLE:
        sensitivity = report.sensitivity
        return ["Sensitivity analysis, not the reported test: the primary families again with the two-way "
                "(pigeonhole) bootstrap, seeds and question ids resampled as crossed factors (lib/significance.py); "
                "anticonservative with few seeds (docs/statistics.md). Each test has its own random stream "
                f"(seed from its name); p-value floor {sensitivity.p_floor.min():.2g} per test "
                f"({int(sensitivity.resamples.iloc[0])} resamples).", ""]
    if title == MARGIN_TITLE:
        return ["The primary non-inferiority and equivalence tests at other margins (Holm within the question at "
                "each margin); the margin the grid file declares is the one whose verdict counts.", ""]
    if title == EXPLORATORY_TITLE:
        return ["Exploratory: comparisons the grid file does not declare, with the seed-level t-test, Holm over "
                f"this table only ({len(report.extended)} tests); never a claim of equivalence. Transductive "
                "variants (upper bounds) are in the tables and the figure only.", ""] + [
            f"- {s}" for s in exploratory_sentences(report.extended)] + [""]
    return []


def write_report(run_path: str | Path, report: Report, figures: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None) -> Path:
    """``report.md``, ``results.csv``, ``summary.csv``, ``significance.csv``, ``verdict.csv`` (when the
    grid answers the research question), figures (png) and ``metrics.json`` (written last) in
    ``run_path``; every file is written atomically."""
    run_path = Path(run_path)
    write_provenance(run_path, {"task": "report", "grid": report.grid, **(config or {})})
    write_text(run_path / "results.csv", report.results.to_csv(index=False))
    flat = report.summary.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    write_text(run_path / "summary.csv", flat.to_csv())
    significance = report.significance
    if len(significance):
        significance = significance[[c for c in SIGNIFICANCE_COLUMNS if c in significance.columns]]
    write_text(run_path / "significance.csv", significance.to_csv(index=False))
    if VERDICT_TITLE in report.tables:
        write_text(run_path / "verdict.csv", report.tables[VERDICT_TITLE].to_csv(index=False))
    for name, table in (("primary", report.primary), ("sensitivity", report.sensitivity),
                        ("margins", report.margins), ("exploratory", report.extended),
                        ("budget", budget_table(report.results)), ("alpha", alpha_table(report.results))):
        if len(table):                                       # budget and alpha: grids that vary them
            write_text(run_path / f"{name}.csv", table.to_csv(index=False))
    names = []
    for name, figure in (figures or {}).items():
        save_figure(figure, run_path / f"{name}.png")
        names.append(name)
    complete = int((report.results.status == "complete").sum()) if len(report.results) else 0
    lines = [f"# Report: grid `{report.grid}`", "",
             f"{complete} evaluation run(s) complete, {len(report.missing)} missing"
             + (f": {', '.join(report.missing)}" if report.missing else "") + ".", "",
             "Each cell: mean ± std over seeds (number of seeds when more than one). mAP is macro-averaged "
             "over query languages (lib/metrics.py); rank distance: lower is less language-biased.", ""]
    for title, table in report.tables.items():
        lines += [f"## {title}", "", _markdown(table)]
        if title in report.captions:
            lines += [report.captions[title], ""]
        if title == VERDICT_TITLE:
            lines += ["Exploratory, as the paper tests: delta = hybrid - the better of mono and cross (picked by the "
                      "mean over seeds, so not a confirmatory comparator); p_holm and effect size (Cohen's d_z, "
                      "positive = hybrid higher) from the paired per-question tests below, which average the seeds "
                      "and so ignore seed variation. The primary analysis above is the answer.", ""]
            lines += [f"- {sentence}" for sentence in verdict_sentences(table)] + [""]
        lines += _analysis_notes(title, report)
    lines += ["## Paired significance (per-query AP and rank distance, clustered by question id)", "",
              "delta = A - B of the macro metric; 95% bootstrap interval; two-sided sign-flip permutation "
              "p-value; p_holm: Holm-adjusted over every row; effect size: Cohen's d_z over question ids "
              "(lib/significance.py). Seeds are averaged per query before testing.", "",
              _markdown(significance.round(4) if len(significance) else significance, digits=4)]
    lines += [f"![{name}]({name}.png)\n" for name in names]
    write_text(run_path / "report.md", "\n".join(lines))
    metrics = {"summary": {"complete_runs": complete, "missing_runs": len(report.missing),
                           "comparisons": int(len(report.significance)),
                           "significant_holm_0.05": int((report.significance.get("p_holm", pd.Series(dtype=float))
                                                         < 0.05).sum())}}
    write_json(run_path / "metrics.json", metrics)
    return run_path



# --------------------------------------------------------------------------------------------
# figures


def report_figures(report: Report) -> dict[str, Any]:
    """The report's figures, by file name: the paired differences (when there are tests), mAP and
    rank distance per sampler (when a LAReQA run is complete), and per other dataset (MIRACL,
    Tatoeba) its first two summary metrics per system (``<dataset>_per_system``)."""
    figures = {}
    if len(report.significance):
        figures["significance"] = significance_figure(report.significance)
    lareqa, others = split_datasets(report.results)
    if len(lareqa) and (lareqa.status == "complete").any():
        plain = lareqa                         # the bars: systems without debiasing (the trade-off figure has all)
        if "debias" in plain:
            plain = plain[plain.debias.fillna("none").eq("none")]
        figures["map_per_sampler"] = metric_figure(plain)
        figures["rank_distance_per_sampler"] = metric_figure(plain, ["multi rank_distance"], ylim=None,
                                                             title="rank distance per sampler (lower: less biased)")
        tradeoff = tradeoff_figure(lareqa)
        if tradeoff is not None:
            figures["tradeoff"] = tradeoff
    figures.update(curve_figures(report.results))           # budget and alpha grids: metrics against the axis
    for dataset, rows in others[others.status == "complete"].groupby("dataset", sort=False):
        metrics = summary_metrics(dataset)[:2]
        figures[f"{dataset}_per_system"] = metric_figure(rows, metrics, title=f"{dataset}: "
                                                         f"{' and '.join(metrics)} per system (points: seeds)")
    return figures


# --------------------------------------------------------------------------------------------
# The step's parameters: notebooks/06_report.ipynb and ``python -m lib.report``


@dataclass
class ReportConfig:
    """Every parameter of 06_report (``python -m lib.report --notebook-parameters`` prints its cell)."""

    grid: str = param("grid", "params/<grid>.yaml (or a path to a grid file)", smoke="grid-smoke")
    extra_runs: str = param("", "evaluation runs made outside the grid, added as rows (comma-separated)",
                            smoke="eval-tiny-xquad-r")
    resamples: int = param(10000, "permutation and bootstrap resamples per test", smoke=500)
    seed: int = param(0, "of the resampling generator")
    run: str = param("report", "output folder", smoke="report-smoke")

    def __post_init__(self) -> None:
        """Values as their fields declare (``"500"`` -> 500) and in range, or a ParameterError naming the field."""
        coerce_fields(self)
        check_range("resamples", self.resamples, low=1, fix="permutation and bootstrap resamples, e.g. resamples=10000")
        check_range("seed", self.seed, low=0)
        check_run_name(self.run)


def report_step(config: ReportConfig, force: bool = False) -> tuple[Report, Path]:
    """Build, draw and write the report (``outputs/<run>/``) as 06_report does (a folder that holds
    another kind of run, or a report with other parameters, is refused unless ``force``)."""
    claim = {"grid": config.grid, "extra_runs": config.extra_runs, "resamples": config.resamples, "seed": config.seed}
    check_run_claim(outputs_dir() / config.run, "report", claim, "lib.report", force=force)
    report = build_report(config.grid, extra_runs=config.extra_runs, resamples=config.resamples, seed=config.seed)
    path = write_report(run_dir(config.run), report, report_figures(report),
                        config={"extra_runs": config.extra_runs, "resamples": config.resamples,
                                "seed": config.seed, "run": config.run})
    record_run(path, "report", claim, "lib.report", replace=force)
    plt.close("all")
    return report, path


def main(argv=None) -> tuple[Report, Path] | None:
    """``python -m lib.report [--config file.yaml] [--force] [key=value ...]``: 06_report from a shell;
    ``--force`` writes over a run folder that holds another run."""
    argv, force = without_flag(argv, "--force")
    config = parse_command_line(ReportConfig, "python -m lib.report", "The grid's tables, verdict and figures.", argv)
    if config is None:
        return None
    report, path = report_step(config, force=force)
    print(f"{report.status()}\noutputs: {path}")
    return report, path


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.report"))
