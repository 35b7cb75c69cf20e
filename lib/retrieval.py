"""Exact inner-product search with faiss, and the LAReQA settings built on it.

Embeddings are L2-normalised, so inner product = cosine. Each setting searches a pool and
records the rank of every relevant item in the full ranking of that pool:

* mono   X -> X: queries in X against the candidates in X;
* cross  X -> Y: queries in X against the candidates in Y != X (queries whose id exists in Y);
* multi  X -> all: queries in X against the pool of every language; every translation of the
  answer is relevant.
"""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd

from lib.data import RetrievalDataset

SETTINGS = ("mono", "cross", "multi")


def build_index(embeddings: np.ndarray, kind: str = "flat") -> faiss.Index:
    """An exact inner-product index (``kind="flat"``) over float32 row vectors."""
    if kind != "flat":
        raise ValueError(f"index kind {kind!r}: LAReQA pools are small, only 'flat' (exact) is offered here")
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    return index


def full_ranks(index: faiss.Index, queries: np.ndarray, relevant: list[np.ndarray],
               chunk: int = 512) -> list[np.ndarray]:
    """1-based rank of each relevant item (pool row ids) in each query's full ranking of ``index``."""
    n = index.ntotal
    out: list[np.ndarray] = []
    for start in range(0, len(queries), chunk):
        block = np.ascontiguousarray(queries[start:start + chunk], dtype=np.float32)
        _, ids = index.search(block, n)
        if (ids < 0).any():  # faiss's id for a NaN score: the ranks would be garbage
            raise ValueError(f"faiss returned no ranking for {int((ids < 0).any(axis=1).sum())} queries "
                             "(NaN scores): the embeddings are not finite; check the model's weights")
        position = np.empty_like(ids)
        position[np.arange(len(ids))[:, None], ids] = np.arange(1, n + 1)
        out += [position[i, relevant[start + i]] for i in range(len(ids))]
    return out


def lareqa_ranks(dataset: RetrievalDataset, question_embeddings: np.ndarray,
                 candidate_embeddings: np.ndarray, settings=SETTINGS) -> pd.DataFrame:
    """Long table of relevant ranks: ``setting, query_lang, target_lang, qid, relevant_lang, rank``."""
    questions, candidates = dataset.questions, dataset.candidates
    answers = dataset.answers_by_qid()
    cand_lang = candidates.lang.to_numpy()
    rows: list[pd.DataFrame] = []

    def record(setting, query_lang, target_lang, query_rows, pool, relevant_global):
        if len(query_rows) == 0:
            return
        local = np.full(len(candidates), -1)
        local[pool] = np.arange(len(pool))
        index = build_index(candidate_embeddings[pool])
        relevant = [local[r] for r in relevant_global]
        ranks = full_ranks(index, question_embeddings[query_rows], relevant)
        counts = [len(r) for r in ranks]
        rows.append(pd.DataFrame({
            "setting": setting, "query_lang": query_lang, "target_lang": target_lang,
            "qid": np.repeat(questions.qid.to_numpy()[query_rows], counts),
            "relevant_lang": cand_lang[np.concatenate(relevant_global)],
            "rank": np.concatenate(ranks).astype(np.int64),
        }))

    by_lang = {lang: np.flatnonzero(questions.lang.to_numpy() == lang) for lang in dataset.languages}
    pools = {lang: np.flatnonzero(cand_lang == lang) for lang in dataset.languages}
    qids = questions.qid.to_numpy()
    for x in dataset.languages:
        if "mono" in settings:
            rows_x = by_lang[x]
            record("mono", x, x, rows_x, pools[x], [np.array([answers[qids[i]][x]]) for i in rows_x])
        if "cross" in settings:
            for y in dataset.languages:
                if y == x:
                    continue
                rows_xy = np.array([i for i in by_lang[x] if y in answers[qids[i]]], dtype=int)
                if len(rows_xy):
                    record("cross", x, y, rows_xy, pools[y],
                           [np.array([answers[qids[i]][y]]) for i in rows_xy])
        if "multi" in settings:
            rows_x = by_lang[x]
            record("multi", x, "all", rows_x, np.arange(len(candidates)),
                   [np.array(sorted(answers[qids[i]].values())) for i in rows_x])
    return pd.concat(rows, ignore_index=True)
