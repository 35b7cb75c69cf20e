"""The primary (confirmatory) analysis a grid file declares, its sensitivity analysis, and margins.

:func:`primary_analysis` tests each question of the plan (:mod:`lib.analysis_plan`) with the
seed-level t-test (:mod:`lib.seed_tests`) in every (backbone, training mixture, dataset, pool):

| hypothesis       | rows in the question's Holm family, per metric                                   |
|------------------|-----------------------------------------------------------------------------------|
| difference       | per comparator: the two-sided t-test and the TOST equivalence test at the margin |
| superiority      | one one-sided test (several comparators: intersection-union, the largest p)      |
| non-inferiority  | one one-sided test at the margin (several comparators: intersection-union)       |

Holm runs over one question's family in one context, nothing else, so a p_holm does not change
with what else the report holds. Component rows of an intersection-union test are shown but are
not in the family. Verdict words follow the family: ``better`` / ``worse``, ``equivalent within
±m`` (only a TOST row), ``non-inferior within m``; otherwise ``no significant difference``,
``equivalence not shown``, ``superiority not shown``, ``non-inferiority not shown``.
Each row gives its 95% t interval, the 90% interval behind TOST (``tost_low``, ``tost_high``),
``p_resolution`` (the t-tests are exact: no resampling floor) and ``mde``, the smallest
difference (for TOST: the smallest margin) the test detects with 80% power at the unadjusted
level, given the observed seed spread.

:func:`sensitivity_analysis` repeats each family with the two-way bootstrap over seeds and
question ids (:func:`lib.significance.seed_aware_test`, one random stream per test from its name);
:func:`margin_sensitivity` recomputes the non-inferiority and equivalence p-values over a range
of margins.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lib.analysis_plan import AnalysisPlan, Question, direction
from lib.seed_tests import intersection_union
from lib.significance import (bootstrap_one_sided, holm, p_value_floor, seed_aware_test,
                              seed_cluster_tables, stable_seed, two_way_bootstrap)
from lib.systems_report import _per_query, comparison_contexts, system_estimate

PRIMARY_TITLE = "Primary (confirmatory) analysis: the grid file's questions, seed-level t-tests, Holm per question"
SENSITIVITY_TITLE = "Sensitivity analysis: the same families with the two-way bootstrap (seeds x question ids)"
MARGIN_TITLE = "Sensitivity to the margin: p-values of the non-inferiority and equivalence tests"
POWER = 0.8
PRIMARY_COLUMNS = ["question", "hypothesis", "test", "in_family", "backbone", "train_sources", "dataset", "setting",
                   "metric", "a", "b", "design", "seeds_a", "seeds_b", "mean_a", "mean_b", "delta", "se", "df",
                   "ci_low", "ci_high", "margin", "tost_low", "tost_high", "p_value", "p_resolution", "p_holm", "mde",
                   "verdict"]
FAILED = {"difference": "no significant difference", "equivalence": "equivalence not shown",
          "superiority": "superiority not shown", "non-inferiority": "non-inferiority not shown"}


def _test_row(question: Question, test: str, metric: str, a: str, b: str, estimate, margin: float,
              alpha: float) -> dict:
    """One primary row of ``test`` (difference | equivalence | superiority | non-inferiority)."""
    sign = direction(metric)
    low, high = estimate.interval(0.95)
    tost_p, tost_low, tost_high = estimate.tost(margin, alpha) if margin > 0 else (math.nan, math.nan, math.nan)
    p = {"difference": estimate.p_difference, "equivalence": lambda: tost_p,
         "superiority": lambda: estimate.p_superiority(sign),
         "non-inferiority": lambda: estimate.p_non_inferiority(margin, sign)}[test]()
    mde = (estimate.minimum_equivalence_margin(alpha, POWER) if test == "equivalence" else
           estimate.minimum_detectable_effect(alpha, POWER, sides=2 if test == "difference" else 1))
    setting, name = metric.split(" ", 1)
    return {"question": question.name, "hypothesis": question.hypothesis, "test": test, "in_family": True,
            "setting": setting, "metric": name, "a": a, "b": b, "seeds_a": estimate.n_a, "seeds_b": estimate.n_b,
            **{k: v for k, v in estimate.as_dict().items() if k not in ("n_a", "n_b")},
            "ci_low": low, "ci_high": high, "margin": margin, "tost_low": tost_low, "tost_high": tost_high,
            "p_value": p, "p_resolution": f"exact (t, df {estimate.df:.2f})", "mde": mde}


def _question_rows(question: Question, members: pd.DataFrame, alpha: float) -> list[dict]:
    """The rows of one question in one context."""
    rows = []
    for metric in question.metrics:
        components = []
        for b in question.b:
            estimate = system_estimate(members, question.a, b, metric)
            if estimate is None or not estimate.testable:
                continue
            margin = (question.margin(metric, estimate.mean_a, estimate.mean_b)
                      if question.hypothesis != "superiority" else 0.0)
            if question.hypothesis == "difference":
                rows += [_test_row(question, t, metric, question.a, b, estimate, margin, alpha)
                         for t in ("difference", "equivalence")]
            else:
                components.append(_test_row(question, question.hypothesis, metric, question.a, b, estimate, margin,
                                            alpha))
        if len(components) == len(question.b) and len(components) > 1:
            binding = max(components, key=lambda r: r["p_value"])
            combined = {**binding, "b": " and ".join(question.b), "design": "intersection-union",
                        "p_value": intersection_union([r["p_value"] for r in components])}
            rows += [{**r, "in_family": False, "test": f"{r['test']} (component)"} for r in components] + [combined]
        elif len(components) == len(question.b):
            rows += components
    return rows


def _holm_family(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """p_holm within each (question, context) over its in-family rows, and the verdict words."""
    table = table.copy()
    table["p_holm"] = np.nan
    keys = ["question", "backbone", "train_sources", "dataset"]
    for _, group in table[table.in_family].groupby(keys, sort=False):
        table.loc[group.index, "p_holm"] = holm(group.p_value.to_numpy())
    table["verdict"] = [_verdict(r, alpha) for r in table.to_dict(orient="records")]
    return table


def _verdict(row: dict, alpha: float) -> str:
    if not row["in_family"]:
        return "(component of the intersection-union test)"
    test = row["test"]
    if not row["p_holm"] < alpha:
        return FAILED[test]
    if test == "difference":
        return "better" if direction(row["metric"]) * row["delta"] > 0 else "worse"
    if test == "equivalence":
        return f"equivalent within ±{row['margin']:.3g}"
    return "better" if test == "superiority" else f"non-inferior within {row['margin']:.3g}"


def primary_analysis(results: pd.DataFrame, plan: AnalysisPlan | None) -> pd.DataFrame:
    """The plan's families tested on the grid's rows (``lib.gather``); empty without a plan or runs."""
    rows = []
    if plan is not None:
        for context, members in comparison_contexts(results):
            for question in plan.questions:
                rows += [{**context, **row} for row in _question_rows(question, members, plan.alpha)]
    if not rows:
        return pd.DataFrame(columns=PRIMARY_COLUMNS)
    return _holm_family(pd.DataFrame(rows), plan.alpha)[PRIMARY_COLUMNS]


def primary_comparisons(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(a, b, "setting metric")`` of every primary row: the exploratory table leaves these out."""
    if table is None or table.empty:
        return []
    components = table[~table.b.str.contains(" and ")]
    return [(r.a, r.b, f"{r.setting} {r.metric}") for r in components.itertuples()]


SENSITIVITY_COLUMNS = ["question", "test", "in_family", "backbone", "train_sources", "dataset", "setting", "metric",
                       "a", "b", "delta", "ci_low", "ci_high", "margin", "tost_low", "tost_high", "p_value", "p_floor",
                       "p_resolution", "p_holm", "verdict", "resamples", "seed"]


def _bootstrap_row(row: dict, members: pd.DataFrame, resamples: int, base_seed: int, alpha: float) -> dict:
    """The two-way bootstrap version of one primary component row (never an intersection-union row)."""
    runs = members.groupby("system", sort=False).eval_run.apply(list).to_dict()
    metric, setting = row["metric"], row["setting"]
    table_a, table_b, _ = seed_cluster_tables(_per_query(runs[row["a"]]), _per_query(runs[row["b"]]),
                                              metric=metric, setting=setting)
    name = f"{row['question']}|{row['test']}|{row['dataset']}|{setting} {metric}|{row['a']}|{row['b']}"
    seed = stable_seed(name, base_seed)
    replicates = two_way_bootstrap(table_a, table_b, resamples=resamples, seed=seed)
    result = seed_aware_test(table_a, table_b, metric=metric, margin=row["margin"] or None, resamples=resamples,
                             seed=seed, alpha=alpha)
    sign, test = direction(f"{setting} {metric}"), row["test"].replace(" (component)", "")
    p = {"difference": result.p_value,
         "equivalence": result.p_equivalence,
         "superiority": bootstrap_one_sided(replicates, 0.0, sign),
         "non-inferiority": bootstrap_one_sided(replicates, row["margin"], sign)}[test]
    floor = p_value_floor(resamples, two_sided_bootstrap=test == "difference")
    return {**{k: row[k] for k in ("question", "test", "in_family", "backbone", "train_sources", "dataset",
                                   "setting", "metric", "a", "b", "margin")},
            "delta": result.delta, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "tost_low": result.equivalence_ci_low, "tost_high": result.equivalence_ci_high, "p_value": p,
            "p_floor": floor, "p_resolution": f"bootstrap floor {floor:.2g}", "resamples": resamples, "seed": seed}


def sensitivity_analysis(results: pd.DataFrame, plan: AnalysisPlan | None, primary: pd.DataFrame,
                         resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """The primary families again, each p-value from the two-way bootstrap (per-query tables)."""
    if plan is None or primary is None or primary.empty:
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    rows = []
    contexts = {(c["backbone"], c["train_sources"], c["dataset"]): m for c, m in comparison_contexts(results)}
    for row in primary.to_dict(orient="records"):
        if row["design"] == "intersection-union":
            continue
        members = contexts[(row["backbone"], row["train_sources"], row["dataset"])]
        rows.append(_bootstrap_row(row, members, resamples, seed, plan.alpha))
    for row in primary[primary.design == "intersection-union"].to_dict(orient="records"):
        parts = [r for r in rows if r["question"] == row["question"] and r["dataset"] == row["dataset"]
                 and r["metric"] == row["metric"] and r["setting"] == row["setting"] and not r["in_family"]]
        binding = max(parts, key=lambda r: r["p_value"])
        rows.append({**binding, "b": row["b"], "in_family": True, "test": row["test"],
                     "p_value": intersection_union([r["p_value"] for r in parts])})
    table = _holm_family(pd.DataFrame(rows), plan.alpha)
    return table[SENSITIVITY_COLUMNS]


MARGINS = {"map": (0.0025, 0.005, 0.01, 0.02), "rank_distance": ("0.5%", "1%", "2%", "5%")}


def margin_sensitivity(results: pd.DataFrame, plan: AnalysisPlan | None) -> pd.DataFrame:
    """Per non-inferiority or difference question, metric and margin of ``MARGINS``: the in-family
    p-value (non-inferiority or TOST), its Holm value within the question at that margin, the verdict."""
    if plan is None:
        return pd.DataFrame()
    tables = []
    for question in plan.questions:
        if question.hypothesis == "superiority":
            continue
        for index in range(len(MARGINS["map"])):
            margins = {k: v[index] for k, v in MARGINS.items()}
            varied = Question(question.name, question.hypothesis, question.a, question.b, question.metrics,
                              {**question.margins, **margins})
            table = primary_analysis(results, AnalysisPlan((varied,), plan.alpha))
            table = table[table.in_family & table.test.isin(["non-inferiority", "equivalence"])]
            tables.append(table.assign(margin_rule=[str(margins.get(m, "")) for m in table.metric]))
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    return table[["question", "dataset", "setting", "metric", "a", "b", "margin_rule", "margin", "delta", "p_value",
                  "p_holm", "verdict"]]
