"""Training data: LAReQA groups, mMARCO on small files of its layout, machine translation with a
tiny random model (mechanics only: batching, caching, resume), leakage, split, storage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lib.data import DataError, ParallelGroup, load_lareqa
from lib.training_data import (
    MMARCO_REVISION,
    MMARCO_TRIPLES,
    language_counts,
    languages_per_group,
    lareqa_groups,
    leakage_report,
    load_groups,
    load_mmarco_groups,
    mmarco_collection_file,
    mmarco_queries_file,
    normalize_text,
    save_groups,
    split_by_qid,
)
from lib.translation import Seq2SeqTranslator, TranslationCache, translate_groups, translation_codes


def group(qid, source="test", **texts):
    """group("q1", en=("query", "positive", ["negative"]), de=(...))"""
    made = ParallelGroup(qid=qid, source=source, queries={}, positives={})
    for lang, (query, positive, *negatives) in texts.items():
        made.queries[lang] = query
        made.positives[lang] = positive
        if negatives and negatives[0]:
            made.negatives[lang] = list(negatives[0])
    return made


# --------------------------------------------------------------------------------------------
# LAReQA groups on a small file of the official format


def write_squad(folder, lang, paragraphs):
    """paragraphs: list of (sentences, [(qid, question, answer sentence index)])."""
    data = []
    for sentences, questions in paragraphs:
        context, breaks = "", []
        for sentence in sentences:
            if context:
                context += " "
            breaks.append([len(context), len(context) + len(sentence)])
            context += sentence
        qas = [{"id": qid, "question": question,
                "answers": [{"text": sentences[index], "answer_start": breaks[index][0]}]}
               for qid, question, index in questions]
        data.append({"title": "t", "paragraphs": [{"context": context, "sentence_breaks": breaks, "qas": qas}]})
    path = folder / "mlqa-r" / f"{lang}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}), encoding="utf-8")


@pytest.fixture
def small_lareqa(tmp_path):
    write_squad(tmp_path, "en", [
        (["S0.", "S1.", "S2.", "S3.", "S4."], [("q1", "Q1 en?", 2), ("q2", "Q2 en?", 0)]),
        (["Same.", "Same.", "Other."], [("q3", "Q3 en?", 0)]),
    ])
    write_squad(tmp_path, "de", [(["D0.", "D1."], [("q1", "Q1 de?", 1)])])
    return load_lareqa("mlqa-r", languages=["en", "de"], data_dir=tmp_path, verify=False)


def test_lareqa_groups_negatives_are_nearest_siblings_without_the_positive(small_lareqa):
    groups = {g.qid: g for g in lareqa_groups(small_lareqa, max_negatives=3)}
    assert list(groups) == ["q1", "q2", "q3"]
    q1 = groups["q1"]
    assert q1.source == "mlqa-r" and q1.languages == ["de", "en"]
    assert q1.queries == {"en": "Q1 en?", "de": "Q1 de?"}
    assert q1.positives == {"en": "S2.", "de": "D1."}
    assert q1.negatives["en"] == ["S1.", "S3.", "S0."]          # nearest first, earlier on ties
    assert q1.negatives["de"] == ["D0."]
    assert groups["q2"].negatives["en"] == ["S1.", "S2.", "S3."]
    # a sentence equal to the positive is never its negative
    assert groups["q3"].positives["en"] == "Same." and groups["q3"].negatives["en"] == ["Other."]
    assert all(not g.negatives for g in lareqa_groups(small_lareqa, max_negatives=0))


def test_lareqa_groups_paragraph_context(small_lareqa):
    q1 = {g.qid: g for g in lareqa_groups(small_lareqa, candidate_context="paragraph", max_negatives=1)}["q1"]
    assert q1.positives["en"] == "S2. S0. S1. S2. S3. S4."
    assert q1.negatives["en"] == ["S1. S0. S1. S2. S3. S4."]


def test_lareqa_groups_rejects_bad_arguments(small_lareqa):
    with pytest.raises(ValueError, match="candidate_context"):
        lareqa_groups(small_lareqa, candidate_context="document")
    with pytest.raises(ValueError, match="max_negatives"):
        lareqa_groups(small_lareqa, max_negatives=-1)


@pytest.mark.real_data
def test_mlqa_r_groups(lareqa_dir):
    dataset = load_lareqa("mlqa-r", data_dir=lareqa_dir)
    groups = lareqa_groups(dataset, max_negatives=3)
    assert len(groups) == 1148
    assert languages_per_group(groups) == {2: 65, 3: 263, 4: 820}
    counts = language_counts(groups)
    assert counts.loc["en", "groups"] == 1148 and counts.groups.sum() == len(dataset.questions)
    answers = dataset.answers_by_qid()
    sentences, paragraph_ids = dataset.candidates.sentence.tolist(), dataset.candidates.paragraph_id.tolist()
    sentences_of = dataset.candidates.groupby("paragraph_id").sentence.apply(set).to_dict()
    for g in groups:
        for lang in g.languages:
            answer = answers[g.qid][lang]
            assert g.positives[lang] == sentences[answer]
            siblings = sentences_of[paragraph_ids[answer]]
            negatives = g.negatives.get(lang, [])
            assert len(negatives) <= 3 and set(negatives) <= siblings
            assert g.positives[lang] not in negatives


# --------------------------------------------------------------------------------------------
# mMARCO on small files of the hub's layout

MMARCO_TEXTS = {
    "en": ({"10": "what is a cat", "11": "how tall is everest", "12": "third query"},
           {"0": "A cat is an animal.", "1": "Dogs bark.", "2": "Everest is 8849 m.", "3": "Fish swim.",
            "4": "Third passage.", "5": "Birds fly."}),
    "de": ({"10": "was ist eine Katze", "11": "wie hoch ist der Everest", "12": "dritte Frage"},
           {"0": "Eine Katze ist ein Tier.", "1": "Hunde bellen.", "2": "Der Everest ist 8849 m hoch.",
            "3": "Fische schwimmen.", "5": "Vögel fliegen."}),   # passage 4 missing in German
}


@pytest.fixture
def mmarco_dir(tmp_path):
    root = tmp_path / "mmarco"
    triples = root / MMARCO_TRIPLES
    triples.parent.mkdir(parents=True)
    # query 10 has three triples, 11 two (one repeats its negative), 12 one, 13 one; then a
    # broken line that is never read when max_groups <= 3
    triples.write_text("10\t0\t1\n11\t2\t3\n10\t0\t3\n11\t2\t3\n10\t0\t5\n12\t4\t5\n13\t1\t0\nbroken line\n",
                       encoding="utf-8")
    for lang, (queries, passages) in MMARCO_TEXTS.items():
        for relative, table in ((mmarco_queries_file(lang), queries), (mmarco_collection_file(lang), passages)):
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{key}\t{text}\n" for key, text in table.items()), encoding="utf-8")
    return root


def test_mmarco_groups_from_local_files(mmarco_dir):
    groups = load_mmarco_groups(["en", "de"], max_groups=3, local_dir=mmarco_dir, max_negatives=2)
    assert [g.qid for g in groups] == ["mmarco:10", "mmarco:11", "mmarco:12"]
    first = groups[0]
    assert first.source == "mmarco" and first.languages == ["de", "en"]
    assert first.queries == {"en": "what is a cat", "de": "was ist eine Katze"}
    assert first.positives["de"] == "Eine Katze ist ein Tier."
    assert first.negatives["en"] == ["Dogs bark.", "Fish swim."]          # capped at 2, file order
    assert groups[1].negatives["en"] == ["Fish swim."]                    # repeated negative once
    assert groups[2].languages == ["en"]                                   # German positive missing


def test_mmarco_streams_only_what_it_needs(mmarco_dir):
    groups = load_mmarco_groups(["en"], max_groups=1, local_dir=mmarco_dir)
    # stops at the first new query past the limit: negatives of triples read before it only
    assert len(groups) == 1 and groups[0].negatives["en"] == ["Dogs bark."]
    with pytest.raises(DataError, match="expected 'query id"):
        load_mmarco_groups(["en"], max_groups=5, local_dir=mmarco_dir)


def test_mmarco_errors_name_the_fix(mmarco_dir, tmp_path):
    with pytest.raises(DataError, match="no language 'xx'"):
        load_mmarco_groups(["xx"], max_groups=1, local_dir=mmarco_dir)
    with pytest.raises(DataError, match="local_dir"):
        load_mmarco_groups(["ru"], max_groups=1, local_dir=mmarco_dir)
    with pytest.raises(ValueError, match="max_groups"):
        load_mmarco_groups(["en"], max_groups=0, local_dir=mmarco_dir)


def test_mmarco_downloads_at_the_pinned_revision(mmarco_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, repo_type, revision, cache_dir):
        calls.append((repo_id, filename, repo_type, revision, cache_dir))
        return str(mmarco_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    groups = load_mmarco_groups(["en"], max_groups=2, cache_dir=tmp_path / "hub")
    assert len(groups) == 2
    assert {c[0] for c in calls} == {"unicamp-dl/mmarco"} and {c[2] for c in calls} == {"dataset"}
    assert {c[3] for c in calls} == {MMARCO_REVISION}
    assert [c[1] for c in calls] == [MMARCO_TRIPLES, "data/google/queries/train/english_queries.train.tsv",
                                     "data/google/collections/english_collection.tsv"]


# --------------------------------------------------------------------------------------------
# Machine translation: a tiny random NLLB-shaped model, real XLM-R tokenizer


@pytest.fixture(scope="session")
def tiny_translation_model(tmp_path_factory):
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    from lib.backbones import tokenizer_json

    folder = tmp_path_factory.mktemp("tiny-nllb")
    # NLLB's tokenizer class adds the FLORES-200 language tokens to the XLM-R vocabulary
    tokenizer = NllbTokenizer(tokenizer_file=str(tokenizer_json()))
    config = M2M100Config(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                          decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Seq2SeqTranslator(str(folder), device="cpu", max_new_tokens=4)


class Counting:
    """Wraps a translator; counts texts translated; can fail after some batches (a killed run)."""

    def __init__(self, translator, fail_after_batches=None):
        self.translator, self.fail_after_batches = translator, fail_after_batches
        self.batches, self.texts = 0, 0

    def __call__(self, texts, source, target):
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise KeyboardInterrupt("killed")
        self.batches += 1
        self.texts += len(texts)
        return self.translator(texts, source, target)


ENGLISH = [group(f"q{i}", en=(f"Question number {i}?", f"Answer sentence {i}.", [f"Other sentence {i}."]))
           for i in range(4)]


def test_translation_codes():
    assert translation_codes("ar", "nllb") == ("arb_Arab", "arb_Arab")
    assert translation_codes("zh", "nllb") == ("zho_Hans", "zho_Hans")
    assert translation_codes("de", "nllb") == ("deu_Latn", "deu_Latn")
    assert translation_codes("ar", "m2m100") == ("ar", "__ar__")
    with pytest.raises(ValueError, match="no NLLB code"):
        translation_codes("xx", "nllb")


def test_translate_groups_caches_and_resumes(tiny_translation_model, tmp_path):
    assert tiny_translation_model.family == "nllb"
    cache = tmp_path / "mt.jsonl"
    killed = Counting(tiny_translation_model, fail_after_batches=2)
    with pytest.raises(KeyboardInterrupt):
        translate_groups(ENGLISH, ["de", "ar"], model_name="tiny", cache_path=cache, batch_size=3,
                         translator=killed)
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 6      # two finished batches kept

    resumed = Counting(tiny_translation_model)
    groups = translate_groups(ENGLISH, ["de", "ar", "en"], model_name="tiny", cache_path=cache,
                              batch_size=3, translator=resumed)
    assert resumed.texts == 2 * 12 - 6                                    # 12 distinct texts, 2 languages
    assert [g.qid for g in groups] == [g.qid for g in ENGLISH]
    assert all(g.languages == ["ar", "de", "en"] for g in groups)
    assert all(len(g.negatives["ar"]) == 1 and isinstance(g.queries["de"], str) for g in groups)
    assert ENGLISH[0].languages == ["en"]                                 # inputs untouched

    again = Counting(tiny_translation_model)
    assert translate_groups(ENGLISH, ["de", "ar"], model_name="tiny", cache_path=cache,
                            translator=again) == groups
    assert again.texts == 0
    # another model name is another cache namespace
    other = Counting(tiny_translation_model)
    translate_groups(ENGLISH[:1], ["de"], model_name="tiny-2", cache_path=cache, translator=other)
    assert other.texts == 3
    # and so is another commit of the same model (the default model's pinned one, or revision=)
    pinned = Counting(tiny_translation_model)
    translate_groups(ENGLISH[:1], ["de"], model_name="tiny-2", cache_path=cache, translator=pinned, revision="abc")
    assert pinned.texts == 3
    entries = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    assert {"tiny-2", "tiny-2@abc"} <= {entry["model"] for entry in entries}


def test_translate_groups_loads_the_model_only_when_needed(tiny_translation_model, tmp_path, monkeypatch):
    import lib.translation

    loads = []

    def load(model_name, **options):
        loads.append((model_name, options))
        return tiny_translation_model

    monkeypatch.setattr(lib.translation, "Seq2SeqTranslator", load)
    cache = tmp_path / "mt.jsonl"
    groups = translate_groups(ENGLISH[:2], ["de"], model_name="some/model", cache_path=cache, device="cpu")
    assert loads == [("some/model", {"device": "cpu"})]
    assert all(g.languages == ["de", "en"] for g in groups)
    translate_groups(ENGLISH[:2], ["de"], model_name="some/model", cache_path=cache)
    assert len(loads) == 1                                                 # all cached: no model


def test_translate_groups_keeps_human_text_and_skips_other_groups(tmp_path):
    human = group("h", en=("Where?", "There."), de=("Wo?", "Dort."))
    french_only = group("f", fr=("Où ?", "Là."))
    fake = lambda texts, source, target: [f"[{target}] {text}" for text in texts]  # noqa: E731
    translated = translate_groups([human, french_only], ["de", "es"], model_name="fake",
                                  cache_path=tmp_path / "mt.jsonl", translator=fake)
    assert translated[0].queries == {"en": "Where?", "de": "Wo?", "es": "[es] Where?"}
    assert translated[1] == french_only


def test_translation_cache_survives_a_torn_line(tmp_path):
    path = tmp_path / "mt.jsonl"
    cache = TranslationCache(path)
    cache.add("m", "en", "de", ["a", "b"], ["A", "B"])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"model": "m", "source_lang": "en", "targ')        # killed mid-write
    reread = TranslationCache(path)
    assert reread.get("m", "en", "de", "a") == "A" and reread.get("m", "en", "de", "c") is None
    reread.add("m", "en", "de", ["c"], ["C"])
    assert TranslationCache(path).get("m", "en", "de", "c") == "C"


# --------------------------------------------------------------------------------------------
# Leakage


def test_normalize_text():
    assert normalize_text("  Ｈｅｌｌｏ\u00a0 WORLD\n") == "hello world"


def test_leakage_report_counts_exact_and_near_duplicates(small_lareqa):
    long = "The quick brown fox jumps over the lazy dog near the river bank today."
    train = [group("t1", en=("  q1 EN? ", long, ["Completely unrelated text about boats."])),
             group("t2", de=("Ganz andere Frage?", "Nichts hier."))]
    dataset = small_lareqa
    dataset.questions.loc[dataset.questions.qid == "q1", "text"] = "Q1 en?"
    first_english = dataset.candidates.index[dataset.candidates.lang == "en"][0]
    dataset.candidates.loc[first_english, "text"] = long.replace("today", "tonight")
    report, examples = leakage_report(train, dataset, near_threshold=0.7, return_examples=True)
    rows = report.set_index(["kind", "lang"])
    assert rows.loc[("question", "en"), "exact"] == 1 and rows.loc[("question", "en"), "near"] >= 1
    assert rows.loc[("question", "en"), "n_eval"] == 3
    assert rows.loc[("passage", "en"), "exact"] == 0 and rows.loc[("passage", "en"), "near"] == 1
    assert rows.loc[("question", "de"), "exact"] == 0
    assert rows.loc[("passage", "all"), "near"] == 1
    assert rows.loc[("question", "en"), "exact_share"] == pytest.approx(1 / 3)
    top_passage = examples[examples.kind == "passage"].iloc[0]
    assert top_passage.train_text == long and top_passage.eval_text.endswith("tonight.")
    assert examples[examples.kind == "question"].iloc[0].exact
    with pytest.raises(ValueError, match="near_threshold"):
        leakage_report(train, dataset, near_threshold=0)


@pytest.mark.real_data
def test_leakage_report_on_a_real_subset(lareqa_dir):
    train = lareqa_groups(load_lareqa("mlqa-r", data_dir=lareqa_dir, max_questions=60))
    evaluation = load_lareqa("xquad-r", data_dir=lareqa_dir, max_questions=40)
    english = evaluation.questions.text[evaluation.questions.lang == "en"].iloc[0]
    report = leakage_report(train + [group("copy", en=(english, "x"))], evaluation)
    assert set(report.lang) == set(evaluation.languages) | {"all"}
    assert report.exact_share.between(0, 1).all() and (report.near >= report.exact).all()
    assert report.set_index(["kind", "lang"]).loc[("question", "all"), "exact"] >= 1


# --------------------------------------------------------------------------------------------
# Split and storage


def test_split_by_qid_never_splits_a_question():
    groups = [group(f"q{i}", source=source, en=("q", "p"), de=("q", "p"))
              for i in range(40) for source in ("a", "b")]
    train, validation = split_by_qid(groups, validation_fraction=0.1, seed=3)
    train_ids, validation_ids = {g.qid for g in train}, {g.qid for g in validation}
    assert not train_ids & validation_ids and len(validation_ids) == 4 and len(validation) == 8
    assert len(train) + len(validation) == len(groups)
    assert split_by_qid(groups[::-1], 0.1, seed=3)[1] == validation[::-1]   # order-independent draw
    assert {g.qid for g in split_by_qid(groups, 0.1, seed=4)[1]} != validation_ids
    assert split_by_qid(groups, 0.0)[1] == [] and len(split_by_qid(groups[:4], 0.01)[1]) == 2
    with pytest.raises(ValueError, match="validation_fraction"):
        split_by_qid(groups, 1.0)


@pytest.mark.real_data
def test_split_mlqa_r_has_no_qid_overlap(lareqa_dir):
    groups = lareqa_groups(load_lareqa("mlqa-r", data_dir=lareqa_dir))
    train, validation = split_by_qid(groups, validation_fraction=0.05, seed=0)
    assert len(validation) == round(0.05 * 1148) and len(train) + len(validation) == 1148
    assert not {g.qid for g in train} & {g.qid for g in validation}


def test_save_and_load_groups(tmp_path):
    groups = [group("q1", en=("Wer?", "Er.", ["Sie.", "Es."]), zh=("谁?", "他。")), group("q2", en=("a", "b"))]
    path = save_groups(tmp_path / "groups.jsonl", groups)
    assert load_groups(path) == groups
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temporary left behind
    path.write_text(path.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="groups.jsonl:3"):
        load_groups(path)
    with pytest.raises(DataError, match="missing groups file"):
        load_groups(tmp_path / "nope.jsonl")


def test_language_counts_by_source():
    counts = language_counts([group("a", source="x", en=("q", "p", ["n1", "n2"])),
                              group("b", source="y", en=("q", "p"), de=("q", "p"))])
    assert counts.loc["en", "groups"] == 2 and counts.loc["en", "negatives"] == 2
    assert counts.loc["de", "y"] == 1 and counts.loc["de", "x"] == 0
    assert isinstance(counts, pd.DataFrame)
