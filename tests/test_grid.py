"""The grid runner: grid files, expansion, run names, skipping, conflicts, failures, end to end."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import yaml

from lib.backbones import available_backbones
from lib.completion import mark_complete
from lib.grid import run_grid
from lib.grid_plan import GridError, cell_table, expand_cells, load_grid, plan_jobs
from lib.notebooks import is_complete, notebook_parameters
from lib.naming import eval_run_name, zero_shot_run_name
from lib.report import build_report, write_report
from lib.io import PROJECT_ROOT, outputs_dir, read_json, run_dir, write_json

PARAMS = PROJECT_ROOT / "params"
NOTEBOOKS = PROJECT_ROOT / "notebooks"


def write_grid(tmp_path: Path, **changes) -> Path:
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono", "hybrid"], "seeds": [0, 1],
            "alphas": [0.5], "train_datasets": ["mlqa-r"], "eval_datasets": ["xquad-r"], "zero_shot": True,
            "train": {"steps": 2, "batch_size": 4}, "evaluate": {"max_questions": 6, "device": "cpu"},
            "report": {"run": "report-g", "resamples": 100}}
    grid.update(changes)
    if "hybrid" not in grid["samplers"] and "alphas" not in changes:
        del grid["alphas"]                      # alphas without a hybrid sampler are refused
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return path


# -------------------------------------------------------------------------------- grid files


def test_weights_grid_is_the_default_plus_wise_ft_and_soups():
    default, weights = (expand_cells(load_grid(PARAMS / f"{name}.yaml")) for name in ("grid", "grid-weights"))
    merged = [c for c in weights if c.merged]
    assert sorted(c.method for c in merged) == ["soup"] * 5 + ["wise-ft"] * 5
    assert {c.eval_runs for c in default} <= {c.eval_runs for c in weights}   # every default run is reused
    assert load_grid(PARAMS / "grid-weights.yaml").report["run"] == "report-weights"


def test_default_grid_expands_to_the_documented_cells():
    grid = load_grid(PARAMS / "grid.yaml")
    cells = expand_cells(grid)
    trained = [c for c in cells if c.train_run and c.method == "sampler"]
    assert len(trained) == 15 and len(cells) == 16 and not [c for c in cells if c.merged]   # 5 seeds (issue 20)
    assert sorted({c.sampler for c in trained}) == ["cross", "hybrid", "mono"]
    assert all(len([c for c in trained if c.sampler == s]) == 5 for s in ("mono", "cross", "hybrid"))
    names = {c.train_run for c in trained}
    assert "train-me5-small-q4-hybrid-a0.5-mlqa-r-s0" in names
    jobs = plan_jobs(grid)
    assert [j.kind for j in jobs].count("evaluate") == 16 and jobs[-1].kind == "report"
    assert all(j.parameters.get("run_depth") == 0 for j in jobs if j.kind == "evaluate")
    assert grid.debias == ["none", "center-pool", "lir-k1-pool", "center-transductive"]
    assert jobs[-1].run == "report" and jobs[-1].parameters["grid"] == "grid"
    # before the report: the samplers side by side in one 05_bias run (zero-shot + first seed of each)
    assert jobs[-2].kind == "bias" and jobs[-2].run == "bias-grid-me5-small-q4-mlqa-r-xquad-r"
    assert jobs[-2].parameters["runs"].split(",") == [
        "zeroshot-me5-small-q4-xquad-r-sentence", *(f"eval-train-me5-small-q4-{s}-mlqa-r-s0-xquad-r"
                                                    for s in ("mono", "cross", "hybrid-a0.5"))]
    assert set(jobs[-2].needs) == set(jobs[-2].parameters["runs"].split(","))
    # the zero-shot evaluation of the first single-seed runs (params/grid-main.yaml): reused
    assert cells[0].eval_runs[0][1] in {r for c in expand_cells(load_grid("grid-main")) for _, r in c.eval_runs}
    assert cells[0].eval_runs == (("xquad-r", "zeroshot-me5-small-q4-xquad-r-sentence"),)


def test_smoke_grid_is_small_and_fast():
    grid = load_grid("grid-smoke")                        # a bare name means params/<name>.yaml
    assert grid.backbones == ["tiny"] and grid.train["steps"] <= 5 and grid.evaluate["max_questions"] <= 20
    assert len([j for j in plan_jobs(grid) if j.kind == "train"]) == 7     # 5 samplers' + 2 distillation runs


def test_paper_grid_configuration():
    grid = load_grid(PARAMS / "grid-paper.yaml")
    assert set(grid.backbones) <= set(available_backbones()) and set(grid.backbones) == {"xlmr-base", "labse-paper"}
    assert grid.train["batch_size"] == 100 and grid.train["learning_rate"] == pytest.approx(3e-5)
    assert set(grid.samplers) == {"en", "mono", "cross", "hybrid"}
    cells = expand_cells(grid)
    assert len(cells) == 2 * (1 + 4 * 3)                  # per backbone: zero-shot + the paper mix x 4 samplers x 3 seeds
    assert grid.train_datasets[0] == {"train": "mmarco,wikiqa,natural-questions,duorc,newsqa,mr-tydi-en,mfaq-en",
                                      "evaluate": ["xquad-r", "mlqa-r", "miracl"]}
    for cell in cells:
        if cell.train_run:                                # never evaluated on what it trained on
            assert not {d for d, _ in cell.eval_runs} & set(cell.train_sources.split(","))
    evaluations = [j for j in plan_jobs(grid) if j.kind == "evaluate" and j.cell.train_run]
    assert all(Path(j.parameters["backbone"]).parts[-2:] == (j.cell.train_run, "model-best") for j in evaluations)
    # the paper evaluates its models on MIRACL: the paper mix's 2 x 4 x 3 models and both zero-shot backbones
    miracl = [j for j in plan_jobs(grid) if j.dataset == "miracl"]
    assert len(miracl) == 2 * (1 + 4 * 3) and {j.kind for j in miracl} == {"evaluate"}
    assert grid.estimate["evaluation_minutes"]["miracl"] > 0


@pytest.mark.parametrize("name", ["grid", "grid-smoke", "grid-paper", "grid-paper-variant"])
def test_grid_parameters_exist_in_the_notebooks(name):
    grid = load_grid(name)
    by_notebook: dict[str, set] = {}
    for job in plan_jobs(grid):
        if job.kind not in ("merge", "translate"):        # modules (lib.weight_systems, lib.sources), not notebooks
            by_notebook.setdefault(job.notebook, set()).update(job.parameters)
    for notebook, names in by_notebook.items():
        if not (NOTEBOOKS / notebook).is_file():
            pytest.skip(f"{notebook} does not exist yet")
        assert names <= notebook_parameters(notebook), notebook


@pytest.mark.parametrize("change, message", [
    ({"backbones": ["no-such-model"]}, "unknown backbone"),
    ({"samplers": ["random"]}, "unknown sampler"),
    ({"eval_datasets": ["mlqa-r"]}, "trains on"),
    ({"train": {"steps": 2, "sampler": "en"}}, "sets per cell"),
    ({"alphas": [1.5]}, r"alpha 1.5"),
    ({"colour": "blue"}, "unknown keys"),
    ({"eval_datasets": ["squad"]}, "unknown evaluation dataset"),
    ({"zero_shot": {"eval_datasets": ["miracl-dev"]}}, "unknown zero-shot evaluation dataset 'miracl-dev'"),
])
def test_bad_grid_files_are_refused(tmp_path, change, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path, **change))


def test_unknown_dataset_names_the_file_the_value_and_the_choices(tmp_path):
    from lib.evaluate import DATASETS

    path = write_grid(tmp_path, eval_datasets=["xquad-r", "squad"])
    with pytest.raises(GridError) as error:
        load_grid(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "'squad'" in message
    assert all(dataset in message for dataset in DATASETS) and "miracl" in DATASETS and "tatoeba" in DATASETS


def test_miracl_evaluations_have_no_bias_jobs_nor_debias_variants(tmp_path):
    """Any registered dataset is evaluated; bias runs, debias variants and the samplers' comparison
    stay LAReQA's (lib.evaluate refuses debias elsewhere)."""
    grid = load_grid(write_grid(tmp_path, eval_datasets=["xquad-r", "miracl"], debias=["none", "center-pool"],
                                evaluate={"max_questions": 6, "device": "cpu", "index": "ivfpq", "languages": "sw"},
                                zero_shot={"candidate_contexts": ["sentence", "paragraph"]}))
    jobs = plan_jobs(grid)
    miracl = [j for j in jobs if j.dataset == "miracl"]
    assert {j.kind for j in miracl} == {"evaluate"}
    assert sorted(j.run for j in miracl) == sorted(
        ["zeroshot-tiny-miracl-sentence"]                # once, whatever LAReQA's candidate contexts
        + [eval_run_name(f"train-tiny-{s}-mlqa-r-s{seed}", "miracl") for s in ("mono", "hybrid-a0.5") for seed in (0, 1)])
    assert all("debias" not in j.parameters and j.parameters["index"] == "ivfpq" for j in miracl)
    xquad = [j for j in jobs if j.kind == "evaluate" and j.dataset == "xquad-r"]
    assert all(j.parameters["debias"] == "none,center-pool" for j in xquad)
    # one per XQuAD-R evaluation (zero-shot on sentences and paragraphs, 4 trained) and the samplers' comparison
    assert len(xquad) == 6 and [j.kind for j in jobs].count("bias") == 6 + 1
    assert {j.dataset for j in jobs if j.kind == "bias"} == {"xquad-r"}
    table = cell_table(grid)
    assert set(table[table.dataset == "miracl"].debias) == {"none"} and table[table.dataset == "miracl"].bias_run.isna().all()
    from lib.grid_plan import check_notebook_parameters

    check_notebook_parameters(grid)                        # index, languages: parameters of 04_evaluate


def test_dry_run_counts_every_evaluated_dataset_download(tmp_path, capsys):
    from lib.grid import main

    main([str(write_grid(tmp_path, eval_datasets=["xquad-r"], zero_shot={"eval_datasets": ["xquad-r", "miracl"]})),
          "--dry-run"])
    out = capsys.readouterr().out
    assert "zeroshot-tiny-miracl-sentence" in out and "1 of unknown size (miracl)" in out


def test_train_section_takes_every_train_config_field(tmp_path):
    """The train section is checked against lib.train.TrainConfig: any field may be set, a typo is refused."""
    from dataclasses import fields

    from lib.train import TrainConfig

    grid = load_grid(write_grid(tmp_path, train={"steps": 2, "patience": 0, "weight_decay": 0.0}))
    job = next(j for j in plan_jobs(grid) if j.kind == "train")
    assert job.parameters["patience"] == 0 and job.parameters["weight_decay"] == 0.0
    assert {"patience", "weight_decay"} <= {f.name for f in fields(TrainConfig)}
    with pytest.raises(GridError, match=r"\['stesp'\], which are not fields of lib.train.TrainConfig"):
        load_grid(write_grid(tmp_path, train={"stesp": 2}))


def test_zero_shot_block_names_datasets_and_candidate_contexts(tmp_path):
    """What params/main.yaml did beside the grid: zero-shot on MLQA-R too, and on paragraph candidates."""
    grid = load_grid(write_grid(tmp_path, zero_shot={"eval_datasets": ["xquad-r", "mlqa-r"],
                                                     "candidate_contexts": ["sentence", "paragraph"]}))
    zero_shot = [c for c in expand_cells(grid) if not c.train_run]
    assert [(c.candidate_context, c.system) for c in zero_shot] == [("sentence", "zero-shot"),
                                                                    ("paragraph", "zero-shot paragraph")]
    evaluations = {j.run: j.parameters["candidate_context"] for j in plan_jobs(grid) if j.kind == "evaluate"}
    assert evaluations["zeroshot-tiny-mlqa-r-paragraph"] == "paragraph"
    assert evaluations["zeroshot-tiny-xquad-r-sentence"] == "sentence"
    assert evaluations[eval_run_name("train-tiny-mono-mlqa-r-s0", "xquad-r")] == "sentence"
    # the samplers side by side: the zero-shot run on the trained cells' candidates only
    comparison = next(j for j in plan_jobs(grid) if j.run == "bias-g-tiny-mlqa-r-xquad-r")
    assert comparison.parameters["runs"].split(",")[0] == "zeroshot-tiny-xquad-r-sentence"
    # zero_shot: true is unchanged: every evaluated dataset, the grid's candidate context
    plain = load_grid(write_grid(tmp_path))
    assert [c.eval_runs for c in expand_cells(plain) if not c.train_run] == [
        (("xquad-r", "zeroshot-tiny-xquad-r-sentence"),)]
    with pytest.raises(GridError, match="candidate context 'page'"):
        load_grid(write_grid(tmp_path, zero_shot={"candidate_contexts": ["page"]}))
    with pytest.raises(GridError, match="zero_shot has unknown keys"):
        load_grid(write_grid(tmp_path, zero_shot={"datasets": ["mlqa-r"]}))


def test_main_grid_reproduces_the_first_single_seed_runs():
    grid = load_grid("grid-main")
    runs = [j.run for j in plan_jobs(grid)]
    assert {f"zeroshot-me5-small-q4-{d}-{c}" for d in ("xquad-r", "mlqa-r") for c in ("sentence", "paragraph")} <= set(runs)
    trained = [c for c in expand_cells(grid) if c.train_run]
    assert [c.system for c in trained] == ["mono", "cross", "hybrid a=0.5"] and {c.seed for c in trained} == {0}
    assert grid.train["steps"] == 60 and grid.model_folder == "model-best"


def test_mixtures_with_their_own_evaluation(tmp_path):
    grid = load_grid(write_grid(tmp_path, train_datasets=[{"train": "mlqa-r", "evaluate": ["xquad-r"]},
                                                         {"train": "xquad-r", "evaluate": ["mlqa-r"]}],
                                eval_datasets=["xquad-r", "mlqa-r"], samplers=["cross"], seeds=[0]))
    table = cell_table(grid)
    assert len(table) == 2 + 2                            # zero-shot on both, one cell per mixture
    assert set(table[table.train_sources == "xquad-r"].dataset) == {"mlqa-r"}


# -------------------------------------------------------------------------------- running


class FakeExecutor:
    """Behaves like lib.grid.execute (skips complete runs) and records papermill's parameters."""

    def __init__(self, fail: set[str] = frozenset()):
        self.executed: list[str] = []
        self.fail = fail

    def __call__(self, notebook, run, parameters, force=False, env=None):
        path = run_dir(run)
        if not force and is_complete(run):
            return path
        if run in self.fail:
            raise RuntimeError(f"{run} broke")
        self.executed.append(run)
        book = nbformat.v4.new_notebook()
        book.metadata["papermill"] = {"parameters": {**parameters, "run": run}}
        nbformat.write(book, path / notebook)
        write_json(path / "metrics.json", {"summary": {}})
        mark_complete(path)
        return path


def test_jobs_run_in_order_and_complete_runs_are_skipped(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    fake = FakeExecutor()
    table = run_grid(grid, execute=fake)
    kinds = [j.kind for j in plan_jobs(grid)]
    assert fake.executed == [j.run for j in plan_jobs(grid)]
    assert kinds[:2] == ["evaluate", "bias"] and kinds[2:5] == ["train", "evaluate", "bias"]
    assert set(table.status) == {"done"}
    manifest = outputs_dir() / "g"
    assert (manifest / "grid.json").is_file() and (manifest / "cells.csv").is_file() and (manifest / "status.csv").is_file()

    again = FakeExecutor()
    table = run_grid(grid, execute=again)
    assert again.executed == ["report-g"]                 # the report is always rebuilt
    assert set(table.status[table.kind != "report"]) == {"skipped"}
    import pandas as pd                                   # status.csv: this start; history.csv: every start
    assert set(pd.read_csv(manifest / "status.csv").status[table.kind != "report"]) == {"skipped"}
    history = pd.read_csv(manifest / "history.csv")
    assert len(history) == 2 * len(table) and history.session.nunique() == 2
    assert history.groupby("session").status.apply(lambda s: (s == "done").sum()).tolist() == [len(table), 1]


def test_complete_run_with_other_parameters_stops_the_grid(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    run_grid(grid, execute=FakeExecutor())
    changed = load_grid(write_grid(tmp_path, train={"steps": 3, "batch_size": 4}))
    with pytest.raises(GridError, match="steps: grid 3 vs run 2"):
        run_grid(changed, execute=FakeExecutor())
    tagged = load_grid(write_grid(tmp_path, train={"steps": 3, "batch_size": 4}, tag="steps3"))
    fake = FakeExecutor()
    run_grid(tagged, execute=fake)
    assert "train-tiny-mono-mlqa-r-s0-steps3" in fake.executed


def test_a_failed_training_blocks_its_evaluations_only(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    broken = "train-tiny-mono-mlqa-r-s1"
    with pytest.raises(GridError, match="failed, were blocked or not run"):
        run_grid(grid, execute=FakeExecutor(fail={broken}))
    assert "not run" in set(read_json_csv(outputs_dir() / "g" / "status.csv").values())   # nothing after it
    fake = FakeExecutor(fail={broken})
    with pytest.raises(GridError, match="failed, were blocked"):
        run_grid(grid, execute=fake, keep_going=True)
    status = read_json_csv(outputs_dir() / "g" / "status.csv")
    assert status[broken] == "failed"
    assert status[eval_run_name(broken, "xquad-r")] == "blocked"
    assert status["bias-" + eval_run_name(broken, "xquad-r")] == "blocked"
    assert status["train-tiny-hybrid-a0.5-mlqa-r-s1"] in {"done", "skipped"}


def read_json_csv(path):
    import pandas as pd

    table = pd.read_csv(path)
    return dict(zip(table.run, table.status))


# -------------------------------------------------------------------------------- end to end


def in_process(notebook, run, parameters, force=False, env=None):
    """What each notebook does, called directly (the notebooks are thin wrappers of these calls)."""
    if not force and is_complete(run):
        return run_dir(run)
    if notebook == "03_train.ipynb":
        from lib.train import TrainConfig, train

        train(TrainConfig(**parameters, run=run), progress=False)
    elif notebook == "04_evaluate.ipynb":
        from lib.evaluate import run_evaluation

        run_evaluation(**parameters, run=run)
    elif notebook == "05_bias.ipynb":
        from lib.bias import run_bias_analysis

        run_bias_analysis(parameters["runs"], run=run, top_k=parameters.get("top_k", 10), device="cpu")
    else:
        report = build_report(parameters["grid"], resamples=parameters.get("resamples", 100), seed=0)
        write_report(run_dir(run), report)
    mark_complete(run_dir(run))
    return run_dir(run)


def test_end_to_end_smoke_grid_in_process(tmp_path, lareqa_dir):
    """tiny backbone: zero-shot + hybrid, 2 steps, 6 questions; train -> evaluate -> bias -> report."""
    import pandas as pd

    grid = load_grid(write_grid(tmp_path, samplers=["hybrid"], seeds=[0],
                                train={"steps": 2, "batch_size": 4, "device": "cpu"},
                                bias={"top_k": 5}, report={"run": "report-g", "resamples": 200}))
    table = run_grid(grid, execute=in_process)
    # 2 x (evaluate, bias), train, the comparison of the two, report
    assert set(table.status) == {"done"} and len(table) == 2 * 2 + 1 + 1 + 1
    comparison = read_json(outputs_dir() / "bias-g-tiny-mlqa-r-xquad-r" / "metrics.json")
    assert set(comparison["runs"]) == {zero_shot_run_name("tiny", "xquad-r", "sentence"),
                                       eval_run_name("train-tiny-hybrid-a0.5-mlqa-r-s0", "xquad-r")}
    report_dir = outputs_dir() / "report-g"
    results = pd.read_csv(report_dir / "results.csv")
    assert set(results.status) == {"complete"} and set(results.system) == {"zero-shot", "hybrid a=0.5"}
    assert results["multi map"].between(0, 1).all() and results["bias same_language_distractor"].notna().all()
    assert results.train_steps.dropna().tolist() == [2]
    significance = pd.read_csv(report_dir / "significance.csv")
    assert len(significance) == 4                         # 1 pair of systems x (AP in 3 settings + rank distance)
    assert significance.p_value.between(0, 1).all() and set(significance.setting) == {"mono", "cross", "multi"}
    assert significance.groupby("metric").setting.apply(sorted).to_dict() == {
        "map": ["cross", "mono", "multi"], "rank_distance": ["multi"]}
    assert "## Paired significance" in (report_dir / "report.md").read_text()
    # XQuAD-R has 4 languages MLQA-R lacks: mAP over seen and unseen languages, zero-shot row included
    assert "## Languages seen and unseen in training" in (report_dir / "report.md").read_text()
    assert results[["mono map seen", "mono map unseen", "cross map unseen", "multi map unseen"]].notna().all().all()
    metrics = read_json(report_dir / "metrics.json")
    assert metrics["summary"]["complete_runs"] == 2 and metrics["summary"]["comparisons"] == 4
    # a second pass trains nothing
    again = run_grid(grid, execute=in_process)
    assert set(again.status[again.kind != "report"]) == {"skipped"}


@pytest.mark.skipif(not os.environ.get("HBT_GRID_E2E"), reason="set HBT_GRID_E2E=1: runs every notebook of "
                    "params/grid-smoke.yaml with papermill (19 notebooks, minutes)")
def test_smoke_grid_with_the_notebooks(lareqa_dir):
    table = run_grid(load_grid("grid-smoke"))
    assert set(table.status) <= {"done", "skipped"}
    assert (outputs_dir() / "report-smoke" / "report.md").is_file()


# -------------------------------------------------------------------------------- tables


def _results():
    import pandas as pd

    rows = []
    for system, seed, value in [("zero-shot", None, 0.50), ("mono", 0, 0.60), ("mono", 1, 0.62), ("mono", 2, 0.64),
                                ("hybrid a=0.5", 0, 0.70)]:
        rows.append({"backbone": "xlmr-base", "system": system, "seed": seed, "dataset": "xquad-r",
                     "train_sources": None if system == "zero-shot" else "mlqa-r", "status": "complete",
                     "eval_run": f"r-{system}-{seed}", "mono map": value, "cross map": value - 0.1,
                     "multi map": value - 0.2})
    rows.append({**rows[-1], "seed": 1, "status": "missing", "mono map": None})
    return pd.DataFrame(rows)


def test_seed_summary_and_mean_std_cells():
    from lib.report_tables import format_mean_std, seed_summary

    summary = seed_summary(_results(), ["mono map", "multi map"])
    mono = summary.loc[("xlmr-base", "mlqa-r", "xquad-r", "mono")]
    assert mono[("mono map", "mean")] == pytest.approx(0.62) and mono[("mono map", "std")] == pytest.approx(0.02)
    assert mono[("mono map", "n")] == 3
    hybrid = summary.loc[("xlmr-base", "mlqa-r", "xquad-r", "hybrid a=0.5")]
    assert hybrid[("mono map", "n")] == 1                 # the missing seed is not counted
    cells = format_mean_std(summary, ["mono map"])
    assert cells.loc[("xlmr-base", "mlqa-r", "xquad-r", "mono"), "mono map"] == "0.620 ± 0.020 (3)"
    assert cells.loc[("xlmr-base", "mlqa-r", "xquad-r", "hybrid a=0.5"), "mono map"] == "0.700"


def test_paper_numbers_side_by_side_for_matching_backbones():
    from lib.report_tables import load_reference, paper_side_by_side, seed_summary

    reference = load_reference("paper")
    assert {"model", "dataset", "setting", "metric", "lang", "sampler", "value"} <= set(reference.columns)
    side = paper_side_by_side(seed_summary(_results()))
    assert set(side.system) == {"mono", "hybrid a=0.5"}   # zero-shot has no paper number
    mono = side.set_index("system").loc["mono"]
    assert mono["mono map paper"] == pytest.approx(0.7918)   # XLM-R X-X-mono, XQuAD-R (paper.md)
    assert mono["mono map diff"] == pytest.approx(0.62 - 0.7918, abs=1e-3)
    assert load_reference("lareqa").model.unique().tolist() == ["mbert"]


def _verdict_inputs(hybrid_mono=0.70, p_multi=0.30):
    """A seed summary of mono / cross / hybrid and the paired tests hybrid_verdict reads."""
    import pandas as pd

    from lib.report_tables import seed_summary

    rows = []
    values = {"mono": (0.80, 0.60, 0.40, 500.0), "cross": (0.70, 0.62, 0.50, 300.0),
              "hybrid a=0.5": (hybrid_mono, 0.63, 0.49, 350.0)}
    for system, (mono, cross, multi, distance) in values.items():
        for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
            rows.append({"backbone": "me5-small-q4", "train_sources": "mlqa-r", "dataset": "xquad-r", "system": system,
                         "seed": seed, "status": "complete", "mono map": mono + jitter, "cross map": cross + jitter,
                         "multi map": multi + jitter, "multi rank_distance": distance + 100 * jitter})
    summary = seed_summary(pd.DataFrame(rows), ["mono map", "cross map", "multi map", "multi rank_distance"])
    tests = []
    for setting, metric, a, b, p, effect in [
            ("mono", "map", "hybrid a=0.5", "mono", 0.001, -0.5),
            ("cross", "map", "cross", "hybrid a=0.5", 0.40, -0.05),
            ("multi", "map", "cross", "hybrid a=0.5", p_multi, 0.04),
            ("multi", "rank_distance", "cross", "hybrid a=0.5", 0.01, -0.2)]:
        tests.append({"backbone": "me5-small-q4", "train_sources": "mlqa-r", "dataset": "xquad-r", "setting": setting,
                      "metric": metric, "a": a, "b": b, "p_holm": p, "effect_size": effect})
    return summary, pd.DataFrame(tests)


def test_hybrid_verdict_against_the_better_of_mono_and_cross():
    from lib.report import hybrid_verdict, verdict_sentences

    summary, tests = _verdict_inputs()
    verdict = hybrid_verdict(summary, tests).set_index("metric")
    assert verdict["better of mono/cross"].to_dict() == {"mono map": "mono", "cross map": "cross",
                                                         "multi map": "cross", "multi rank_distance": "cross"}
    assert verdict.loc["mono map", "delta"] == pytest.approx(-0.10)
    assert verdict.loc["mono map", "verdict"] == "worse" and verdict.loc["mono map", "effect_size"] == -0.5
    assert verdict.loc["cross map", "verdict"] == "no significant difference"
    assert verdict.loc["cross map", "effect_size"] == pytest.approx(0.05)     # sign turned to hybrid - better
    # rank distance: lower is better, so hybrid's 350 against cross's 300 is worse
    assert verdict.loc["multi rank_distance", "verdict"] == "worse"
    assert verdict.loc["multi rank_distance", "delta"] == pytest.approx(50.0)
    assert verdict.loc["mono map", "hybrid mean ± std"] == "0.700 ± 0.010 (3)"
    (sentence,) = verdict_sentences(verdict.reset_index())
    assert "significantly worse than the better of mono and cross on mono map (mono, delta -0.100" in sentence
    assert "Language bias" in sentence and "worse" in sentence


def test_hybrid_verdict_never_says_matches_without_an_equivalence_test():
    from lib.report import hybrid_verdict, verdict_sentences

    summary, tests = _verdict_inputs(hybrid_mono=0.79)
    tests.loc[0, "p_holm"] = 0.2
    verdict = hybrid_verdict(summary, tests)
    assert set(verdict.verdict[verdict.metric.str.endswith("map")]) == {"no significant difference"}
    sentence = verdict_sentences(verdict)[0]
    assert "not significantly worse than the better of mono and cross on mAP in any setting" in sentence
    assert "not a claim of equality" in sentence and "matches" not in sentence
    # without tests: not tested; without a hybrid or without mono: no row at all
    assert set(hybrid_verdict(summary, tests.iloc[:0]).verdict) == {"not tested"}
    assert hybrid_verdict(summary.drop(index="hybrid a=0.5", level=3), tests).empty
    assert hybrid_verdict(summary.drop(index="mono", level=3), tests).empty


def test_report_answers_the_notebook_in_calls():
    """What 06_report shows: status line, the verdict or what it lacks, the tables, the tests."""
    import pandas as pd

    from lib.report import VERDICT_TITLE, Report, hybrid_verdict

    summary, tests = _verdict_inputs()
    verdict = hybrid_verdict(summary, tests)
    results = pd.DataFrame({"status": ["complete", "missing"], "system": ["mono", "cross"], "mono map": [0.61234, None],
                            "eval_run": ["a", "b"]})
    report = Report("g", results, summary, {VERDICT_TITLE: verdict, "mAP": summary}, tests.assign(
        delta=0.1, ci_low=0.0, ci_high=0.2, p_value=0.01), missing=["b"])
    assert report.status() == "grid g: 1 evaluation run(s) complete, 1 missing\nmissing: b"
    table, sentences = report.research_question()
    assert table is verdict and len(sentences) == 1 and sentences[0].startswith("me5-small-q4 trained on mlqa-r")
    assert list(report.paper_tables()) == ["mAP"]
    assert list(report.results_overview().columns) == ["system", "status", "mono map"]
    assert report.results_overview()["mono map"].iloc[0] == 0.612
    assert list(report.significance_overview().columns)[:3] == ["dataset", "setting", "metric"]
    empty = Report("g", results, summary, {}, pd.DataFrame())
    table, sentences = empty.research_question()
    assert table.empty and sentences[0].startswith("no answer yet")
    assert empty.significance_overview().empty


def test_report_figures_follow_what_exists():
    import matplotlib.pyplot as plt
    import pandas as pd

    from lib.report import Report, report_figures

    results = pd.DataFrame({"status": ["complete"] * 2, "dataset": ["xquad-r"] * 2, "system": ["mono", "cross"],
                            "mono map": [0.5, 0.6], "cross map": [0.4, 0.3], "multi map": [0.2, 0.25],
                            "multi rank_distance": [10.0, 12.0]})
    figures = report_figures(Report("g", results, pd.DataFrame(), {}, pd.DataFrame()))
    assert list(figures) == ["map_per_sampler", "rank_distance_per_sampler", "tradeoff"]
    assert report_figures(Report("g", results.assign(status="missing"), pd.DataFrame(), {}, pd.DataFrame())) == {}
    plt.close("all")


def test_report_writes_the_verdict_as_csv_and_markdown(tmp_path):
    import pandas as pd

    from lib.report import VERDICT_TITLE, Report, hybrid_verdict

    summary, tests = _verdict_inputs()
    verdict = hybrid_verdict(summary, tests)
    results = pd.DataFrame({"status": ["complete"] * 3})
    report = Report("g", results, summary, {VERDICT_TITLE: verdict}, tests.assign(delta=0.0))
    write_report(tmp_path / "report", report)
    written = pd.read_csv(tmp_path / "report" / "verdict.csv")
    assert written.verdict.tolist() == verdict.verdict.tolist() and len(written) == 4
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"## {VERDICT_TITLE}" in text and "is significantly worse than the better of mono and cross" in text
    assert read_json(tmp_path / "report" / "metrics.json")["summary"]["complete_runs"] == 3
    # no verdict without mono, cross and hybrid: no verdict.csv
    write_report(tmp_path / "other", Report("g", results, summary, {}, tests))
    assert not (tmp_path / "other" / "verdict.csv").exists()
    assert not [p.name for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]   # no temp leftovers


def _write_miracl_run(run: str, backbone: str, ndcg: tuple[float, float]) -> None:
    """An evaluation run folder as lib.evaluate.run_evaluation writes it for MIRACL (two languages)."""
    import pandas as pd

    from lib.miracl import summarise_languages
    from lib.results import Evaluation, write_evaluation

    per_language = pd.DataFrame({"lang": ["sw", "te"], "n_queries": [2, 2], "n_passages": [5, 5], "ndcg@10": ndcg,
                                 "recall@100": [min(1.0, v + 0.3) for v in ndcg], "index": "flat"}).set_index("lang")
    per_query = pd.DataFrame({"lang": ["sw", "sw", "te", "te"], "qid": ["1", "2", "3", "4"],
                              "ndcg@10": [ndcg[0]] * 2 + [ndcg[1]] * 2, "recall@100": [1.0] * 4})
    evaluation = Evaluation(summarise_languages(per_language), per_language, per_query=per_query,
                            timings={"total_s": 1.0})
    write_evaluation(outputs_dir() / run, evaluation, {
        "task": "evaluate", "backbone": backbone, "backbone_settings": {"name": "tiny"}, "dataset": "miracl",
        "languages": ["sw", "te"], "batch_size": 64, "device": "cpu", "run": run, "index": "flat"})
    mark_complete(outputs_dir() / run, notebook="04_evaluate.ipynb")   # as lib.notebooks does after the run


def test_report_has_a_descriptive_table_per_other_dataset(tmp_path):
    """MIRACL and Tatoeba runs (the evaluators' own metrics.json) -> one table each, systems x their
    summary metrics, mean ± std over seeds; LAReQA's tables, tests and figures leave them out."""
    import pandas as pd

    from lib.gather import summary_metrics
    from lib.report import report_figures
    from lib.report_tables import DATASET_TITLE
    from lib.results import Evaluation, write_evaluation
    from lib.tatoeba import set_averages

    grid = load_grid(write_grid(tmp_path, samplers=["mono"], eval_datasets=["xquad-r", "miracl"],
                                zero_shot={"eval_datasets": ["xquad-r", "miracl", "tatoeba"]}))
    _write_miracl_run("zeroshot-tiny-miracl-sentence", "tiny", (0.30, 0.40))
    for seed, ndcg in ((0, (0.40, 0.50)), (1, (0.42, 0.52))):
        train_run = f"train-tiny-mono-mlqa-r-s{seed}"
        _write_miracl_run(eval_run_name(train_run, "miracl"), str(outputs_dir() / train_run / "model"), ndcg)
    languages = pd.DataFrame({"lang": ["deu", "fra"], "acc_xx_to_eng": [0.9, 0.8], "acc_eng_to_xx": [0.7, 0.6]})
    write_evaluation(outputs_dir() / "zeroshot-tiny-tatoeba-sentence", Evaluation(
        set_averages(languages.set_index("lang")), languages.set_index("lang")), {"dataset": "tatoeba"})
    mark_complete(outputs_dir() / "zeroshot-tiny-tatoeba-sentence", notebook="04_evaluate.ipynb")

    report = build_report(grid, resamples=100)
    miracl = report.tables[DATASET_TITLE.format(dataset="miracl")]
    assert list(miracl.columns) == summary_metrics("miracl") == ["ndcg@10_mean", "recall@100_mean",
                                                                 "ndcg@10_median", "recall@100_median"]
    assert miracl.loc[("tiny", "mlqa-r", "mono"), "ndcg@10_mean"] == "0.460 ± 0.014 (2)"
    assert miracl.loc[("tiny", "-", "zero-shot"), "ndcg@10_mean"] == "0.350"
    tatoeba = report.tables[DATASET_TITLE.format(dataset="tatoeba")]
    assert tatoeba.loc[("tiny", "-", "zero-shot"), "tatoeba_xtreme_r_xx_to_eng"] == "0.850"
    assert "descriptive" in DATASET_TITLE and report.significance.empty and report.extended.empty
    assert report.tables["mAP (mean ± std over seeds, number of seeds)"].empty      # no LAReQA run yet
    assert "ndcg@10_mean" in report.results_overview().columns
    assert set(report.missing) == {r for c in expand_cells(grid) for d, r in c.eval_runs if d == "xquad-r"}
    figures = report_figures(report)
    assert list(figures) == ["miracl_per_system", "tatoeba_per_system"]
    write_report(tmp_path / "report", report, figures)
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"## {DATASET_TITLE.format(dataset='miracl')}" in text and "Descriptive only" in text
    assert (tmp_path / "report" / "miracl_per_system.png").is_file()
    written = pd.read_csv(tmp_path / "report" / "results.csv")
    assert written.loc[written.dataset == "miracl", "ndcg@10_mean"].dropna().round(3).tolist() == [0.35, 0.45, 0.47]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_language_split_seen_and_unseen_training_languages():
    import numpy as np
    import pandas as pd

    from lib.gather import add_language_split, language_split, training_languages

    assert training_languages("mlqa-r") == ["ar", "de", "en", "es", "hi", "vi", "zh"]
    assert training_languages("mlqa-r,xquad-r") == sorted(set(training_languages("mlqa-r"))
                                                          | set(training_languages("xquad-r")))
    rows = [("mono", "en", "en", 0.9), ("mono", "de", "de", 0.7), ("mono", "th", "th", 0.4),
            ("cross", "en", "de", 0.8), ("cross", "de", "en", 0.6), ("cross", "en", "th", 0.3),
            ("cross", "th", "en", 0.1), ("multi", "en", "all", 0.5), ("multi", "th", "all", 0.2)]
    per_pair = pd.DataFrame(rows, columns=["setting", "query_lang", "target_lang", "map"])
    split = language_split(per_pair, ["en", "de"])
    assert split["mono map seen"] == pytest.approx(0.8) and split["mono map unseen"] == pytest.approx(0.4)
    # cross: a pair is seen only when both of its languages are
    assert split["cross map seen"] == pytest.approx(0.7) and split["cross map unseen"] == pytest.approx(0.2)
    assert split["multi map seen"] == pytest.approx(0.5) and split["multi map unseen"] == pytest.approx(0.2)
    assert np.isnan(language_split(per_pair, ["en", "de", "th"])["mono map unseen"])

    # in a results table: a zero-shot row is split like the models trained beside it
    for run in ("eval-a", "eval-z"):
        write_json(outputs_dir() / run / "metrics.json", {"per_pair": per_pair.to_dict(orient="records")})
    results = pd.DataFrame({"backbone": ["b", "b", "b"], "dataset": ["xquad-r"] * 3, "eval_run": ["eval-a", "eval-z", "x"],
                            "train_sources": ["mlqa-r", None, "mlqa-r"], "status": ["complete", "complete", "missing"]})
    split = add_language_split(results)
    mlqa = language_split(per_pair, training_languages("mlqa-r"))      # th is not in MLQA-R
    assert split.loc[0, "mono map unseen"] == pytest.approx(mlqa["mono map unseen"]) == pytest.approx(0.4)
    assert split.loc[1, "cross map seen"] == pytest.approx(mlqa["cross map seen"])
    assert split.loc[2, ["mono map seen", "mono map unseen"]].isna().all()          # missing run: nothing


def test_runs_are_described_after_the_outputs_folder_moved(tmp_path):
    """Evaluation configs record the model folder's absolute path; a moved outputs/ still resolves."""
    from lib.bias import run_label
    from lib.gather import describe_eval_run

    write_json(outputs_dir() / "train-x" / "config.json", {"backbone": "me5-small-q4", "sampler": "hybrid",
                                                          "alpha": 0.5, "seed": 2, "train_sources": "mlqa-r"})
    old_place = tmp_path / "elsewhere" / "outputs" / "train-x" / "model-best"
    write_json(outputs_dir() / "eval-x" / "config.json", {"backbone": str(old_place), "dataset": "xquad-r",
                                                         "backbone_settings": {"source": "path", "name": "model-best"}})
    row = describe_eval_run("eval-x")
    assert (row["backbone"], row["system"], row["seed"], row["train_run"]) == ("me5-small-q4", "hybrid a=0.5", 2, "train-x")
    assert run_label("eval-x") == "hybrid a=0.5 s2"


def test_make_run_is_the_default_grid():
    """`make run` (the README's main command) runs params/grid.yaml through lib.grid."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n: print the commands only; VENV=.venv-absent would rebuild the venv, so point at a stamp that exists
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "run"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert "-m lib.grid params/grid.yaml" in out
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "run-weights"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.index("-m lib.grid params/grid.yaml") < out.index("-m lib.grid params/grid-weights.yaml")


# -------------------------------------------------------------------------------- parallel workers


class ParallelFake(FakeExecutor):
    """FakeExecutor that takes a little time and records when each run started and ended, and its env."""

    def __init__(self, fail=frozenset(), delay=0.03):
        import threading

        super().__init__(fail)
        self.lock = threading.Lock()
        self.delay, self.active, self.most = delay, 0, 0
        self.started, self.ended, self.envs = {}, {}, {}

    def __call__(self, notebook, run, parameters, force=False, env=None):
        import time

        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.started[run], self.envs[run] = time.monotonic(), env
        try:
            time.sleep(self.delay)
            return super().__call__(notebook, run, parameters, force=force)
        finally:
            with self.lock:
                self.active -= 1
                self.ended[run] = time.monotonic()


def test_parallel_workers_respect_what_each_job_needs(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    grid = load_grid(write_grid(tmp_path))
    fake = ParallelFake()
    table = run_grid(grid, execute=fake, workers=2, devices=[])
    jobs = plan_jobs(grid)
    assert set(table.status) == {"done"} and sorted(fake.executed) == sorted(j.run for j in jobs)
    assert fake.most == 2                                 # two at once, never more
    for job in jobs:
        for need in job.needs:
            assert fake.started[job.run] >= fake.ended[need], f"{job.run} started before {need} ended"
    report = jobs[-1].run
    assert all(fake.started[report] >= end for run, end in fake.ended.items() if run != report)
    assert {env["OMP_NUM_THREADS"] for env in fake.envs.values()} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert not any("CUDA_VISIBLE_DEVICES" in env for env in fake.envs.values())
    again = ParallelFake()
    table = run_grid(grid, execute=again, workers=2, devices=[])
    assert again.executed == [report] and set(table.status[table.kind != "report"]) == {"skipped"}


def test_parallel_failure_blocks_dependants_and_the_report_still_runs(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    broken = "train-tiny-mono-mlqa-r-s0"
    fake = ParallelFake(fail={broken})
    with pytest.raises(GridError, match="failed, were blocked or not run"):
        run_grid(grid, execute=fake, workers=3, devices=["0", "1"], keep_going=True)
    status = read_json_csv(outputs_dir() / "g" / "status.csv")
    assert status[broken] == "failed"
    assert status[eval_run_name(broken, "xquad-r")] == status["bias-" + eval_run_name(broken, "xquad-r")] == "blocked"
    assert status["bias-g-tiny-mlqa-r-xquad-r"] == "blocked"            # the comparison needs mono s0
    assert status["train-tiny-mono-mlqa-r-s1"] == "done" and status["report-g"] == "done"
    assert {env["CUDA_VISIBLE_DEVICES"] for env in fake.envs.values()} == {"0", "1"}
    # without keep_going: nothing new starts after the failure; the rest is "not run"
    for run in list(status):
        if run != broken:
            import shutil

            shutil.rmtree(outputs_dir() / run, ignore_errors=True)
    with pytest.raises(GridError):
        run_grid(grid, execute=ParallelFake(fail={broken}), workers=2, devices=[])
    status = read_json_csv(outputs_dir() / "g" / "status.csv")
    assert "not run" in set(status.values()) and status["report-g"] == "not run"


def test_worker_environments(monkeypatch):
    from lib.scheduler import worker_environments

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = worker_environments(4, devices=["0", "1"], cpu_count=8)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpus] == ["0", "1", "0", "1"]
    assert worker_environments(2, devices=[], cpu_count=8)[0] == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert worker_environments(3, devices=[], cpu_count=2)[2]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_environments(2, cpu_count=2)] == ["2", "3"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")           # the user's own setting wins
    assert worker_environments(2, devices=[], cpu_count=8)[1]["OMP_NUM_THREADS"] == "3"
    with pytest.raises(GridError, match="workers=0"):
        run_grid(load_grid("grid-smoke"), workers=0)


def test_execute_subprocess_passes_the_worker_environment(tmp_path):
    """One notebook in a fresh process and kernel: the env reaches the kernel; a failure quotes the log."""
    from lib.notebooks import execute_subprocess

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell('run = ""\nfail = False', metadata={"tags": ["parameters"]}),
                  nbformat.v4.new_code_cell(
                      "import json, os\nfrom lib.io import run_dir, write_json\n"
                      "assert not fail, 'asked to fail'\n"
                      "write_json(run_dir(run) / 'metrics.json', {'threads': os.environ.get('OMP_NUM_THREADS')})")]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = tmp_path / "probe.ipynb"
    nbformat.write(book, notebook)
    execute_subprocess(str(notebook), "probe", {"fail": False}, env={"OMP_NUM_THREADS": "3"})
    assert read_json(outputs_dir() / "probe" / "metrics.json") == {"threads": "3"}
    with pytest.raises(RuntimeError, match="asked to fail"):
        execute_subprocess(str(notebook), "probe-broken", {"fail": True})


def test_dry_run_lists_the_jobs_and_the_estimate(capsys):
    from lib.grid import main

    main(["params/grid.yaml", "--dry-run"])
    out = capsys.readouterr().out
    assert "49 jobs, 16 cells" in out and "bias-grid-me5-small-q4-mlqa-r-xquad-r" in out and "estimate" in out
    assert "estimate 2.62 h in all" in out              # the budget comment of params/grid.yaml says the same
