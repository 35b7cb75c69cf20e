"""MIRACL loading, scoring and evaluation (lib.miracl) on small files in the official layout."""

from __future__ import annotations

import gzip
import hashlib
import json
import math

import numpy as np
import pytest

import lib.corpus
from lib import miracl
from lib.data import DataError
from lib.evaluate import run_evaluation
from lib.miracl import (annotation_file, corpus_files, evaluate_miracl, iter_corpus, load_miracl_queries,
                        passage_text, read_qrels, read_topics, score_run, summarise_languages)

PASSAGES = {
    "sw": [("1#0", "Nairobi", "Nairobi ni mji mkuu wa Kenya."),
           ("1#1", "Nairobi", "Mji una watu milioni nne."),
           ("2#0", "Mombasa", "Mombasa ni mji wa pwani."),
           ("3#0", "", "Simba ni mnyama mkubwa."),
           ("4#0", "Kilimanjaro", "Kilimanjaro ni mlima mrefu zaidi Afrika.")],
    "te": [("10#0", "హైదరాబాద్", "హైదరాబాద్ తెలంగాణ రాజధాని."),
           ("11#0", "గోదావరి", "గోదావరి ఒక నది."),
           ("12#0", "తెలుగు", "తెలుగు ఒక భాష.")],
}
TOPICS = {"sw": {"q1": "Nairobi Nairobi ni mji mkuu wa Kenya.", "q2": "Kilimanjaro Kilimanjaro ni mlima mrefu zaidi Afrika."},
          "te": {"t1": "గోదావరి గోదావరి ఒక నది."}}
QRELS = {"sw": [("q1", "1#0", 1), ("q1", "2#0", 0), ("q2", "4#0", 1)], "te": [("t1", "11#0", 1), ("t1", "12#0", 0)]}


def write_miracl(root, lang, split_into=2, gzipped=True):
    annotations = root / f"miracl-v1.0-{lang}"
    (annotations / "topics").mkdir(parents=True)
    (annotations / "qrels").mkdir(parents=True)
    (annotations / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in TOPICS[lang].items()), encoding="utf-8")
    (annotations / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{q}\tQ0\t{d}\t{r}\n" for q, d, r in QRELS[lang]), encoding="utf-8")
    corpus = root / f"miracl-corpus-v1.0-{lang}"
    corpus.mkdir(parents=True)
    docs = PASSAGES[lang]
    step = math.ceil(len(docs) / split_into)
    for shard, start in enumerate(range(0, len(docs), step)):
        lines = "".join(json.dumps({"docid": d, "title": t, "text": x}, ensure_ascii=False) + "\n"
                        for d, t, x in docs[start:start + step])
        if gzipped and shard % 2 == 0:
            with gzip.open(corpus / f"docs-{shard}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.write(lines)
        else:
            (corpus / f"docs-{shard}.jsonl").write_text(lines, encoding="utf-8")


@pytest.fixture
def miracl_dir(tmp_path):
    root = tmp_path / "miracl"
    write_miracl(root, "sw", split_into=3)
    write_miracl(root, "te", split_into=1)
    return root


def test_reads_topics_qrels_and_corpus_in_the_official_layout(miracl_dir):
    topics, qrels = load_miracl_queries("sw", data_dir=miracl_dir)
    assert topics == TOPICS["sw"]
    assert qrels == {"q1": {"1#0": 1, "2#0": 0}, "q2": {"4#0": 1}}
    files = corpus_files("sw", miracl_dir)
    assert [f.name for f in files] == ["docs-0.jsonl.gz", "docs-1.jsonl", "docs-2.jsonl.gz"]
    docs = list(iter_corpus(files))
    assert [d["docid"] for d in docs] == [d for d, _, _ in PASSAGES["sw"]]
    assert passage_text(docs[0]) == "Nairobi Nairobi ni mji mkuu wa Kenya."
    assert passage_text(docs[3]) == "Simba ni mnyama mkubwa."                   # no title: no leading space


def test_corpus_files_sort_by_shard_number(tmp_path):
    folder = tmp_path / "miracl-corpus-v1.0-fi"
    folder.mkdir()
    for i in (10, 2, 0, 1):
        (folder / f"docs-{i}.jsonl").write_text("", encoding="utf-8")
    assert [f.name for f in corpus_files("fi", tmp_path)] == [f"docs-{i}.jsonl" for i in (0, 1, 2, 10)]


def test_clear_errors_on_bad_input(tmp_path, miracl_dir):
    with pytest.raises(DataError, match="expected one of"):
        annotation_file("xx", "topics", data_dir=miracl_dir)
    with pytest.raises(DataError, match="missing file"):
        annotation_file("fi", "topics", data_dir=miracl_dir)
    with pytest.raises(DataError, match="no corpus files"):
        corpus_files("fi", miracl_dir)
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1 Q0 d1\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        read_qrels(bad)
    bad.write_text("q1\tfirst\nq1\tagain\n", encoding="utf-8")
    with pytest.raises(DataError, match="duplicate query id"):
        read_topics(bad)
    broken = tmp_path / "docs-0.jsonl"
    broken.write_text('{"docid": "1#0", "title": "t", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        list(iter_corpus([broken]))


def test_qrels_of_unknown_queries_are_refused(miracl_dir):
    qrels = miracl_dir / "miracl-v1.0-te" / "qrels" / "qrels.miracl-v1.0-te-dev.tsv"
    qrels.write_text(qrels.read_text(encoding="utf-8") + "zz\tQ0\t11#0\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing from the topics"):
        load_miracl_queries("te", data_dir=miracl_dir)


def test_the_hub_path_pins_revisions(monkeypatch, tmp_path):
    calls = []

    def fake_download(repo_id, filename, repo_type, revision, cache_dir):
        calls.append((repo_id, filename, repo_type, revision))
        path = tmp_path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("", encoding="utf-8")
        return str(path)

    monkeypatch.delenv("MIRACL_DIR", raising=False)
    monkeypatch.setattr(miracl, "hf_hub_download", fake_download)
    annotation_file("sw", "qrels")
    files = corpus_files("hi")
    assert calls[0] == ("miracl/miracl", "miracl-v1.0-sw/qrels/qrels.miracl-v1.0-sw-dev.tsv", "dataset",
                        miracl.MIRACL_REVISION)
    assert [c[1] for c in calls[1:]] == ["miracl-corpus-v1.0-hi/docs-0.jsonl.gz", "miracl-corpus-v1.0-hi/docs-1.jsonl.gz"]
    assert {c[3] for c in calls[1:]} == {miracl.CORPUS_REVISION} and len(files) == 2


def test_a_refused_hub_download_says_to_accept_the_terms_and_log_in(monkeypatch):
    def refused(**kwargs):
        raise PermissionError("401 Client Error: access to this gated repository is restricted")

    monkeypatch.delenv("MIRACL_DIR", raising=False)
    monkeypatch.setattr(miracl, "hf_hub_download", refused)
    with pytest.raises(DataError, match=r"gated: accept the terms at https://huggingface.co/datasets/miracl/miracl"
                                        r".*hf auth login.*HF_TOKEN.*MIRACL_DIR"):
        annotation_file("sw", "qrels")


def test_score_run_on_a_hand_made_case():
    qrels = {"q1": {"d1": 1, "d2": 1, "d9": 0}, "q2": {"d4": 1}}
    run = {"q1": {"d3": 3.0, "d1": 2.0, "d2": 1.0}, "q2": {"d5": 1.0}}
    aggregate, per_query = score_run(qrels, run)
    # q1: DCG = 1/log2(3) + 1/log2(4), ideal = 1 + 1/log2(3); q2 finds nothing relevant
    ndcg_q1 = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert aggregate["ndcg@10"] == pytest.approx(ndcg_q1 / 2)
    assert aggregate["recall@100"] == pytest.approx(0.5)
    by_query = per_query.set_index("qid")
    assert by_query.loc["q1", "ndcg@10"] == pytest.approx(ndcg_q1)
    assert by_query.loc["q2", "recall@100"] == 0.0


def test_a_judged_query_missing_from_the_run_counts_as_zero():
    aggregate, per_query = score_run({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}})
    assert aggregate["ndcg@10"] == pytest.approx(0.5) and len(per_query) == 2


def test_summarise_languages_gives_mean_and_median():
    import pandas as pd

    table = pd.DataFrame({"ndcg@10": [0.2, 0.4, 0.9], "recall@100": [0.5, 0.6, 1.0]}, index=["a", "b", "c"])
    summary = summarise_languages(table)
    assert summary["miracl_mean_ndcg@10"] == pytest.approx(0.5) and summary["miracl_median_ndcg@10"] == pytest.approx(0.4)
    assert summary["miracl_median_recall@100"] == pytest.approx(0.6) and summary["miracl_all_n_languages"] == 3


def bag_of_words(model, texts, side, batch_size=64, cache=True, show_progress_bar=True, precision="auto"):
    """Side-independent hashed bag-of-words vectors: a passage identical to a query ranks first."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_evaluate_miracl_end_to_end_with_an_oracle_encoder(monkeypatch, miracl_dir, tiny_model, tmp_path, index):
    monkeypatch.setattr(lib.corpus, "encode", bag_of_words)      # the passages
    monkeypatch.setattr(miracl, "encode", bag_of_words)          # the queries
    evaluation = evaluate_miracl(tiny_model, ["sw", "te"], data_dir=miracl_dir, index=index, shard_size=2,
                                 work_dir=tmp_path / "work")
    table = evaluation.per_language
    assert list(table.index) == ["sw", "te"]
    assert table.loc["sw", "n_passages"] == 5 and table.loc["te", "n_queries"] == 1
    assert table["ndcg@10"].tolist() == [1.0, 1.0] and table["recall@100"].tolist() == [1.0, 1.0]
    assert evaluation.summary["miracl_mean_ndcg@10"] == 1.0 and evaluation.summary["miracl_all_n_languages"] == 2
    assert set(evaluation.per_query.columns) == {"lang", "qid", "ndcg@10", "recall@100"}
    assert (tmp_path / "work" / "sw" / "manifest.json").is_file()


def test_evaluate_miracl_with_rerank_and_float16_storage(monkeypatch, miracl_dir, tiny_model, tmp_path):
    monkeypatch.setattr(lib.corpus, "encode", bag_of_words)      # the passages
    monkeypatch.setattr(miracl, "encode", bag_of_words)          # the queries
    evaluation = evaluate_miracl(tiny_model, ["sw"], data_dir=miracl_dir, index="hnsw", rerank=200,
                                 store_dtype="float16", work_dir=tmp_path / "work")
    assert evaluation.per_language.loc["sw", "ndcg@10"] == pytest.approx(1.0)
    assert evaluation.per_language.loc["sw", "rerank"] == 200


def test_evaluate_miracl_with_the_tiny_backbone(miracl_dir, tiny_model):
    evaluation = evaluate_miracl(tiny_model, ["te"], data_dir=miracl_dir, index="flat")
    row = evaluation.per_language.loc["te"]
    assert 0.0 <= row["ndcg@10"] <= 1.0 and row["recall@100"] == 1.0        # 3 passages: all in the top 100
    assert set(evaluation.timings) >= {"encode_corpus_s", "index_build_s", "search_s"}


def test_run_evaluation_serves_miracl_through_the_registry(miracl_dir):
    evaluation, path = run_evaluation("tiny", "miracl", languages=["te"], data_dir=str(miracl_dir), device="cpu",
                                      run="m")
    config = json.loads((path / "config.json").read_text())
    assert config["dataset"] == "miracl" and config["index"] == "flat" and config["languages"] == ["te"]
    assert list(config)[-1] == "index"
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["summary"]["miracl_all_n_languages"] == 1 and metrics["primary_metric"] == "miracl_mean_ndcg@10"
    assert evaluation.per_language.loc["te", "recall@100"] == 1.0


def test_corpus_embeddings_are_deleted_after_a_complete_evaluation_unless_kept(miracl_dir, tmp_path, monkeypatch):
    from lib.io import outputs_dir

    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))
    cache = outputs_dir() / "cache" / "miracl"
    run_evaluation("tiny", "miracl", languages=["te"], data_dir=str(miracl_dir), device="cpu", run="gone")
    assert not cache.exists() or not any(cache.iterdir())                     # the default: deleted
    _, path = run_evaluation("tiny", "miracl", languages=["te"], data_dir=str(miracl_dir), device="cpu",
                             run="kept", keep_embeddings=True)
    assert [p.name for p in cache.iterdir()] and any(cache.rglob("manifest.json"))
    assert json.loads((path / "config.json").read_text())["keep_embeddings"] is True
