"""The primary analysis: declared in grid files (lib.analysis_plan), tested per question
(lib.analysis_report), its sensitivity analysis, and the preregistered confirmatory family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from lib.analysis_plan import AnalysisPlan, Question, parse_analysis
from lib.analysis_report import margin_sensitivity, primary_analysis, primary_comparisons, sensitivity_analysis
from lib.grid_plan import GridError, load_grid
from lib.naming import debias_system_name
from lib.seed_tests import seed_level_estimate
from tests.test_grid_systems import LEVELS, _results

NON_INFERIORITY = Question("claim", "non-inferiority", "hybrid", ("mono", "cross"), ("multi map", "multi rank_distance"),
                           {"map": 0.005, "rank_distance": "1%"})
COMPETITOR = Question("competitor", "difference", "hybrid", ("zero-shot + center-pool",), ("multi map",),
                      {"map": 0.005})
WISE = Question("wise", "difference", "hybrid WiSE-FT 0.5", ("hybrid",), ("mono map",), {"map": 0.005})


def rows(values: dict[str, list[float]], rank: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Result rows of one context: system -> per-seed multi mAP (one value: an untrained run)."""
    out = []
    for system, seeds in values.items():
        zero_shot = system.startswith("zero-shot")
        base, _, variant = system.partition(" + ")
        for seed, value in enumerate(seeds):
            out.append({"backbone": "b", "dataset": "xquad-r", "n_candidates": 10, "status": "complete",
                        "train_sources": None if zero_shot else "mlqa-r", "seed": None if zero_shot else seed,
                        "sampler": "zero-shot" if zero_shot else base.split(" ")[0], "system": system,
                        "base_system": base, "debias": variant or "none",
                        "method": "zero-shot" if zero_shot else ("wise-ft" if "WiSE-FT" in base else "sampler"),
                        "multi map": value, "mono map": value + 0.2,
                        "multi rank_distance": (rank or {}).get(system, [400.0] * len(seeds))[seed],
                        "eval_run": f"r-{system}-{seed}"})
    return pd.DataFrame(out)


VALUES = {"mono": [0.520, 0.530, 0.515, 0.525, 0.528], "cross": [0.541, 0.543, 0.542, 0.544, 0.540],
          "hybrid": [0.542, 0.539, 0.545, 0.541, 0.543], "hybrid WiSE-FT 0.5": [0.512, 0.509, 0.516, 0.510, 0.514],
          "zero-shot + center-pool": [0.537]}


def test_non_inferiority_to_both_is_one_intersection_union_test_per_metric():
    table = primary_analysis(rows(VALUES), AnalysisPlan((NON_INFERIORITY,)))
    family = table[table.in_family]
    assert len(family) == 2 and set(family.design) == {"intersection-union"} and set(family.b) == {"mono and cross"}
    multi = table[table.metric == "map"]
    components = multi[~multi.in_family]
    expected = [seed_level_estimate(VALUES["hybrid"], VALUES[b]).p_non_inferiority(0.005) for b in ("mono", "cross")]
    assert components.p_value.tolist() == pytest.approx(expected)
    assert multi[multi.in_family].p_value.item() == pytest.approx(max(expected))
    assert set(components.verdict) == {"(component of the intersection-union test)"}
    # rank distance: lower is better, margin 1% of the better (lower) mean
    rank = table[(table.metric == "rank_distance") & table.in_family]
    assert rank.margin.item() == pytest.approx(4.0) and rank.p_holm.item() >= rank.p_value.item()


def test_holm_family_is_the_question_not_the_report():
    alone = primary_analysis(rows(VALUES), AnalysisPlan((COMPETITOR,)))
    together = primary_analysis(rows(VALUES), AnalysisPlan((NON_INFERIORITY, COMPETITOR, WISE)))
    mine = together[together.question == "competitor"]
    assert mine.p_holm.tolist() == pytest.approx(alone.p_holm.tolist())
    assert list(alone.test) == ["difference", "equivalence"]              # TOST is in the family
    assert alone.p_holm.max() == pytest.approx(min(1, 2 * alone.p_value.max())) or alone.p_holm.max() <= 1


def test_designs_pairing_and_the_90_percent_interval():
    table = primary_analysis(rows(VALUES), AnalysisPlan((COMPETITOR, WISE)))
    competitor = table[table.question == "competitor"].iloc[0]
    assert competitor.design == "one-sample" and competitor.df == 4
    wise = table[table.question == "wise"].iloc[0]
    assert wise.design == "paired"                         # WiSE-FT of a model against the model: same seeds
    expected = seed_level_estimate(VALUES["hybrid WiSE-FT 0.5"], VALUES["hybrid"], paired=True)
    assert wise.p_value == pytest.approx(expected.p_difference()) and wise.verdict == "worse"
    equivalence = table[(table.question == "competitor") & (table.test == "equivalence")].iloc[0]
    assert (equivalence.tost_low, equivalence.tost_high) == pytest.approx(
        seed_level_estimate(VALUES["hybrid"], VALUES["zero-shot + center-pool"]).interval(0.90))
    assert equivalence.p_resolution.startswith("exact (t, df 4")
    assert equivalence.mde > 0 and table.mde.notna().all()


def test_equivalent_only_where_the_tost_in_the_family_shows_it():
    close = {"hybrid": [0.5400, 0.5401, 0.5399, 0.5400, 0.5401], "zero-shot + center-pool": [0.5400]}
    table = primary_analysis(rows(close), AnalysisPlan((COMPETITOR,))).set_index("test")
    assert table.loc["equivalence", "verdict"] == "equivalent within ±0.005"
    assert table.loc["difference", "verdict"] == "no significant difference"
    wide = {"hybrid": [0.53, 0.55, 0.52, 0.56, 0.54], "zero-shot + center-pool": [0.5400]}
    table = primary_analysis(rows(wide), AnalysisPlan((COMPETITOR,))).set_index("test")
    assert table.loc["equivalence", "verdict"] == "equivalence not shown"
    assert not any("match" in v or "same" in v for v in table.verdict)
    assert primary_comparisons(table.reset_index()) == [("hybrid", "zero-shot + center-pool", "multi map")] * 2


def test_margin_sensitivity_varies_the_margin_only():
    table = margin_sensitivity(rows(VALUES), AnalysisPlan((COMPETITOR,)))
    assert table.margin.tolist() == [0.0025, 0.005, 0.01, 0.02]
    assert table.p_value.is_monotonic_decreasing


def test_sensitivity_repeats_the_family_with_the_two_way_bootstrap_and_its_own_streams():
    results = _results(LEVELS)
    question = Question("competitor", "difference", "hybrid a=0.5", ("zero-shot + center-pool",),
                        ("multi map", "mono map"), {"map": 0.005})
    plan = AnalysisPlan((question,))
    primary = primary_analysis(results, plan)
    table = sensitivity_analysis(results, plan, primary, resamples=300, seed=0)
    assert len(table) == len(primary) == 4 and table.seed.nunique() == 4         # one stream per test
    assert np.isclose(table.p_floor, 2 / 301).sum() == 2                        # two-sided difference rows
    assert table.delta.tolist() == pytest.approx(primary.delta.tolist())
    again = sensitivity_analysis(results, plan, primary, resamples=300, seed=0)
    assert again.p_value.tolist() == table.p_value.tolist()


def test_grid_files_declare_their_primary_analysis():
    grid = load_grid("grid")
    assert grid.seeds == [0, 1, 2, 3, 4] and grid.analysis.alpha == 0.05
    claim, competitor = grid.analysis.questions
    assert claim.hypothesis == "non-inferiority" and claim.b == ("mono", "cross") and claim.a == "hybrid a=0.5"
    assert competitor.b == (debias_system_name("zero-shot", "center-pool"),)
    assert len(load_grid("grid-weights").analysis.questions) == 3
    smoke = load_grid("grid-smoke").analysis                 # the smoke profile covers the keys
    assert [q.hypothesis for q in smoke.questions] == ["non-inferiority", "difference"]


def test_the_preregistered_family_parses_and_the_report_picks_it_up():
    grid = load_grid("grid-confirm")
    plan = grid.analysis
    assert plan.seeds == (100, 101, 102, 103, 104) and plan.source == "params/preregistered.yaml"
    (question,) = plan.questions
    assert question.hypothesis == "superiority" and question.metrics == ("cross map", "multi map")
    with open(grid.source.replace("grid-confirm", "preregistered"), encoding="utf-8") as handle:
        assert len(yaml.safe_load(handle)["hypotheses"]) == 2
    used = {s for name in ("grid", "grid-weights", "grid-main", "grid-smoke") for s in load_grid(name).seeds}
    assert not used & set(plan.seeds)                      # never used before
    # the confirmatory grid's systems, named as the grid names them, give exactly the family
    a = "hybrid a=0.5 WiSE-FT 0.5 + center-pool"
    values = {a: [0.57, 0.572, 0.569, 0.571, 0.57], "hybrid a=0.5 WiSE-FT 0.5": [0.51] * 5,
              "zero-shot + center-pool": [0.537]}
    frame = rows(values).assign(**{"cross map": lambda f: f["multi map"] + 0.1})
    table = primary_analysis(frame, plan)
    assert len(table) == 2 and table.in_family.all() and set(table.design) == {"one-sample"}
    assert set(table.verdict) == {"better"} and set(table.metric) == {"map"}
    assert table.p_holm.max() == pytest.approx(min(1, max(table.p_value.max(), 2 * table.p_value.min())))


@pytest.mark.parametrize("analysis, message", [
    ({"questions": [{"name": "q", "hypothesis": "better", "a": "x", "b": "y", "metrics": ["multi map"]}]},
     "hypothesis 'better'"),
    ({"questions": [{"name": "q", "hypothesis": "difference", "a": "x", "b": "y", "metrics": ["multi ndcg"]}]},
     "no margin for 'ndcg'"),
    ({"questions": [{"name": "q", "hypothesis": "difference", "a": "x", "b": "y", "metrics": ["map"]}]},
     "must be '<setting> <metric>'"),
    ({"margins": {"map": -1}, "questions": []}, "margin -1"),
    ({"alpha": 0.7, "questions": []}, "alpha must lie in"),
    ({"preregistered": "params/nothing.yaml"}, "nothing.yaml not found"),
])
def test_bad_analysis_sections_are_refused_before_anything_runs(tmp_path, analysis, message):
    with open("params/grid-smoke.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**raw, "analysis": analysis}))
    with pytest.raises(GridError, match=message):
        load_grid(path)


def test_a_grid_must_run_the_preregistered_seeds(tmp_path):
    with open("params/grid-confirm.yaml", encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**raw, "seeds": [0, 1, 2, 3, 4]}))
    with pytest.raises(GridError, match="differ from the preregistered seeds"):
        load_grid(path)
    assert parse_analysis(None) is None and np.isnan(np.nan)


def test_the_report_shows_primary_sensitivity_and_exploratory_separately(tmp_path):
    from lib.report import PRIMARY_SHOWN, Report, analysis_tables, write_report

    results = _results(LEVELS)
    plan = AnalysisPlan((Question("competitor", "difference", "hybrid a=0.5", ("zero-shot + center-pool",),
                                  ("multi map",), {"map": 0.005}),))
    tables, (primary, sensitivity, margins, extended) = analysis_tables(results, plan, resamples=200)
    titles = list(tables)
    assert [t.split(":")[0] for t in titles] == ["Primary (confirmatory) analysis", "Sensitivity analysis",
                                                 "Sensitivity to the margin", "Exploratory comparisons (not in the primary analysis; seeds as the unit, two-sided)"]
    assert list(tables[titles[0]].columns) == PRIMARY_SHOWN
    # what the primary analysis declares is not repeated as exploratory
    assert not ((extended.a == "hybrid a=0.5") & (extended.b == "zero-shot + center-pool")
                & (extended.setting == "multi") & (extended.metric == "map")).any()
    report = Report("g", results, pd.DataFrame(), tables, pd.DataFrame(), [], extended, {}, primary, sensitivity,
                    margins)
    write_report(tmp_path / "report", report)
    text = (tmp_path / "report" / "report.md").read_text()
    positions = [text.index(f"## {t}") for t in titles]
    assert positions == sorted(positions) and "Confirmatory" in text and "Exploratory:" in text
    assert "hierarchical" not in text.lower() and "matches" not in text
    written = pd.read_csv(tmp_path / "report" / "primary.csv")
    assert {"tost_low", "tost_high", "p_resolution", "mde"} <= set(written.columns)
    assert (tmp_path / "report" / "sensitivity.csv").is_file() and (tmp_path / "report" / "exploratory.csv").is_file()
