"""LAReQA loading: counts of SOURCES.md on the real files, and clear errors on bad files."""

from __future__ import annotations

import json

import pytest

from lib.data import DataError, load_lareqa, parse_squad_file

XQUAD_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
                    "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}
MLQA_COUNTS = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264), "es": (500, 1787),
               "hi": (507, 2426), "vi": (511, 2828), "zh": (504, 2322)}


def write_lareqa(root, dataset="xquad-r", lang="en", paragraphs=None):
    paragraphs = paragraphs or [{
        "context": "Berlin is big. It has 3.7 million people. It is old.",
        "sentence_breaks": [[0, 14], [15, 41], [42, 52]],
        "qas": [{"id": "q1", "question": "How many people live in Berlin?",
                 "answers": [{"answer_start": 22, "text": "3.7 million"}]}],
    }]
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lang}.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}), encoding="utf-8")
    return path


@pytest.mark.real_data
def test_xquad_r_counts(lareqa_dir):
    data = load_lareqa("xquad-r", data_dir=lareqa_dir)
    counts = data.counts()
    assert counts.questions.to_dict() == {lang: 1190 for lang in XQUAD_CANDIDATES}
    assert counts.candidates.to_dict() == XQUAD_CANDIDATES
    assert len(data.candidates) == 13014
    assert (data.questions.groupby("qid").size() == 11).all()


@pytest.mark.real_data
def test_mlqa_r_counts(lareqa_dir):
    data = load_lareqa("mlqa-r", data_dir=lareqa_dir)
    counts = data.counts()
    assert {lang: (row.questions, row.candidates) for lang, row in counts.iterrows()} == MLQA_COUNTS
    per_id = data.questions.groupby("qid").size().value_counts().to_dict()
    assert per_id == {4: 820, 3: 263, 2: 65}


@pytest.mark.real_data
def test_answer_is_the_sentence_holding_answer_start(lareqa_dir):
    data = load_lareqa("mlqa-r", languages=["de"], data_dir=lareqa_dir)
    raw = json.loads((lareqa_dir / "mlqa-r" / "de.json").read_text(encoding="utf-8"))
    qa = raw["data"][0]["paragraphs"][0]["qas"][0]
    context = raw["data"][0]["paragraphs"][0]["context"]
    answer = qa["answers"][0]
    row = data.questions.set_index("qid").loc[qa["id"]]
    sentence = data.candidates.sentence[row.answer]
    assert answer["text"] in sentence or context.index(sentence) <= answer["answer_start"]
    start = context.index(sentence)
    assert start <= answer["answer_start"] < start + len(sentence)


def test_parse_and_paragraph_context(tmp_path):
    write_lareqa(tmp_path)
    data = load_lareqa("xquad-r", languages=["en"], data_dir=tmp_path, verify=False,
                       candidate_context="paragraph")
    assert list(data.candidates.sentence) == ["Berlin is big.", "It has 3.7 million people.", "It is old."]
    assert data.questions.answer.tolist() == [1]
    assert data.candidates.text[1] == "It has 3.7 million people. " + data.candidates.paragraph[1]
    assert data.candidate_context == "paragraph"


def test_subset_keeps_answers_consistent(tmp_path):
    paragraphs = [
        {"context": "A b. C d.", "sentence_breaks": [[0, 4], [5, 9]],
         "qas": [{"id": "q1", "question": "?", "answers": [{"answer_start": 5, "text": "C"}]}]},
        {"context": "E f. G h.", "sentence_breaks": [[0, 4], [5, 9]],
         "qas": [{"id": "q2", "question": "??", "answers": [{"answer_start": 0, "text": "E"}]}]},
    ]
    for lang in ("en", "de"):
        write_lareqa(tmp_path, lang=lang, paragraphs=paragraphs)
    data = load_lareqa("xquad-r", languages=["en", "de"], data_dir=tmp_path, verify=False, max_questions=1)
    assert set(data.questions.qid) == {"q1"}
    assert len(data.candidates) == 4
    assert (data.candidates.sentence[data.questions.answer] == "C d.").all()


def test_checksum_mismatch_names_the_file(tmp_path):
    path = write_lareqa(tmp_path)
    with pytest.raises(DataError, match=r"checksum mismatch for .*en\.json"):
        load_lareqa("xquad-r", languages=["en"], data_dir=tmp_path)
    assert path.exists()


def test_missing_language_file_names_it(tmp_path):
    write_lareqa(tmp_path)
    with pytest.raises(DataError, match=r"missing file .*de\.json"):
        load_lareqa("xquad-r", languages=["de"], data_dir=tmp_path, verify=False)


def test_unknown_language_and_dataset():
    with pytest.raises(DataError, match="has no language 'xx'"):
        load_lareqa("xquad-r", languages=["xx"])
    with pytest.raises(DataError, match="unknown LAReQA dataset"):
        load_lareqa("squad")


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "en.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"malformed JSON in .*en\.json"):
        parse_squad_file(path, "en")


def test_answer_outside_every_sentence(tmp_path):
    path = write_lareqa(tmp_path, paragraphs=[{
        "context": "One. Two.", "sentence_breaks": [[0, 4]],
        "qas": [{"id": "q9", "question": "?", "answers": [{"answer_start": 6, "text": "wo"}]}]}])
    with pytest.raises(DataError, match=r"q9 has answer_start 6, outside every sentence span"):
        parse_squad_file(path, "en")
