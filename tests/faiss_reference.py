"""The LAReQA ranking before lib.retrieval counted ranks: a faiss full sort of every pool (the
reference that tests and benchmarks/bench_speed.py compare lib.retrieval against), and the
multilingual neighbours of lib.bias as they were then (a second scan of the multilingual pool).

Original docstring: exact inner-product search with faiss, and the LAReQA settings built on it.

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

from lib.bias import Neighbours
from lib.data import RetrievalDataset
from lib.retrieval import SETTINGS


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
        position = np.empty_like(ids)
        position[np.arange(len(ids))[:, None], ids] = np.arange(1, n + 1)
        out += [position[i, relevant[start + i]] for i in range(len(ids))]
    return out


def lareqa_ranks_full_sort(dataset: RetrievalDataset, question_embeddings: np.ndarray,
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


def _ranks_of(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``1 + #{candidates scoring strictly above value}`` per row; NaN where the value is -inf (none)."""
    ranks = 1.0 + np.count_nonzero(scores > values[:, None], axis=1)
    return np.where(np.isfinite(values), ranks, np.nan)


def multilingual_neighbours_before(dataset, question_embeddings: np.ndarray, candidate_embeddings: np.ndarray,
                            k: int = 10, chunk: int = 512, progress: bool = True) -> Neighbours:
    """lib.bias.multilingual_neighbours before it reused lib.retrieval's pass (verbatim): top-``k``
    candidates and the best irrelevant candidates of every multilingual query.

    Exact search by matrix product (embeddings are L2-normalised: inner product = cosine), in
    chunks of ``chunk`` queries; ties in the top-k are broken by candidate row. XQuAD-R in full
    (13,090 queries x 13,014 candidates) takes seconds on two CPU cores.

        neighbours = multilingual_neighbours(dataset, questions, candidates, k=10)
        neighbours.alignment.same_language_distractor.mean()
    """
    from tqdm.auto import tqdm

    questions, candidates = dataset.questions, dataset.candidates
    question_embeddings = np.asarray(question_embeddings, dtype=np.float32)
    candidate_embeddings = np.asarray(candidate_embeddings, dtype=np.float32)
    if len(question_embeddings) != len(questions) or len(candidate_embeddings) != len(candidates):
        raise ValueError(
            f"embeddings do not match the dataset: {len(question_embeddings)} question rows for "
            f"{len(questions)} questions, {len(candidate_embeddings)} candidate rows for "
            f"{len(candidates)} candidates; encode dataset.questions.text and dataset.candidates.text")
    n_candidates = len(candidates)
    k = int(min(k, n_candidates))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    answers = dataset.answers_by_qid()
    candidate_lang = candidates.lang.to_numpy()
    candidate_ids = candidates.cid.to_numpy() if "cid" in candidates else np.arange(n_candidates).astype(str)
    query_lang = questions.lang.to_numpy()
    qids = questions.qid.to_numpy()
    n_queries = len(questions)

    # relevant candidates per query as a padded matrix (-1 = none): column 0 the query's own language
    width = max(len(answers[q]) for q in qids) if n_queries else 1
    relevant = np.full((n_queries, width), -1, dtype=np.int64)
    for i, (qid, x) in enumerate(zip(qids, query_lang)):
        by_lang = answers[qid]
        relevant[i, 0] = by_lang[x]
        others = [row for lang, row in by_lang.items() if lang != x]
        relevant[i, 1:1 + len(others)] = others
    pools = {lang: np.flatnonzero(candidate_lang == lang) for lang in np.unique(candidate_lang)}
    outside = {lang: np.flatnonzero(candidate_lang != lang) for lang in pools}

    columns = {name: np.full(n_queries, np.nan) for name in
               ("same_language_rank", "best_other_rank", "wrong_same_language_rank", "wrong_other_language_rank")}
    top = np.empty((n_queries, k), dtype=np.int64)
    starts = range(0, n_queries, chunk)
    for start in tqdm(starts, desc="neighbours", disable=not progress, total=len(starts)):
        stop = min(start + chunk, n_queries)
        scores = question_embeddings[start:stop] @ candidate_embeddings.T
        rows = np.arange(stop - start)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        top[start:stop] = np.take_along_axis(part, order, axis=1)

        block = relevant[start:stop]
        valid = block >= 0
        relevant_scores = np.where(valid, scores[rows[:, None], np.maximum(block, 0)], -np.inf)
        best_other = relevant_scores[:, 1:].max(axis=1) if width > 1 else np.full(len(rows), -np.inf)
        masked = scores.copy()
        masked[np.repeat(rows, valid.sum(axis=1)), block[valid]] = -np.inf
        wrong_same = np.full(len(rows), -np.inf, dtype=np.float32)
        wrong_other = np.full(len(rows), -np.inf, dtype=np.float32)
        for lang in np.unique(query_lang[start:stop]):
            mine = np.flatnonzero(query_lang[start:stop] == lang)
            wrong_same[mine] = masked[np.ix_(mine, pools[lang])].max(axis=1)
            if len(outside[lang]):
                wrong_other[mine] = masked[np.ix_(mine, outside[lang])].max(axis=1)
        for name, values in (("same_language_rank", relevant_scores[:, 0]), ("best_other_rank", best_other),
                             ("wrong_same_language_rank", wrong_same), ("wrong_other_language_rank", wrong_other)):
            columns[name][start:stop] = _ranks_of(scores, values)

    alignment = pd.DataFrame({"query_lang": query_lang, "qid": qids, "n_relevant": (relevant >= 0).sum(axis=1),
                              **columns})
    defined = alignment.best_other_rank.notna() & alignment.wrong_same_language_rank.notna()
    distractor = alignment.wrong_same_language_rank < alignment.best_other_rank
    alignment["same_language_distractor"] = distractor.where(defined).astype("float")
    flat = top.ravel()
    top_k = pd.DataFrame({
        "query_lang": np.repeat(query_lang, k), "qid": np.repeat(qids, k),
        "position": np.tile(np.arange(1, k + 1), n_queries), "cid": candidate_ids[flat],
        "candidate_lang": candidate_lang[flat],
        "relevant": (top[:, :, None] == relevant[:, None, :]).any(axis=2).ravel()})
    return Neighbours(top_k, alignment)
