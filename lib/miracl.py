"""MIRACL (monolingual retrieval over Wikipedia, 18 languages): dev topics, qrels, corpora, scores.

Sources on the Hugging Face hub, pinned:

* ``miracl/miracl`` at ``MIRACL_REVISION``: ``miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-dev.tsv``
  (``qid \\t query``) and ``miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-dev.tsv``
  (TREC: ``qid Q0 docid relevance``);
* ``miracl/miracl-corpus`` at ``CORPUS_REVISION``: ``miracl-corpus-v1.0-{lang}/docs-{i}.jsonl.gz``,
  one passage per line ``{"docid", "title", "text"}``; ``CORPUS_SHARDS`` files per language.

The two revisions are those that public code pins for these repositories (they could not be
checked against the hub from here); pass ``revision=`` / ``corpus_revision=`` to use others.
Downloads go through ``huggingface_hub.hf_hub_download`` into ``<cache>/huggingface``. Offline,
``data_dir`` (or ``MIRACL_DIR``) is a folder with the same layout as the two repositories merged:
``miracl-v1.0-{lang}/{topics,qrels}/...`` and ``miracl-corpus-v1.0-{lang}/docs-*.jsonl[.gz]``.

Retrieval, per language: the passage text is ``title + " " + text``, as the MIRACL baselines
index it (mDPR/BM25 in Pyserini; ir_datasets' ``MiraclDoc.default_text``); passages are encoded
on the backbone's passage side into resumable shards (``lib.corpus``), queries on its query side;
the top ``k = 100`` by inner product come from the chosen index (``flat`` exact by default).
Scores: nDCG@10 and Recall@100 with ``ir_measures`` (trec_eval semantics, graded relevance as
judged), per language, then mean and median over languages (the paper reports 15 languages:
``PAPER_LANGUAGES``).

    evaluation = evaluate_miracl(model, ["sw", "te"], index="flat")
    evaluation.per_language[["ndcg@10", "recall@100"]]
    evaluation.summary["miracl_mean_ndcg@10"]

Summary keys (``lib.results``' scheme): ``miracl_{mean,median}_{ndcg@10,recall@100}`` over
languages and ``miracl_all_n_languages``; the primary metric is ``miracl_mean_ndcg@10``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
from huggingface_hub import hf_hub_download

from lib.backbones import BackboneError, load_model
from lib.cli import check_cli_arguments, run_cli
from lib.validation import check_range
from lib.corpus import encode_corpus
from lib.data import DataError
from lib.encode import encode, model_identity
from lib.io import cache_dir, fingerprint, outputs_dir, run_dir, write_text
from lib.run_files import scored_run
from lib.results import (Evaluation, EvaluationRequest, metric_key, parse_metric_key, register_evaluator,
                         write_evaluation)

MIRACL_REPO = "miracl/miracl"
MIRACL_REVISION = "5be20db9509754dadad47689368639fcec739c00"
CORPUS_REPO = "miracl/miracl-corpus"
CORPUS_REVISION = "d921ec7e349ce0d28daf30b2da9da5ee698bef0d"

MIRACL_LANGUAGES = ["ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw",
                    "te", "th", "yo", "zh"]
PAPER_LANGUAGES = ["sw", "bn", "hi", "ko", "th", "te", "fi", "ja", "es", "fr", "ru", "zh", "fa", "ar", "id"]
# docs-{i}.jsonl.gz files per language in miracl/miracl-corpus
CORPUS_SHARDS = {"ar": 5, "bn": 1, "de": 32, "en": 66, "es": 21, "fa": 5, "fi": 4, "fr": 30, "hi": 2, "id": 3,
                 "ja": 14, "ko": 3, "ru": 20, "sw": 1, "te": 2, "th": 2, "yo": 1, "zh": 10}
# passages per language (project-miracl/miracl README); de and yo are not listed there
PASSAGES = {"ar": 2_061_414, "bn": 297_265, "en": 32_893_221, "es": 10_373_953, "fa": 2_207_172,
            "fi": 1_883_509, "fr": 14_636_953, "hi": 506_264, "id": 1_446_315, "ja": 6_953_614,
            "ko": 1_486_752, "ru": 9_543_918, "sw": 131_924, "te": 518_079, "th": 542_166, "zh": 4_934_368}
MEASURES = ("nDCG@10", "R@100")
METRIC_NAMES = {"nDCG@10": "ndcg@10", "R@100": "recall@100"}


def _check_language(lang: str) -> str:
    if lang not in MIRACL_LANGUAGES:
        raise DataError(f"MIRACL language {lang!r}: expected one of {MIRACL_LANGUAGES}")
    return lang


def miracl_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local folder to read: ``data_dir``, else ``MIRACL_DIR``, else ``None`` (the hub)."""
    root = data_dir if data_dir is not None else os.environ.get("MIRACL_DIR")
    return Path(root) if root else None


def _hub_file(repo_id: str, filename: str, revision: str) -> Path:
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=revision,
                                    cache_dir=cache_dir() / "huggingface"))
    except Exception as error:  # network, missing file, gated repo: one message that says what to do
        raise DataError(
            f"could not fetch {filename} from the dataset {repo_id}@{revision} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300] if str(error) else ''}). MIRACL's hub files are gated: accept "
            f"the terms at https://huggingface.co/datasets/{repo_id} while logged in on the website, then log in "
            "here with `hf auth login` (older clients: `huggingface-cli login`) or set HF_TOKEN; without "
            "network, set MIRACL_DIR (or data_dir=) to a folder with the same layout") from error


def annotation_file(lang: str, kind: str, split: str = "dev", data_dir: str | os.PathLike | None = None,
                    revision: str = MIRACL_REVISION) -> Path:
    """``topics`` or ``qrels`` file of one language and split (local folder, else the pinned hub revision)."""
    _check_language(lang)
    if kind not in ("topics", "qrels"):
        raise DataError(f"kind {kind!r}: expected 'topics' or 'qrels'")
    relative = f"miracl-v1.0-{lang}/{kind}/{kind}.miracl-v1.0-{lang}-{split}.tsv"
    root = miracl_root(data_dir)
    if root is None:
        return _hub_file(MIRACL_REPO, relative, revision)
    path = root / relative
    if not path.is_file():
        raise DataError(f"missing file {path}: the MIRACL folder ({root}) must hold {relative} "
                        f"(the layout of {MIRACL_REPO}); only 'dev' has public qrels")
    return path


def corpus_files(lang: str, data_dir: str | os.PathLike | None = None,
                 revision: str = CORPUS_REVISION) -> list[Path]:
    """The corpus files of one language in shard order (``docs-0``, ``docs-1``, ...)."""
    _check_language(lang)
    folder = f"miracl-corpus-v1.0-{lang}"
    root = miracl_root(data_dir)
    if root is None:
        return [_hub_file(CORPUS_REPO, f"{folder}/docs-{i}.jsonl.gz", revision) for i in range(CORPUS_SHARDS[lang])]
    files = [p for p in (root / folder).glob("docs-*.jsonl*") if p.name.endswith((".jsonl", ".jsonl.gz"))]
    if not files:
        raise DataError(f"no corpus files {root / folder}/docs-*.jsonl[.gz]: the MIRACL folder must hold the "
                        f"layout of {CORPUS_REPO}")

    def shard_number(path: Path) -> int:
        stem = path.name.split(".")[0]
        try:
            return int(stem.split("-", 1)[1])
        except (IndexError, ValueError):
            raise DataError(f"corpus file {path}: expected a name docs-<number>.jsonl[.gz]") from None
    return sorted(files, key=shard_number)


def read_topics(path: str | os.PathLike) -> dict[str, str]:
    """``{qid: query}`` from a topics TSV (``qid \\t text``)."""
    topics: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t", 1)
        if len(parts) != 2:
            raise DataError(f"{path} line {number}: expected 'qid<TAB>query', got {line[:80]!r}")
        if parts[0] in topics:
            raise DataError(f"{path} line {number}: duplicate query id {parts[0]!r}")
        topics[parts[0]] = parts[1].strip()
    return topics


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{qid: {docid: relevance}}`` from a TREC qrels file (``qid Q0 docid relevance``, tab or space)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise DataError(f"{path} line {number}: expected 'qid Q0 docid relevance', got {line[:80]!r}")
        try:
            relevance = int(parts[3])
        except ValueError:
            raise DataError(f"{path} line {number}: relevance {parts[3]!r} is not an integer") from None
        qrels.setdefault(parts[0], {})[parts[2]] = relevance
    return qrels


def iter_corpus(files: Iterable[str | os.PathLike]) -> Iterator[dict[str, str]]:
    """Passages ``{"docid", "title", "text"}`` of JSON-lines files, gzipped or not, in order."""
    for path in files:
        path = Path(path)
        with open(path, "rb") as probe:
            gzipped = probe.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rt", encoding="utf-8", newline="\n") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    yield {"docid": str(doc["docid"]), "title": doc.get("title") or "", "text": doc.get("text") or ""}
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise DataError(f"{path} line {number}: expected a JSON object with docid, title, text "
                                    f"({error})") from None


def passage_text(doc: dict[str, str]) -> str:
    """``title + " " + text``, the MIRACL baselines' passage (stripped when the title is empty)."""
    return f"{doc['title']} {doc['text']}".strip()


def load_miracl_queries(lang: str, split: str = "dev", data_dir: str | os.PathLike | None = None,
                        revision: str = MIRACL_REVISION) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``(topics, qrels)`` of one language, qrels restricted to the topics' queries."""
    topics = read_topics(annotation_file(lang, "topics", split, data_dir, revision))
    qrels = read_qrels(annotation_file(lang, "qrels", split, data_dir, revision))
    unknown = sorted(set(qrels) - set(topics))
    if unknown:
        raise DataError(f"MIRACL {lang} {split}: qrels name {len(unknown)} queries missing from the topics "
                        f"(e.g. {unknown[:3]}); the two files do not belong together")
    return topics, qrels


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> tuple[dict[str, float], pd.DataFrame]:
    """nDCG@10 and Recall@100 with ir_measures: ``(aggregate, per-query table)``.

    Aggregates are ir_measures' (trec_eval): the mean over queries that have qrels; a judged
    query the run does not answer counts as 0 (it is added to the run with no passages).
    """
    import ir_measures   # here, not at import: lib.evaluate (LAReQA) runs without ir_measures and faiss

    measures = [ir_measures.parse_measure(m) for m in MEASURES]
    run = {qid: docs for qid, docs in run.items()}
    missing = [qid for qid in qrels if not run.get(qid)]
    for qid in missing:  # trec_eval would skip them and inflate the mean
        run[qid] = {"__no_passage__": 0.0}
    aggregate = ir_measures.calc_aggregate(measures, qrels, run)
    rows = {}
    for metric in ir_measures.iter_calc(measures, qrels, run):
        rows.setdefault(metric.query_id, {})[METRIC_NAMES[str(metric.measure)]] = metric.value
    per_query = pd.DataFrame.from_dict(rows, orient="index").rename_axis("qid").reset_index()
    return {METRIC_NAMES[str(m)]: float(v) for m, v in aggregate.items()}, per_query


AGGREGATES = ("mean", "median")
COUNT_KEY = "miracl_all_n_languages"


def miracl_summary_keys(dataset: str = "miracl") -> list[str]:
    return [COUNT_KEY] + [metric_key("miracl", aggregate, metric) for aggregate in AGGREGATES
                          for metric in METRIC_NAMES.values()]


def miracl_legacy_key(key: str) -> str:
    """``miracl_mean_ndcg@10`` -> ``ndcg@10_mean`` (before the key scheme)."""
    if key == COUNT_KEY:
        return "n_languages"
    _, aggregate, metric = parse_metric_key(key)
    return f"{metric}_{aggregate}"


def summarise_languages(per_language: pd.DataFrame) -> dict[str, float]:
    """Mean and median of each metric over languages (``miracl_{mean,median}_{metric}``)."""
    summary: dict[str, float] = {COUNT_KEY: float(len(per_language))}
    for metric in METRIC_NAMES.values():
        values = per_language[metric].tolist()
        summary[metric_key("miracl", "mean", metric)] = float(statistics.fmean(values))
        summary[metric_key("miracl", "median", metric)] = float(statistics.median(values))
    return summary


def evaluate_miracl(model, languages: Iterable[str] = PAPER_LANGUAGES, data_dir: str | os.PathLike | None = None,
                    index: str = "flat", index_params=None, k: int = 100, batch_size: int = 64,
                    shard_size: int = 50_000, split: str = "dev", work_dir: str | os.PathLike | None = None,
                    revision: str = MIRACL_REVISION, corpus_revision: str = CORPUS_REVISION,
                    rerank: int | None = None, store_dtype: str = "float32",
                    keep_embeddings: bool = True) -> Evaluation:
    """Dense retrieval on MIRACL per language -> ``lib.results.Evaluation``.

    ``summary``: ``miracl_{mean,median}_{ndcg@10,recall@100}`` over languages and
    ``miracl_all_n_languages``; ``per_language``: one row per language (queries, passages, both metrics,
    index type and build times); ``per_query``: ``lang, qid, ndcg@10, recall@100``. Corpus
    embeddings persist in resumable shards under ``work_dir`` (default
    ``outputs/cache/miracl/<backbone>-<key>/<lang>``), so a killed run resumes where it stopped.
    ``index_params`` (``lib.indexes.IndexParams``) overrides ``index`` with explicit knobs;
    ``rerank=1000`` takes that many candidates from an approximate index and re-scores them
    exactly from the stored embeddings (``lib.indexes.rerank``); ``store_dtype="float16"`` halves
    the disk used by the embeddings. ``keep_embeddings=False`` deletes ``work_dir`` once every
    language is scored (the grid's default: the paper's 15 languages take about 177 GB per model).
    """
    from lib.indexes import IndexParams, build_index, rerank as rerank_exact, search   # faiss, only here

    params = index_params if index_params is not None else IndexParams(index)
    languages = [_check_language(lang) for lang in languages]
    if not languages:
        raise DataError("no MIRACL language requested")
    if work_dir is None:
        key = fingerprint(model_identity(model.backbone), corpus_revision, shard_size)
        work_dir = outputs_dir() / "cache" / "miracl" / f"{model.backbone.name}-{key}"
    timings: dict[str, float] = {}
    rows, per_query_tables, run_files = [], [], []
    for lang in languages:
        topics, qrels = load_miracl_queries(lang, split, data_dir, revision)
        files = corpus_files(lang, data_dir, corpus_revision)
        start = time.perf_counter()
        texts, ids = itertools.tee(iter_corpus(files))
        store = encode_corpus(model, (passage_text(d) for d in texts), Path(work_dir) / lang,
                              ids=(d["docid"] for d in ids), side="passage", shard_size=shard_size,
                              batch_size=batch_size, n_texts=PASSAGES.get(lang), dtype=store_dtype)
        encode_corpus_s = time.perf_counter() - start
        if not store.complete:
            raise DataError(f"the corpus embeddings in {store.directory} are incomplete: encode the missing shards")
        built, record = build_index(store, params)
        qids = sorted(topics)
        start = time.perf_counter()
        query_embeddings = encode(model, [topics[q] for q in qids], "query", batch_size=batch_size)
        encode_queries_s = time.perf_counter() - start
        start = time.perf_counter()
        if rerank and rerank > k:
            scores, hits = rerank_exact(store, query_embeddings, search(built, query_embeddings, rerank)[1], k)
        else:
            scores, hits = search(built, query_embeddings, k)
        search_s = time.perf_counter() - start
        docids = store.ids()
        run = {qid: {docids[h]: float(s) for s, h in zip(scores[i], hits[i]) if h >= 0}
               for i, qid in enumerate(qids)}
        aggregate, per_query = score_run(qrels, run)
        run_files.append(scored_run(lang, run, qrels))
        per_query.insert(0, "lang", lang)
        per_query_tables.append(per_query)
        rows.append({"lang": lang, "n_queries": len(qids), "n_judged_queries": len(qrels),
                     "n_passages": store.ntotal, **aggregate, "index": params.kind, "rerank": rerank or 0,
                     "index_device": record["device"], "encode_corpus_s": encode_corpus_s,
                     "train_s": record["train_s"], "add_s": record["add_s"],
                     "encode_queries_s": encode_queries_s, "search_s": search_s})
        for name in ("encode_corpus_s", "encode_queries_s", "search_s"):
            timings[name] = timings.get(name, 0.0) + rows[-1][name]
        timings["index_build_s"] = timings.get("index_build_s", 0.0) + record["train_s"] + record["add_s"]
        del built
    per_language = pd.DataFrame(rows).set_index("lang")
    if not keep_embeddings:  # complete: every language scored
        shutil.rmtree(work_dir, ignore_errors=True)
    return Evaluation(summarise_languages(per_language), per_language,
                      per_query=pd.concat(per_query_tables, ignore_index=True), timings=timings, run_files=run_files)


# what a grid's report shows of each run (lib.gather, lib.report), the paper's two metrics first
REPORT_METRICS = ("miracl_mean_ndcg@10", "miracl_mean_recall@100", "miracl_median_ndcg@10", "miracl_median_recall@100")


@register_evaluator("miracl", report_metrics=REPORT_METRICS, primary_metric=REPORT_METRICS[0],
                    summary_keys=miracl_summary_keys, legacy_key=miracl_legacy_key)
def _evaluate_miracl_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict]:
    """``lib.evaluate.run_evaluation``'s MIRACL: the paper's 15 languages unless ``languages``."""
    evaluation = evaluate_miracl(model, request.languages or PAPER_LANGUAGES, data_dir=request.data_dir,
                                 index=request.index, batch_size=request.batch_size,
                                 keep_embeddings=request.keep_embeddings)
    return evaluation, {"languages": request.languages, "dataset_revision": f"{MIRACL_REPO}@{MIRACL_REVISION}",
                        "index": request.index, "keep_embeddings": request.keep_embeddings}


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.miracl --backbone me5-small-q4 --languages sw te --index flat``: writes
    ``outputs/<run>/`` (config, versions, metrics, per_language.csv)."""
    from lib.indexes import INDEX_TYPES

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--run", default=None)
    parser.add_argument("--languages", nargs="*", default=PAPER_LANGUAGES)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--index", default="flat", choices=INDEX_TYPES)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--rerank", type=int, default=None, help="exact re-scoring of this many approximate hits")
    parser.add_argument("--store-dtype", default="float32", choices=("float32", "float16"))
    args = parser.parse_args(argv)
    check_cli_arguments(args.run, args.batch_size)
    check_range("--shard-size", args.shard_size, low=1)
    model = load_model(args.backbone)
    evaluation = evaluate_miracl(model, args.languages, args.data_dir, args.index, batch_size=args.batch_size,
                                 shard_size=args.shard_size, rerank=args.rerank, store_dtype=args.store_dtype)
    run = run_dir(args.run or f"miracl-{model.backbone.name}-{args.index}")
    config = {"dataset": "miracl", "backbone": model.backbone.as_dict(), "languages": args.languages,
              "index": args.index, "revision": MIRACL_REVISION, "corpus_revision": CORPUS_REVISION,
              "shard_size": args.shard_size, "batch_size": args.batch_size, "device": str(model.device),
              "rerank": args.rerank, "store_dtype": args.store_dtype}
    write_evaluation(run, evaluation, config)
    write_text(run / "per_language.csv", evaluation.per_language.to_csv())
    print(evaluation.per_language[["n_queries", "n_passages", "ndcg@10", "recall@100"]].round(4).to_string())
    print({k: round(v, 4) for k, v in evaluation.summary.items()})


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.miracl", (BackboneError,)))
