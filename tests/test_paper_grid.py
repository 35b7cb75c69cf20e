"""Feasibility of params/grid-paper.yaml: every training cell's data, samplers and validation build at
the grid's batch size (100) on the real LAReQA files, and two steps of it train with the tiny backbone.

The premise: MLQA-R's held-out ids per language are fewer than 100 for some languages, which made a
validation sampler at the training batch size fail before ``validation_batch_size`` existed."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from lib.grid import load_grid, plan_jobs
from lib.io import read_json
from lib.train import TrainConfig, train
from lib.trainer import load_training_groups

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def paper_train_cells() -> list[dict]:
    """The train jobs' parameters, one per (sampler, alpha, training sources): seeds and backbones
    change neither the data nor the samplers' feasibility."""
    cells = {}
    for job in plan_jobs(load_grid("grid-paper")):
        if job.kind == "train":
            key = (job.parameters["sampler"], job.parameters.get("alpha"), job.parameters["train_sources"])
            cells.setdefault(key, job.parameters)
    return list(cells.values())


@pytest.fixture(scope="module")
def groups_by_sources(lareqa_dir):
    """Training and held-out groups of each training mixture, as a run of the grid builds them."""
    found = {}
    for parameters in paper_train_cells():
        sources = parameters["train_sources"]
        if sources not in found:
            config = TrainConfig(**{**parameters, "backbone": "tiny", "device": "cpu", "data_dir": str(lareqa_dir)})
            found[sources] = load_training_groups(config.resolved())
    return found


def test_mlqa_r_holds_out_fewer_ids_than_the_batch_in_some_language(groups_by_sources):
    batch_size = load_grid("grid-paper").train["batch_size"]
    _, held_out = groups_by_sources["mlqa-r"]
    per_language = Counter(lang for group in held_out for lang in group.languages)
    assert min(per_language.values()) < batch_size <= max(len(held_out), batch_size)


@pytest.mark.parametrize("parameters", paper_train_cells(),
                         ids=lambda p: f"{p['sampler']}-{p['train_sources']}")
def test_every_paper_cell_trains_at_the_grid_batch_size(parameters, groups_by_sources, tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    grid_batch = parameters["batch_size"]
    config = TrainConfig(**{**parameters, "backbone": "tiny", "device": "cpu", "steps": 2, "eval_every": 2,
                            "validation_batches": 2, "checkpoint_every": 0, "run": "feasibility"})
    result = train(config, groups=groups_by_sources[parameters["train_sources"]], progress=False)
    recorded = read_json(result.run_dir / "config.json")
    assert recorded["batch_size"] == grid_batch == 100
    assert 1 <= recorded["validation_batch_size"] <= grid_batch
    assert result.metrics["steps"] == 2 and result.metrics["validation_batches"] >= 1
    assert math.isfinite(result.metrics["best_val_loss"]) and math.isfinite(result.metrics["final_train_loss"])
