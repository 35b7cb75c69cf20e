"""Feasibility of params/grid-paper.yaml and its variant: every training cell's data, samplers and validation build at
the grid's batch size (100), and two steps of it train with the tiny backbone: on the real LAReQA files
for the LAReQA mixtures, on generated fixture mirrors of mMARCO and of every QA set of the paper's mix
(tests/source_fixtures.py, their real formats, translated by tiny-mt) for the paper's mix.

The premise: MLQA-R's held-out ids per language are fewer than 100 for some languages, which made a
validation sampler at the training batch size fail before ``validation_batch_size`` existed."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from lib.grid_plan import load_grid, plan_jobs
from lib.io import read_json
from lib.train import TrainConfig, train
from lib.trainer import load_training_groups
from tests.source_fixtures import QA_FIXTURES, write_source_mirror



pytestmark = [pytest.mark.real_data, pytest.mark.usefixtures("one_torch_thread")]


def paper_train_cells() -> list[dict]:
    """The train jobs' parameters of the paper grid and its variant, one per (sampler, alpha, training
    sources): seeds and backbones change neither the data nor the samplers' feasibility."""
    cells = {}
    for job in [*plan_jobs(load_grid("grid-paper")), *plan_jobs(load_grid("grid-paper-variant"))]:
        if job.kind == "train":
            key = (job.parameters["sampler"], job.parameters.get("alpha"), job.parameters["train_sources"],
                   job.parameters.get("source_weighting"))
            cells.setdefault(key, job.parameters)
    return list(cells.values())


# fixture sizes: every language of each source keeps at least 100 training ids (batch 100, mono sampler)
MMARCO_QUERIES, WIKIQA_QUESTIONS, NQ_QUESTIONS, QA_QUESTIONS = 150, 150, 150, 150   # QA: each of QA_FIXTURES
PAPER_MIX = load_grid("grid-paper").train_datasets[0]["train"]


@pytest.fixture(scope="module")
def groups_by_sources(lareqa_dir, tmp_path_factory):
    """Training and held-out groups of each training mixture, as a run of the grid builds them (hub
    sources from fixture mirrors, translated by tiny-mt instead of NLLB)."""
    root = tmp_path_factory.mktemp("sources")
    patch = pytest.MonkeyPatch()
    patch.setenv("HBT_SOURCES_DIR", str(write_source_mirror(root / "mirror", MMARCO_QUERIES, WIKIQA_QUESTIONS, NQ_QUESTIONS,
                                                                 QA_QUESTIONS)))
    patch.setenv("HBT_CACHE", str(root / "cache"))
    found = {}
    try:
        for parameters in paper_train_cells():
            sources = parameters["train_sources"]
            if sources not in found:
                config = TrainConfig(**{**parameters, "backbone": "tiny", "device": "cpu", "data_dir": str(lareqa_dir),
                                        "translation_model": "tiny-mt"})
                found[sources] = load_training_groups(config.resolved())
    finally:
        patch.undo()
    return found


def test_the_paper_mix_is_a_cell_with_every_training_language(groups_by_sources):
    train_groups, validation = groups_by_sources[PAPER_MIX]
    assert {g.source for g in train_groups} == set(PAPER_MIX.split(",")) == {"mmarco", "wikiqa", "natural-questions", *QA_FIXTURES}
    # the last wikiqa question and the last duorc question have no answer; nothing is held out:
    # SQuADShifts validates (the fixture mirror's 40 questions)
    assert len(train_groups) == (MMARCO_QUERIES + WIKIQA_QUESTIONS - 1 + NQ_QUESTIONS + len(QA_FIXTURES) * QA_QUESTIONS - 1)
    assert {g.source for g in validation} == {"squadshifts"} and len(validation) == 40
    languages = {lang for g in train_groups for lang in g.languages}
    assert languages == {"en", "ar", "zh", "de", "es", "ru", "hi", "th", "tr"}
    english_only = {g.source for g in train_groups if g.languages == ["en"]}
    assert english_only == {"mr-tydi-en", "mfaq-en"}                # as the paper: not translated


def test_mlqa_r_holds_out_fewer_ids_than_the_batch_in_some_language(groups_by_sources):
    batch_size = load_grid("grid-paper-variant").train["batch_size"]
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
    assert recorded["source_weighting"] == parameters.get("source_weighting", "loaded")
    assert 1 <= recorded["validation_batch_size"] <= grid_batch
    assert result.metrics["steps"] == 2 and result.metrics["validation_batches"] >= 1
    assert math.isfinite(result.metrics["best_val_loss"]) and math.isfinite(result.metrics["final_train_loss"])
