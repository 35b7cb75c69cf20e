"""The training-source registry (lib.sources): every YAML loads; the hub-qa adapter on fixture rows in
WikiQA's real format (question_id, question, document_title, answer, label 0/1; parquet), translated by
a stand-in translator; mMARCO from a local mirror of its repository layout, through TrainConfig."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lib.data import DataError
from lib.sources import available_sources, get_source, load_source_groups
from lib.train import TrainConfig, train
from lib.training_data import lareqa_groups
from tests.source_fixtures import write_mmarco_mirror


def test_registry_holds_the_paper_sources_and_each_entry_is_valid():
    assert {"mlqa-r", "xquad-r", "mmarco", "wikiqa"} <= set(available_sources())
    for name in available_sources():
        get_source(name)
    assert get_source("mmarco").languages == ["en", "ar", "zh", "de", "es", "ru", "hi"]
    with pytest.raises(DataError, match="unknown training source 'squad'.*params/sources"):
        get_source("squad")


def test_lareqa_source_is_lareqa_groups(lareqa_dir):
    assert load_source_groups("xquad-r", data_dir=lareqa_dir) == lareqa_groups("xquad-r", data_dir=lareqa_dir)


def wikiqa_rows() -> pd.DataFrame:
    """Rows as microsoft/wiki_qa's parquet holds them: one per candidate sentence, label 1 = answer."""
    return pd.DataFrame({
        "question_id": ["Q1", "Q1", "Q1", "Q2", "Q2", "Q3"],
        "question": ["how are glacier caves formed?"] * 3 + ["what is a bat?"] * 2 + ["who won?"],
        "document_title": ["Glacier cave"] * 3 + ["Bat"] * 2 + ["Cup"],
        "answer": ["A partly submerged glacier cave.", "The ice facade is 60 m high.",
                   "A glacier cave is a cave formed within the ice of a glacier.",
                   "Bats are mammals of the order Chiroptera.", "They fly.", "Nobody knows."],
        "label": [0, 0, 1, 1, 0, 0],
    })


def fake_translator(texts, source, target):
    return [f"[{target}] {text}" for text in texts]


def test_hub_qa_adapter_on_wikiqa_rows_translates_and_keeps_negatives(tmp_path, monkeypatch):
    source = get_source("wikiqa")
    mirror = tmp_path / "mirror" / source.hub_id / source.files[0]
    mirror.parent.mkdir(parents=True)
    wikiqa_rows().to_parquet(mirror)
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path / "mirror"))
    groups = load_source_groups("wikiqa", max_negatives=1, translator=fake_translator)
    assert [g.qid for g in groups] == ["wikiqa:Q1", "wikiqa:Q2"]          # Q3 has no answer
    first = groups[0]
    assert first.source == "wikiqa" and first.languages == sorted(["en", *source.translate_to])
    assert first.positives["en"] == "A glacier cave is a cave formed within the ice of a glacier."
    assert first.negatives["en"] == ["A partly submerged glacier cave."]
    assert first.queries["de"] == "[de] how are glacier caves formed?"
    assert groups[1].negatives["en"] == ["They fly."]


def test_unpinned_hub_source_without_a_mirror_names_the_fix(monkeypatch):
    monkeypatch.delenv("HBT_SOURCES_DIR", raising=False)
    assert get_source("wikiqa").revision is None  # the full commit hash was not found: see its YAML
    with pytest.raises(DataError, match="no pinned revision: set `revision:` in params/sources/wikiqa.yaml"):
        load_source_groups("wikiqa", translator=fake_translator)


def test_mmarco_source_from_a_mirror_trains_through_train_config(tmp_path, monkeypatch):
    languages = get_source("mmarco").languages
    write_mmarco_mirror(tmp_path / "mirror", languages)
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path / "mirror"))
    groups = load_source_groups("mmarco")
    assert len(groups) == 24 and all(g.languages == sorted(languages) for g in groups)
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(TrainConfig(backbone="tiny", train_sources="mmarco", sampler="hybrid", steps=1, batch_size=4,
                                   validation_fraction=0.25, validation_batches=1, eval_every=1, checkpoint_every=0,
                                   device="cpu", run="mmarco-source"), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.metrics["train_groups"] == 18 and result.metrics["validation_groups"] == 6
    assert math.isfinite(result.metrics["best_val_loss"])


def test_pair_source_natural_questions_uses_row_numbers_as_ids(tmp_path, monkeypatch):
    """sentence-transformers/natural-questions "pair": one row per question, columns query and answer."""
    source = get_source("natural-questions")
    assert len(source.revision) == 40 and "qid" not in source.columns
    rows = pd.DataFrame({"query": ["when was the eiffel tower built", "who wrote hamlet", "  "],
                         "answer": ["The Eiffel Tower was built from 1887 to 1889.",
                                    "Hamlet is a tragedy by William Shakespeare.", "An empty question."]})
    mirror = tmp_path / "mirror" / source.hub_id / source.files[0]
    mirror.parent.mkdir(parents=True)
    rows.to_parquet(mirror)
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path / "mirror"))
    groups = load_source_groups("natural-questions", translator=fake_translator)
    assert [g.qid for g in groups] == ["natural-questions:0", "natural-questions:1"]   # the blank query dropped
    assert groups[1].positives["en"] == "Hamlet is a tragedy by William Shakespeare."
    assert groups[1].queries["tr"] == "[tr] who wrote hamlet" and groups[1].negatives == {}


def test_yahoo_answers_qa_rows_one_group_per_question_without_negatives(tmp_path, monkeypatch):
    """yahoo_answers_qa's rows: id, question, answer (best), nbestanswers (list), main_category."""
    source = get_source("yahoo-answers-qa")
    rows = pd.DataFrame({"id": ["3976", "1208"],
                         "question": ["how can i keep my dog from chewing shoes?", "why is the sky blue?"],
                         "answer": ["Give him chew toys and praise him when he uses them.",
                                    "Air scatters blue light more than red light."],
                         "nbestanswers": [["Give him chew toys and praise him when he uses them.", "Hide the shoes."],
                                          ["Air scatters blue light more than red light."]],
                         "main_category": ["Pets", "Science & Mathematics"]})
    mirror = tmp_path / "mirror" / source.hub_id / source.files[0]
    mirror.parent.mkdir(parents=True)
    rows.to_parquet(mirror)
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path / "mirror"))
    groups = load_source_groups("yahoo-answers-qa", translator=fake_translator)
    assert [g.qid for g in groups] == ["yahoo-answers-qa:3976", "yahoo-answers-qa:1208"]
    assert groups[0].positives["en"] == "Give him chew toys and praise him when he uses them."
    assert groups[0].negatives == {} and groups[0].queries["ar"] == "[ar] how can i keep my dog from chewing shoes?"
    monkeypatch.delenv("HBT_SOURCES_DIR")
    with pytest.raises(DataError, match="no pinned revision"):
        load_source_groups("yahoo-answers-qa", translator=fake_translator)
