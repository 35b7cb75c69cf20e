"""Budget grids (``budgets:`` in a grid file, lib.grid_plan) and their curves, also against alpha (lib.report_curves)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from lib.grid_plan import GridError, expand_cells, load_grid, plan_jobs
from lib.report_curves import alpha_table, budget_figure, budget_table, curve_figures, curve_name, reference_lines

matplotlib.use("Agg")


def _grid(tmp_path, text: str):
    path = tmp_path / "grid-b.yaml"
    path.write_text(text)
    return load_grid(path)


BASE = """name: grid-b
backbones: [tiny]
samplers: [mono, hybrid]
seeds: [0, 1]
alphas: [0.5]
train_datasets: [mlqa-r]
eval_datasets: [xquad-r]
train: {batch_size: 8}
"""


def test_budgets_make_one_training_per_budget_with_its_steps_and_names(tmp_path):
    grid = _grid(tmp_path, BASE + "budgets: [4, 16]\nwise_ft: {lambdas: [0.5], samplers: [hybrid]}\n"
                                  "soups: [[mono, hybrid]]\n")
    trains = [j for j in plan_jobs(grid) if j.kind == "train"]
    assert len(trains) == 2 * 2 * 2                                    # budgets x seeds x samplers
    steps = {j.run: j.parameters["steps"] for j in trains}
    assert steps["train-tiny-hybrid-a0.5-mlqa-r-s1-b16"] == 16
    assert steps["train-tiny-mono-mlqa-r-s0-b4"] == 4
    cells = expand_cells(grid)
    systems = {c.system for c in cells}
    assert {"mono @4", "hybrid a=0.5 @16", "hybrid a=0.5 @4 WiSE-FT 0.5", "soup mono+hybrid @16"} <= systems
    soups = [c for c in cells if c.method == "soup"]
    assert len(soups) == 4                                              # per seed and budget, never across
    assert all(len({m.rsplit("-", 1)[1] for m in c.merged}) == 1 for c in soups)
    assert {c.budget for c in cells if c.train_run} == {4, 16}


def test_a_grid_without_budgets_keeps_its_run_names(tmp_path):
    grid = _grid(tmp_path, BASE + "train: {batch_size: 8, steps: 5}\n".replace("train: {batch_size: 8}\n", ""))
    runs = [j.run for j in plan_jobs(grid) if j.kind == "train"]
    assert "train-tiny-hybrid-a0.5-mlqa-r-s0" in runs and not any("-b" in r.rsplit("-s", 1)[1] for r in runs)


@pytest.mark.parametrize("extra, message", [
    ("budgets: [0, 4]\n", "distinct positive step counts"),
    ("budgets: [4, 4]\n", "distinct positive step counts"),
    ("budgets: [four]\n", "distinct positive step counts"),
])
def test_bad_budgets_are_refused(tmp_path, extra, message):
    with pytest.raises(GridError, match=message):
        _grid(tmp_path, BASE + extra)


def test_budgets_and_train_steps_together_are_refused(tmp_path):
    text = BASE.replace("train: {batch_size: 8}", "train: {batch_size: 8, steps: 10}") + "budgets: [4]\n"
    with pytest.raises(GridError, match="train.steps and budgets both set the steps"):
        _grid(tmp_path, text)


@pytest.mark.parametrize("name", ["grid-budget", "grid-alpha", "grid-budget-smoke"])
def test_the_committed_budget_and_alpha_grids_plan(name):
    grid = load_grid(name)
    trains = [j for j in plan_jobs(grid) if j.kind == "train"]
    assert trains and all(j.parameters["patience"] == 0 for j in trains)
    if name == "grid-alpha":
        assert sorted({j.parameters["alpha"] for j in trains}) == [0, 0.25, 0.4, 0.5, 0.6, 0.75, 1]
    else:
        assert len({j.parameters["steps"] for j in trains}) == len(grid.budgets) >= 2


def _results() -> pd.DataFrame:
    rows = []
    for budget, base in [(40, 0.50), (160, 0.60)]:
        for seed, noise in [(0, -0.01), (1, 0.0), (2, 0.01)]:
            for system, shift in [(f"hybrid a=0.5 @{budget}", 0.0), (f"hybrid a=0.5 @{budget} + center-pool", 0.02)]:
                rows.append({"dataset": "xquad-r", "system": system, "seed": seed, "budget": budget, "status": "complete",
                             "train_run": f"train-s{seed}-b{budget}", "multi map": base + shift + noise,
                             "multi rank_distance": 400 - budget / 10})
    rows.append({"dataset": "xquad-r", "system": "zero-shot", "seed": None, "budget": None, "status": "complete",
                 "train_run": None, "multi map": 0.3, "multi rank_distance": 1200.0})
    rows.append({"dataset": "xquad-r", "system": "hybrid a=0.5 @640", "seed": 0, "budget": 640, "status": "missing",
                 "train_run": "x", "multi map": np.nan, "multi rank_distance": np.nan})
    return pd.DataFrame(rows)


def test_budget_table_summarises_seeds_per_curve_and_budget():
    table = budget_table(_results())
    row = table[(table.curve == "hybrid a=0.5 + center-pool") & (table.budget == 160) & (table.metric == "multi map")]
    assert len(row) == 1
    assert row["mean"].item() == pytest.approx(0.62) and row["min"].item() == pytest.approx(0.61)
    assert row["max"].item() == pytest.approx(0.63) and row["n_seeds"].item() == 3
    assert 640 not in set(table.budget)                                  # missing runs are no points
    assert curve_name("hybrid a=0.5 @160 + center-pool") == "hybrid a=0.5 + center-pool"


def test_budget_figure_has_labelled_log_axes_bands_and_references():
    results = _results()
    figure = budget_figure(budget_table(results), reference_lines(results))
    axes = [a for a in figure.axes if a.get_visible()]
    assert [a.get_xscale() for a in axes] == ["log", "log"]
    assert axes[0].get_ylabel() == "multilingual mAP" and axes[0].get_xlabel().startswith("training steps")
    assert len(axes[0].collections) == 2                                 # one seed band per curve
    assert any(line.get_ydata()[0] == pytest.approx(0.3) for line in axes[0].get_lines())   # zero-shot reference
    assert {t.get_text() for t in figure.legends[0].get_texts()} == {"hybrid a=0.5", "hybrid a=0.5 + center-pool"}


def test_no_budget_rows_no_table():
    results = _results().drop(columns=["budget"])
    assert budget_table(results).empty


@pytest.mark.real_data
def test_smoke_budget_grid_runs_and_reports_its_curves(tmp_path, monkeypatch, lareqa_dir):
    import torch

    from lib.grid import run_grid
    from lib.io import outputs_dir
    from tests.test_grid import in_process

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = run_grid(load_grid("grid-budget-smoke"), execute=in_process)
    finally:
        torch.set_num_threads(threads)
    assert set(table.status) == {"done"}
    report = outputs_dir() / "report-budget-smoke"
    budget = pd.read_csv(report / "budget.csv")
    assert set(budget.budget) == {2, 3} and set(budget.curve) == {"hybrid a=0.5", "hybrid a=0.5 + center-pool"}
    assert (budget.n_seeds == 2).all() and budget["mean"].notna().all()
    assert list(curve_figures(pd.read_csv(report / "results.csv"))) == ["budget_xquad-r"]   # the report's figure


def test_alpha_table_and_figure_put_alpha_on_a_linear_axis():
    rows = []
    for alpha in (0.0, 0.5, 1.0):
        for seed in (0, 1):
            for suffix, shift in (("", 0.0), (" + center-pool", 0.01)):
                rows.append({"dataset": "xquad-r", "system": f"hybrid a={alpha:g}{suffix}", "alpha": alpha, "seed": seed,
                             "status": "complete", "train_run": "t", "mono map": 0.7 + alpha / 10 + shift + seed / 100})
    results = pd.DataFrame(rows)
    table = alpha_table(results)
    assert set(table.curve) == {"hybrid", "hybrid + center-pool"} and sorted(set(table.alpha)) == [0.0, 0.5, 1.0]
    row = table[(table.curve == "hybrid") & (table.alpha == 1.0)]
    assert row["mean"].item() == pytest.approx(0.805) and row["n_seeds"].item() == 2
    figures = curve_figures(results)
    assert list(figures) == ["alpha_xquad-r"]
    axis = figures["alpha_xquad-r"].axes[0]
    assert axis.get_xscale() == "linear" and axis.get_xlabel().startswith("alpha")
    assert alpha_table(results[results.alpha == 0.5]).empty                      # one alpha: no curve
