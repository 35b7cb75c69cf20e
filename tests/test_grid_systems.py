"""The grid's systems beyond the samplers: debias variants, WiSE-FT and soup jobs, their report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.grid import run_grid
from lib.grid_plan import GridError, cell_table, load_grid, plan_jobs
from lib.grid_systems import MERGE_JOB
from lib.io import outputs_dir, read_json
from lib.naming import debias_run_name, debias_system_name, soup_run_name, wise_ft_run_name
from lib.systems_report import comparison_pairs, exploratory_comparisons, tradeoff_figure, tradeoff_table, verdict
from tests.test_grid import FakeExecutor, write_grid

SYSTEMS = {"debias": ["none", "center-pool", "center-transductive"], "wise_ft": {"lambdas": [0.5]},
           "soups": [["mono", "cross"]], "samplers": ["mono", "cross", "hybrid"]}


def test_names_of_the_new_systems():
    assert debias_run_name("eval-a", "none") == "eval-a" and debias_run_name("eval-a", "lir-k1-pool") == "eval-a-lir-k1-pool"
    assert debias_system_name("mono", "center-pool") == "mono + center-pool"
    assert debias_system_name("zero-shot", "center-transductive") == "zero-shot + center-transductive (upper bound)"
    assert wise_ft_run_name("train-x-s0", 0.5) == "wise-l0.5-train-x-s0"
    assert soup_run_name("tiny", ["mono", "cross"], "mlqa-r", 1) == "soup-tiny-mono+cross-mlqa-r-s1"


def test_grid_plans_merges_after_their_training_and_evaluates_every_variant(tmp_path):
    grid = load_grid(write_grid(tmp_path, **SYSTEMS))
    jobs = plan_jobs(grid)
    merges = [j for j in jobs if j.kind == "merge"]
    # WiSE-FT of every training run (2 seeds x 3 samplers) and one soup per seed
    assert len(merges) == 8 and all(j.notebook == MERGE_JOB for j in merges)
    position = {j.run: i for i, j in enumerate(jobs)}
    for job in merges:
        assert job.needs and all(position[n] < position[job.run] for n in job.needs)
        evaluation = next(j for j in jobs if j.kind == "evaluate" and j.needs == (job.run,))
        assert evaluation.parameters["backbone"].endswith(f"{job.run}/model")
    soup = next(j for j in merges if j.parameters["method"] == "soup" and j.cell.seed == 1)
    assert soup.needs == ("train-tiny-mono-mlqa-r-s1", "train-tiny-cross-mlqa-r-s1")
    wise = next(j for j in merges if j.run == "wise-l0.5-train-tiny-hybrid-a0.5-mlqa-r-s0")
    assert wise.parameters["zero_shot"] == "tiny" and wise.parameters["lam"] == 0.5
    assert all(j.parameters["debias"] == "none,center-pool,center-transductive" for j in jobs if j.kind == "evaluate")
    table = cell_table(grid)
    assert len(table) == 3 * len([j for j in jobs if j.kind == "evaluate"])
    row = table[(table.eval_run == "eval-soup-tiny-mono+cross-mlqa-r-s0-xquad-r-center-pool")].iloc[0]
    assert row.system == "soup mono+cross + center-pool" and row.base_system == "soup mono+cross"
    assert row.method == "soup" and not row.transductive
    assert set(table[table.method == "wise-ft"].base_system) == {"mono WiSE-FT 0.5", "cross WiSE-FT 0.5",
                                                                   "hybrid a=0.5 WiSE-FT 0.5"}


@pytest.mark.parametrize("change, message", [
    ({"debias": ["centre"]}, "debias"),
    ({"wise_ft": {"lambdas": [1.0]}}, "lambda"),
    ({"wise_ft": {"lambdas": [0.5], "samplers": ["en"]}}, "not samplers of the grid"),
    ({"soups": [["mono", "en"]]}, "soups entry"),
])
def test_bad_system_keys_are_refused(tmp_path, change, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path, **change))


def test_merge_jobs_run_in_process_and_the_rest_through_the_executor(tmp_path, monkeypatch):
    import lib.grid

    built = []
    monkeypatch.setattr(lib.grid, "build_weight_system", lambda run, parameters, force=False: built.append(run))
    grid = load_grid(write_grid(tmp_path, **SYSTEMS))
    fake = FakeExecutor()
    run_grid(grid, execute=fake)
    assert len(built) == 8 and not set(built) & set(fake.executed)
    assert "soup-tiny-mono+cross-mlqa-r-s0" in built


def test_weight_system_run_writes_a_loadable_model(tiny_model, tmp_path):
    from lib.backbones import load_model
    from lib.checkpoint import save_model
    from lib.weight_systems import build_weight_system

    source = save_model(tiny_model, outputs_dir() / "train-a" / "model", {**tiny_model.backbone.as_dict(),
                                                                          "name": "a", "source": "path"})
    path = build_weight_system("wise-l0.5-train-a", {"method": "wise-ft", "lam": 0.5, "zero_shot": "tiny",
                                                     "models": [str(source)], "model_folder": "model"})
    assert read_json(path / "config.json")["method"] == "wise-ft" and (path / "metrics.json").is_file()
    merged = load_model(str(path / "model"), device="cpu")
    for name, tensor in merged.state_dict().items():   # wise-ft of a model with itself is the model
        assert np.allclose(tensor.numpy(), tiny_model.state_dict()[name].numpy(), atol=1e-6), name
    with pytest.raises(ValueError, match="do not exist"):
        build_weight_system("soup-x", {"method": "soup", "models": [str(tmp_path / "none")]})


# ---------------------------------------------------------------------------- the report


def _per_query(level: float, qids: int = 40, seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for setting in ("mono", "cross", "multi"):
        for qid in range(qids):
            for lang in ("de", "en"):
                value = float(np.clip(level + noise * rng.standard_normal(), 0, 1))
                rows.append({"setting": setting, "query_lang": lang, "target_lang": lang if setting == "mono" else
                             ("all" if setting == "multi" else ("en" if lang == "de" else "de")), "qid": qid,
                             "map": value, "rank_distance": 100 * (1 - value) if setting == "multi" else np.nan})
    return pd.DataFrame(rows)


def _results(levels: dict[tuple[str, str, str], float]) -> pd.DataFrame:
    """Result rows with per-query tables in outputs/: (base system, method, debias) -> level; 2 seeds
    for trained systems, 1 for zero-shot."""
    rows = []
    for (base, method, debias), level in levels.items():
        seeds = [None] if method == "zero-shot" else [0, 1]
        for seed in seeds:
            run = f"r-{base}-{debias}-{seed}".replace(" ", "_").replace("+", "p")
            frame = _per_query(level, seed=0 if seed is None else seed + 1)
            (outputs_dir() / run).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(outputs_dir() / run / "per_query.parquet")
            means = frame.groupby("setting")["map"].mean()
            rows.append({"backbone": "tiny", "dataset": "xquad-r", "n_candidates": 80, "status": "complete",
                         "train_sources": None if method == "zero-shot" else "mlqa-r", "seed": seed,
                         "sampler": "zero-shot" if method == "zero-shot" else base, "method": method,
                         "base_system": base, "debias": debias, "system": debias_system_name(base, debias),
                         "transductive": debias.endswith("transductive"), "eval_run": run,
                         **{f"{s} map": means[s] for s in means.index},
                         "multi rank_distance": frame["rank_distance"].mean()})
    return pd.DataFrame(rows)


LEVELS = {("zero-shot", "zero-shot", "none"): 0.40, ("zero-shot", "zero-shot", "center-pool"): 0.60,
          ("zero-shot", "zero-shot", "center-transductive"): 0.61,
          ("mono", "sampler", "none"): 0.50, ("cross", "sampler", "none"): 0.55,
          ("hybrid a=0.5", "sampler", "none"): 0.70, ("hybrid a=0.5", "sampler", "center-pool"): 0.70,
          ("hybrid a=0.5", "sampler", "center-transductive"): 0.72,
          ("hybrid a=0.5 WiSE-FT 0.5", "wise-ft", "none"): 0.65, ("soup mono+cross", "soup", "none"): 0.56}


def test_exploratory_comparisons_answer_each_question_with_seed_level_tests():
    results = _results(LEVELS)
    table = exploratory_comparisons(results)
    questions = set(table.question)
    assert questions == {"hybrid vs each pure sampler", "hybrid vs zero-shot + centering (no training)",
                         "hybrid vs the soup (weight-space mix)", "what debiasing adds", "what WiSE-FT adds"}
    # transductive variants are never tested; no comparator picked from the data
    assert not table.a.str.contains("transductive").any() and not table.b.str.contains("transductive").any()
    samplers = table[table.question == "hybrid vs each pure sampler"]
    assert set(samplers.b) == {"mono", "cross"} and set(samplers.design) == {"welch"}
    assert set(samplers.verdict) == {"better"}                   # rank distance: lower is better, too
    competitor = table[table.question.str.contains("no training")]
    assert set(competitor.b) == {"zero-shot + center-pool"} and set(competitor.design) == {"one-sample"}
    wise = table[table.question == "what WiSE-FT adds"]
    assert set(wise.b) == {"hybrid a=0.5"} and set(wise.design) == {"paired"} and set(wise.df) == {1.0}
    # the same level: an exploratory test never claims equivalence
    same = table[table.question == "what debiasing adds"]
    assert set(same.verdict) == {"no significant difference"} and set(same.design) == {"paired"}
    assert (table.p_holm >= table.p_value - 1e-12).all()
    # left out when the primary analysis declares it
    left = exploratory_comparisons(results, exclude=[("hybrid a=0.5", "mono", "multi map")])
    assert len(left) == len(table) - 1


def test_verdict_words():
    assert verdict(0.01, 0.001, "map") == "better"
    assert verdict(0.01, 0.001, "rank_distance") == "worse"
    assert verdict(0.001, 0.5, "map") == "no significant difference"


def test_tradeoff_table_and_figure_have_one_point_per_system():
    results = _results(LEVELS)
    table = tradeoff_table(results)
    assert len(table) == len(LEVELS) and set(table.seeds) == {1, 2}
    assert (table["mono map min"] <= table["mono map mean"]).all() and (table["mono map mean"] <= table["mono map max"]).all()
    figure = tradeoff_figure(results)
    assert len(figure.axes[0].lines) + len(figure.axes[0].collections) > 0


def test_comparison_pairs_need_their_systems():
    systems = pd.DataFrame([{"system": "mono", "base_system": "mono", "method": "sampler", "debias": "none",
                             "transductive": False, "train_sources": "mlqa-r"}])
    assert comparison_pairs(systems) == []


def test_an_evaluation_made_before_debias_is_not_reused_without_its_variants(tmp_path):
    run_grid(load_grid(write_grid(tmp_path)), execute=FakeExecutor())          # no debias key: none only
    with pytest.raises(GridError, match="debias: grid 'none,center-pool' vs run 'none'"):
        run_grid(load_grid(write_grid(tmp_path, debias=["center-pool"])), execute=FakeExecutor())
