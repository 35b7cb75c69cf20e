"""The training-source registry (lib.sources): every YAML loads; the hub-qa adapter on fixture rows in
each set's real format (WikiQA, Natural Questions, Yahoo Answers QA, DuoRC, NewsQA, Mr. TyDi, MFAQ:
parquet, JSONL, gzip JSONL, nested fields), translated by a stand-in translator; mMARCO from a local
mirror of its repository layout, through TrainConfig."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lib.data import DataError
from lib.sources import available_sources, get_source, load_source_groups, qa_groups
from lib.train import TrainConfig, train
from lib.training_data import lareqa_groups
from tests.source_fixtures import (duorc_rows, mfaq_records, mr_tydi_records, newsqa_rows, write_hub_rows,
                                   write_mmarco_mirror)


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
    assert get_source("yahoo-answers-qa").revision is None  # no full commit found: see its YAML
    with pytest.raises(DataError, match="no pinned revision: set `revision:` in params/sources/yahoo-answers-qa.yaml"):
        load_source_groups("yahoo-answers-qa", translator=fake_translator)


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


PAPER_QA_SETS = ["duorc", "newsqa", "mr-tydi-en-mt", "mfaq-en-mt"]   # EntityQuestions: no passages published
ENGLISH_ONLY = ["mr-tydi-en", "mfaq-en"]                             # the paper's: not translated


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_SOURCES_DIR", str(tmp_path / "mirror"))
    return tmp_path / "mirror"


def test_the_paper_qa_sets_are_registered_pinned_and_translated_into_the_nine_languages():
    for name in PAPER_QA_SETS:
        source = get_source(name)
        assert len(source.revision) == 40 and int(source.revision, 16) >= 0
        assert source.translate_to == ["ar", "zh", "de", "es", "hi", "ru", "th", "tr"]
    for name in ENGLISH_ONLY:
        assert get_source(name).translate_to == [] and len(get_source(name).revision) == 40
    assert not any("entity" in name for name in available_sources())


def test_duorc_pairs_questions_with_their_plot_and_drops_unanswerable_ones(mirror):
    write_hub_rows(mirror, "duorc", duorc_rows(3))
    groups = load_source_groups("duorc", translator=fake_translator)
    assert [g.qid for g in groups] == ["duorc:duorc-q0", "duorc:duorc-q1"]      # duorc-q2: no_answer
    assert groups[0].positives["en"] == groups[1].positives["en"] == duorc_rows(3)[0]["plot"]
    assert groups[1].queries == {"en": "who leaves home in film 0, part 1?",
                                 **{lang: f"[{lang}] who leaves home in film 0, part 1?"
                                    for lang in get_source("duorc").translate_to}}
    assert groups[0].negatives == {}


def test_newsqa_rows_are_numbered_questions_on_their_article(mirror):
    write_hub_rows(mirror, "newsqa", newsqa_rows(3))
    groups = load_source_groups("newsqa", translator=fake_translator)
    assert [g.qid for g in groups] == ["newsqa:0", "newsqa:1", "newsqa:2"]
    assert groups[2].positives["en"] == newsqa_rows(3)[2]["context"] != groups[0].positives["en"]
    assert groups[2].positives["zh"] == "[zh] " + newsqa_rows(3)[2]["context"] and groups[2].negatives == {}


def test_mr_tydi_takes_the_first_positive_passage_and_the_bm25_negatives(mirror):
    path = write_hub_rows(mirror, "mr-tydi-en", mr_tydi_records(3))
    assert path.name == "train.jsonl.gz"
    assert load_source_groups("mr-tydi-en", max_negatives=1)[1].languages == ["en"]   # English only
    groups = load_source_groups("mr-tydi-en-mt", max_negatives=1, translator=fake_translator)
    assert [g.qid for g in groups] == ["mr-tydi-en-mt:0", "mr-tydi-en-mt:1", "mr-tydi-en-mt:2"]
    assert groups[1].positives["en"] == "The city 1 was founded in 1801."
    assert groups[1].negatives["en"] == ["Another river 1 is mentioned here (7)."]
    assert groups[1].negatives["th"] == ["[th] Another river 1 is mentioned here (7)."]
    assert groups[2].negatives == {}                                   # a query without negatives
    two = load_source_groups("mr-tydi-en-mt", max_negatives=3, translator=fake_translator)
    assert len(two[0].negatives["en"]) == 2


def test_nested_fields_read_from_parquet_lists_of_structs_too(tmp_path):
    """Parquet returns a list of structs as a numpy array of dicts, JSONL as a list."""
    pd.DataFrame(mr_tydi_records(2)).to_parquet(tmp_path / "rows.parquet")
    groups = qa_groups(get_source("mr-tydi-en"), pd.read_parquet(tmp_path / "rows.parquet"), max_negatives=2)
    assert groups[0].positives["en"] == "The river 0 was founded in 1800."
    assert groups[0].negatives["en"] == ["Another book 0 is mentioned here (7).", "Another river 0 is mentioned here (8)."]


def test_mfaq_explodes_each_page_into_one_group_per_pair(mirror):
    write_hub_rows(mirror, "mfaq-en", mfaq_records(3))               # pages of 2 and 1 pairs
    assert [g.languages for g in load_source_groups("mfaq-en")] == [["en"]] * 3   # English only
    groups = load_source_groups("mfaq-en-mt", translator=fake_translator)
    assert [g.qid for g in groups] == ["mfaq-en-mt:0", "mfaq-en-mt:1", "mfaq-en-mt:2"]
    assert groups[1].queries["en"] == "How do I book the city tour 1?"
    assert groups[1].positives["en"] == "Book tour 1 online or at the desk." and groups[1].negatives == {}
    assert groups[2].positives["es"] == "[es] Book tour 2 online or at the desk."


def test_a_nested_source_whose_rows_lack_the_list_column_names_the_fix(tmp_path):
    rows = pd.DataFrame({"id": [1], "question": ["q?"], "answer": ["a."]})
    with pytest.raises(DataError, match="explode column 'qa_pairs'.*params/sources/mfaq-en.yaml"):
        qa_groups(get_source("mfaq-en"), rows)
