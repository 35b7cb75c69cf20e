"""A new sampler is one class: a toy sampler with one option, defined here only, goes through the
sampler registry, a training configuration, the grid's plan (--dry-run), run and system names,
the gather step and the report's seed summary, with no other module touched."""

from __future__ import annotations

import pytest
import yaml

from lib.completion import mark_complete
from lib.io import outputs_dir, write_json
from lib.sampling import (SAMPLER_CLASSES, SAMPLERS, BatchSampler, CrossLingualBatchSampler, MonolingualBatchSampler,
                          SamplerParam, SamplingError, build_sampler)
from tests.test_sampling import make_groups


@pytest.fixture
def toy():
    class MostlyMonoBatchSampler(BatchSampler):
        """Toy: X-X-mono with probability ``beta``, else X-Y (a hybrid with its own option)."""

        name = "toy"
        params = {"beta": SamplerParam(0.25, "probability of a monolingual batch", low=0.0, high=1.0, label="b")}
        beta: float

        def rules(self):
            return {MonolingualBatchSampler: self.beta, CrossLingualBatchSampler: 1.0 - self.beta}

    yield MostlyMonoBatchSampler
    del SAMPLER_CLASSES["toy"]


def _grid_file(tmp_path):
    grid = {"name": "toy-grid", "backbones": ["tiny"], "samplers": ["mono", "toy"], "seeds": [0, 1],
            "sampler_options": {"toy": {"beta": [0.2, 0.7]}}, "train_datasets": ["mlqa-r"],
            "eval_datasets": ["xquad-r"], "zero_shot": False, "train": {"steps": 2, "batch_size": 4}}
    path = tmp_path / "toy-grid.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return path


def test_the_class_registers_itself_with_its_option(toy):
    assert "toy" in SAMPLERS and SAMPLER_CLASSES["toy"] is toy
    groups = make_groups(200)
    sampler = build_sampler("toy", groups, 4, seed=0, beta=1.0)
    assert sampler.beta == 1.0 and all(len({p.query_lang for p in b}) == 1 for b in list(sampler)[:20])
    assert build_sampler("toy", groups, 4).beta == 0.25                 # the declared default
    with pytest.raises(SamplingError, match=r"beta must be in \[0, 1\]"):
        build_sampler("toy", groups, 4, beta=2.0)
    with pytest.raises(SamplingError, match="sampler 'toy' has no option 'gamma'.*its options: beta"):
        toy(groups, 4, gamma=0.1)


def test_the_toy_sampler_goes_through_grid_names_gather_and_report(toy, tmp_path, monkeypatch, capsys):
    from lib.gather import describe_eval_run, grid_results
    from lib.grid import dry_run
    from lib.grid_plan import expand_cells, load_grid, plan_jobs
    from lib.report_tables import seed_summary
    from lib.bias import run_label
    from lib.train import TrainConfig, TrainError

    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))
    grid = load_grid(_grid_file(tmp_path))
    cells = [c for c in expand_cells(grid) if c.sampler == "toy"]
    assert [c.train_run for c in cells] == ["train-tiny-toy-b0.2-mlqa-r-s0", "train-tiny-toy-b0.7-mlqa-r-s0",
                                            "train-tiny-toy-b0.2-mlqa-r-s1", "train-tiny-toy-b0.7-mlqa-r-s1"]
    assert {c.system for c in cells} == {"toy b=0.2", "toy b=0.7"}
    train_jobs = {job.run: job.parameters for job in plan_jobs(grid) if job.kind == "train"}
    assert train_jobs["train-tiny-toy-b0.7-mlqa-r-s1"]["sampler_options"] == "beta=0.7"
    assert "sampler_options" not in train_jobs["train-tiny-mono-mlqa-r-s0"]
    config = TrainConfig(**train_jobs["train-tiny-toy-b0.7-mlqa-r-s1"], device="cpu").resolved()
    assert config.run == "train-tiny-toy-b0.7-mlqa-r-s1"                 # the training names its run the same way
    with pytest.raises(TrainError, match="sampler 'toy' has no option 'gamma'"):
        TrainConfig(sampler="toy", sampler_options="gamma=1").check()
    dry_run(grid)
    assert "train-tiny-toy-b0.2-mlqa-r-s0" in capsys.readouterr().out

    # every evaluation complete; the toy's training config as lib.train writes it
    for index, cell in enumerate(expand_cells(grid)):
        write_json(outputs_dir() / cell.train_run / "config.json",
                   {"backbone": "tiny", "sampler": cell.sampler, "seed": cell.seed, "train_sources": "mlqa-r",
                    "alpha": 0.5, "sampler_options": ",".join(f"{k}={v:g}" for k, v in cell.options)})
        for _, eval_run in cell.eval_runs:
            write_json(outputs_dir() / eval_run / "config.json",
                       {"backbone": str(outputs_dir() / cell.train_run / "model"), "dataset": "xquad-r",
                        "backbone_settings": {"source": "path", "name": "model"}})
            write_json(outputs_dir() / eval_run / "metrics.json",
                       {"summary": {"mono map": 0.5 + 0.01 * index, "cross map": 0.4, "multi map": 0.3}})
            mark_complete(outputs_dir() / eval_run, notebook="04_evaluate.ipynb")
    results = grid_results(grid)
    toy_rows = results[results.sampler == "toy"]
    assert sorted(toy_rows.system.unique()) == ["toy b=0.2", "toy b=0.7"]
    assert sorted(toy_rows.beta.unique()) == [0.2, 0.7]
    summary = seed_summary(results, ["mono map"])
    assert summary.loc[("tiny", "mlqa-r", "xquad-r", "toy b=0.7"), ("mono map", "n")] == 2
    assert summary.loc[("tiny", "mlqa-r", "xquad-r", "mono"), ("mono map", "n")] == 2
    # a run made outside the grid is described from its configs the same way
    outside = cells[1].eval_runs[0][1]
    row = describe_eval_run(outside)
    assert (row["system"], row["beta"], row["sampler"]) == ("toy b=0.7", 0.7, "toy")
    assert run_label(outside) == "toy b=0.7 s0"


def test_alphas_is_hybrids_grid_key_and_sampler_options_can_set_it(tmp_path):
    from lib.grid_plan import GridError, expand_cells, load_grid, plan_jobs

    def runs(**changes):
        grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono", "hybrid"], "train_datasets": ["mlqa-r"],
                "eval_datasets": ["xquad-r"], "zero_shot": False, **changes}
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump(grid), encoding="utf-8")
        return load_grid(path)

    grid = runs(alphas=[0.4, 0.6])
    assert [c.train_run for c in expand_cells(grid)] == [
        "train-tiny-mono-mlqa-r-s0", "train-tiny-hybrid-a0.4-mlqa-r-s0", "train-tiny-hybrid-a0.6-mlqa-r-s0"]
    assert [j.parameters.get("alpha") for j in plan_jobs(grid) if j.kind == "train"] == [None, 0.4, 0.6]
    assert [c.system for c in expand_cells(runs())] == ["mono", "hybrid a=0.5"]        # the declared default
    grid = runs(sampler_options={"hybrid": {"alpha": [1]}})
    assert expand_cells(grid)[1].train_run == "train-tiny-hybrid-a1-mlqa-r-s0"
    with pytest.raises(GridError, match="sampler 'mono' has no option 'alpha'"):
        runs(sampler_options={"mono": {"alpha": [0.5]}})
    with pytest.raises(GridError, match=r"alpha 1.5 of sampler 'hybrid'"):
        runs(sampler_options={"hybrid": {"alpha": [1.5]}})
    with pytest.raises(GridError, match="sampler_options.cross must be a mapping of options of one of the grid's"):
        runs(sampler_options={"cross": {"alpha": [0.5]}})
