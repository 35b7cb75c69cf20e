"""The paper's validation: early stopping on a separate English set (SQuADShifts), through
``TrainConfig.validation_source``; nothing is then held out of the training sources."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lib.sources import get_source, load_source_groups
from lib.train import TrainConfig, TrainError, train
from lib.trainer import load_training_groups

SQUADSHIFTS_ROWS = [  # the loading script's columns: id, title, context, question, answers
    {"id": f"5d{i:04x}", "title": "Topic", "context": f"Paragraph {i} about the topic, with its answer {i}.",
     "question": f"What is answer {i}?", "answers": {"text": [f"answer {i}"], "answer_start": [30]}}
    for i in range(12)]


@pytest.fixture
def squadshifts_mirror(tmp_path, monkeypatch):
    """``HBT_SOURCES_DIR`` with the four configurations' parquet files, three questions each."""
    source = get_source("squadshifts")
    for index, relative in enumerate(source.files):
        path = tmp_path / source.hub_id / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(SQUADSHIFTS_ROWS[3 * index:3 * index + 3]).to_parquet(path)
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path))
    return tmp_path


def test_squadshifts_rows_become_english_groups_with_the_paragraph_as_positive(squadshifts_mirror):
    groups = load_source_groups("squadshifts")
    assert len(groups) == 12 and groups[0].qid == "squadshifts:5d0000"
    assert groups[0].queries == {"en": "What is answer 0?"}
    assert groups[0].positives == {"en": "Paragraph 0 about the topic, with its answer 0."}
    assert all(set(g.queries) == {"en"} and not g.negatives for g in groups)


def test_validation_source_replaces_the_held_out_ids(squadshifts_mirror, lareqa_dir):
    config = TrainConfig(backbone="tiny", train_sources="mlqa-r", validation_source="squadshifts",
                         validation_sampler="en", device="cpu").resolved()
    train_groups, validation = load_training_groups(config)
    held_out = load_training_groups(TrainConfig(backbone="tiny", train_sources="mlqa-r", device="cpu").resolved())
    assert len(train_groups) == sum(map(len, held_out))     # every MLQA-R id is trained on
    assert {g.source for g in validation} == {"squadshifts"} and len(validation) == 12


@pytest.mark.parametrize("values, message", [
    ({"validation_source": "squadshifts"}, "validation_sampler 'hybrid' needs two languages.*validation_sampler=en"),
    ({"validation_source": "squad-v9", "validation_sampler": "en"}, "validation_source: unknown training source"),
])
def test_bad_validation_source_is_refused_before_loading(values, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig(backbone="tiny", device="cpu", **values).resolved()


def test_training_stops_early_on_the_validation_source(squadshifts_mirror, lareqa_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))
    config = TrainConfig(backbone="tiny", train_sources="mlqa-r", validation_source="squadshifts",
                         validation_sampler="en", batch_size=4, steps=2, eval_every=1, checkpoint_every=0,
                         validation_batches=2, run="validation-source", device="cpu")
    result = train(config, progress=False)
    assert math.isfinite(result.metrics["best_val_loss"]) and result.metrics["validation_batches"] == 2
