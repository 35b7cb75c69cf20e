"""TREC run files and qrels of every evaluation (LAReQA, MIRACL, Tatoeba), so that any IR tool can
recompute its metrics; the run tag (last column) is the evaluation's run name (``outputs/<run>/``).
MIRACL writes ``<lang>.run.gz`` / ``<lang>.qrels`` (its graded judgements as they are, the top 100
of each query), Tatoeba ``xx2eng`` and ``eng2xx`` (query ``<code>/<line>``, documents
``<code>.<side>/<line>``, the top ``TATOEBA_RUN_DEPTH``; line i translates line i); LAReQA:

Each setting (mono, cross, multi) becomes two files in ``outputs/<run>/trec/``:

* ``<setting>.run.gz``: ``query_id Q0 doc_id rank score tag``, the top ``depth`` (100) candidates
  of every ranking, best first (gzip; ir_measures, ranx and pytrec_eval read it as it is,
  ``trec_eval`` after ``gunzip``);
* ``<setting>.qrels``: ``query_id 0 doc_id 1``, every relevant candidate.

A ranking is one query language ``X``, one candidate pool ``Y`` (a language, or ``all`` for the
multilingual pool) and one question id: query id ``X-Y/<qid>``; doc ids are the candidates'
``cid``. The rankings, pools and searches are those of ``lib.retrieval.lareqa_ranks`` (the same
faiss index over the same query blocks, hence the same scores), read off its ranks table.

How the project's numbers map onto what a TREC tool computes from these files
(``ir_measures``: ``AP``, ``AP@20``, ``R@1``, ``R@10``, per query):

* ``map@20`` = ``AP@20`` and ``recall@K`` = ``R@K``, per query, exactly (when R <= 20, always here);
* ``map`` = ``AP`` per query when every relevant candidate is in the top ``depth``; each relevant
  candidate below it adds ``k / r_k / R < 1 / depth`` to the project's AP and nothing to the tool's;
* the project's averages are not a mean over queries: mean per (X, Y), then over the pools Y of a
  query language, then over query languages (``lib.metrics.summarise``). ``macro_average`` applies
  the same to per-query values read back from a tool, keyed by the query ids above.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.data import RetrievalDataset
from lib.io import atomic_path

RUN_DEPTH = 100
TATOEBA_RUN_DEPTH = 10
RUN_TAG = "hybrid-batch"     # only when no run name is given
TREC_FOLDER = "trec"


def trec_query_id(query_lang: str, target_lang: str, qid: str) -> str:
    """``X-Y/<qid>``: one ranking of question ``qid`` in language X against the pool Y."""
    return f"{query_lang}-{target_lang}/{qid}"


def parse_trec_query_id(query_id: str) -> tuple[str, str, str]:
    """``(query_lang, target_lang, qid)`` of a query id written by ``trec_query_id``."""
    pair, _, qid = query_id.partition("/")
    query_lang, _, target_lang = pair.partition("-")
    return query_lang, target_lang, qid


@dataclass
class TrecRun:
    """The top ``depth`` candidates of every ranking of one setting, and its relevance judgements.

    ``blocks``: one per (query language, pool): query ids, candidate rows ``(n, k)`` best first
    (rows of the dataset's candidates) and their scores ``(n, k)``; ``doc_ids``: candidate row ->
    ``cid``; ``qrels``: ``query_id, doc_id`` of every relevant candidate.
    """

    setting: str
    doc_ids: np.ndarray
    blocks: list[tuple[list[str], np.ndarray, np.ndarray]] = field(default_factory=list)
    qrels: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["query_id", "doc_id"]))

    def write(self, folder: str | Path, tag: str = RUN_TAG) -> tuple[Path, Path]:
        """``<setting>.run.gz`` and ``<setting>.qrels`` in ``folder``, each written atomically."""
        folder = Path(folder)
        run_path, qrels_path = folder / f"{self.setting}.run.gz", folder / f"{self.setting}.qrels"
        with atomic_path(run_path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=4) as handle:
            for query_ids, top, scores in self.blocks:
                n, k = top.shape
                pd.DataFrame({
                    "query_id": np.repeat(query_ids, k), "q0": "Q0", "doc_id": self.doc_ids[top.ravel()],
                    "rank": np.tile(np.arange(1, k + 1), n), "score": scores.ravel(), "tag": tag,
                }).to_csv(handle, sep=" ", header=False, index=False, float_format="%.9g")
        qrels = self.qrels if "relevance" in self.qrels else self.qrels.assign(relevance=1)
        with atomic_path(qrels_path) as tmp:
            qrels.assign(iteration=0)[["query_id", "iteration", "doc_id", "relevance"]].to_csv(
                tmp, sep=" ", header=False, index=False)
        return run_path, qrels_path


def _top_k(pool: np.ndarray, queries: np.ndarray, depth: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Scores and rows of the ``depth`` best pool rows for each query, best first, ties by row
    (the order ``lib.retrieval.score_pools`` gives its top-k): chunked float32 products."""
    candidates = torch.from_numpy(np.ascontiguousarray(pool, dtype=np.float32))
    scores, ids = [], []
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            block = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32))
            values, rows = torch.topk(block @ candidates.T, depth, dim=1)
            values, rows = values.numpy(), rows.numpy()
            order = np.lexsort((rows, -values), axis=1)
            scores.append(np.take_along_axis(values, order, axis=1))
            ids.append(np.take_along_axis(rows, order, axis=1))
    return np.concatenate(scores), np.concatenate(ids)


def lareqa_run_files(dataset: RetrievalDataset, question_embeddings: np.ndarray,
                     candidate_embeddings: np.ndarray, ranks: pd.DataFrame,
                     depth: int = RUN_DEPTH) -> list[TrecRun]:
    """One ``TrecRun`` per setting of ``ranks`` (``lib.retrieval.lareqa_ranks``' table): the same
    rankings (query language, pool, questions in the same order), cut at ``depth``."""
    questions, candidates = dataset.questions, dataset.candidates
    question_row = {key: row for row, key in enumerate(zip(questions.lang, questions.qid))}
    candidate_lang = candidates.lang.to_numpy()
    answers = dataset.answers_by_qid()
    doc_ids = candidates.cid.to_numpy()
    runs = []
    for setting, in_setting in ranks.groupby("setting", sort=False):
        run = TrecRun(setting, doc_ids)
        qrels = []
        for (query_lang, target_lang), group in in_setting.groupby(["query_lang", "target_lang"], sort=False):
            pool = (np.arange(len(candidates)) if target_lang == "all"
                    else np.flatnonzero(candidate_lang == target_lang))
            qids = group.qid.drop_duplicates().tolist()
            rows = [question_row[(query_lang, qid)] for qid in qids]
            scores, local = _top_k(candidate_embeddings[pool], question_embeddings[rows],
                                   min(depth, len(pool)))
            query_ids = [trec_query_id(query_lang, target_lang, qid) for qid in qids]
            run.blocks.append((query_ids, pool[local], scores))
            qrels.append(pd.DataFrame({
                "query_id": [trec_query_id(query_lang, target_lang, qid) for qid in group.qid],
                "doc_id": doc_ids[[answers[qid][lang] for qid, lang in zip(group.qid, group.relevant_lang)]],
            }))
        run.qrels = pd.concat(qrels, ignore_index=True)
        runs.append(run)
    return runs


def write_run_files(run_path: str | Path, runs: list[TrecRun], tag: str = RUN_TAG) -> list[Path]:
    """Every setting's run file and qrels under ``<run_path>/trec/``, tagged ``tag`` (the run name)."""
    written = []
    for run in runs:
        written += run.write(Path(run_path) / TREC_FOLDER, tag=tag)
    return written


def scored_run(setting: str, run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> TrecRun:
    """A ``TrecRun`` of ``{query_id: {doc_id: score}}`` and graded ``{query_id: {doc_id: relevance}}``
    (MIRACL): each query's documents best first, ties by doc id."""
    doc_ids = np.array(sorted({doc for docs in run.values() for doc in docs}), dtype=object)
    row = {doc: i for i, doc in enumerate(doc_ids)}
    trec = TrecRun(setting, doc_ids)
    for query_id, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
        if ranked:
            trec.blocks.append(([query_id], np.array([[row[d] for d, _ in ranked]]),
                                np.array([[s for _, s in ranked]], dtype=np.float32)))
    trec.qrels = pd.DataFrame([(q, d, r) for q, docs in qrels.items() for d, r in docs.items()],
                              columns=["query_id", "doc_id", "relevance"])
    return trec


def aligned_runs(embeddings: dict[str, tuple[np.ndarray, np.ndarray]], depth: int = TATOEBA_RUN_DEPTH) -> list[TrecRun]:
    """``xx2eng`` and ``eng2xx`` runs of aligned pairs (Tatoeba): ``embeddings[code] = (xx, eng)``,
    row i of one translating row i of the other; the top ``depth`` of each side's lines."""
    runs = []
    for setting, (source, target) in {"xx2eng": ("xx", "eng"), "eng2xx": ("eng", "xx")}.items():
        names, blocks, qrels, offset = [], [], [], 0
        for code, pair in embeddings.items():
            queries, documents = pair if setting == "xx2eng" else pair[::-1]
            query_ids = [f"{code}/{i}" for i in range(len(queries))]
            scores, top = _top_k(documents, queries, min(depth, len(documents)))
            blocks.append((query_ids, top + offset, scores))
            names += [f"{code}.{target}/{j}" for j in range(len(documents))]
            qrels.append(pd.DataFrame({"query_id": query_ids,
                                       "doc_id": [f"{code}.{target}/{i}" for i in range(len(queries))]}))
            offset += len(documents)
        runs.append(TrecRun(setting, np.array(names, dtype=object), blocks, pd.concat(qrels, ignore_index=True)))
    return runs


def macro_average(per_query: pd.DataFrame, value: str = "value") -> float:
    """The project's average of per-query values keyed by TREC query id (column ``query_id``):
    mean per (query language, pool), then over the pools of a query language, then over query
    languages, as ``lib.metrics.summarise`` averages its per-query table."""
    keys = pd.DataFrame([parse_trec_query_id(q) for q in per_query.query_id],
                        columns=["query_lang", "target_lang", "qid"], index=per_query.index)
    table = pd.concat([keys, per_query[value]], axis=1)
    per_pair = table.groupby(["query_lang", "target_lang"])[value].mean()
    return float(per_pair.groupby("query_lang").mean().mean())
