"""Exact ranking by counting, and the LAReQA settings built on it.

Embeddings are L2-normalised, so inner product = cosine. Each setting ranks a pool and records
the rank of every relevant item in the full ranking of that pool:

* mono   X -> X: queries in X against the candidates in X;
* cross  X -> Y: queries in X against the candidates in Y != X (queries whose id exists in Y);
* multi  X -> all: queries in X against the pool of every language; every translation of the
  answer is relevant.

A rank needs no sort: ``rank(r) = 1 + #{candidates c of the pool: score(c) > score(r)}``.
**Ties are optimistic**: a candidate scoring exactly as the relevant item does not push it
down (a full sort would place it at some arbitrary position inside the tied block); lib.bias
uses the same definition. Every pool of every setting is a set of columns of one
query x (all candidates) score matrix, so :func:`score_pools` computes that matrix once, in
chunks of queries (float32 matrix products), counts per candidate language how many
candidates beat each relevant item, and in the same pass keeps the top-``k`` neighbours and
the best irrelevant candidates that ``lib.bias`` needs. Full XQuAD-R (13,090 questions x
13,014 candidates) takes seconds instead of the minute a faiss sort of every pool took.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib.data import RetrievalDataset

SETTINGS = ("mono", "cross", "multi")


@dataclass
class PoolScores:
    """What one pass over the multilingual score matrix yields, per query (row of ``relevant``).

    ``relevant``: (queries, width) candidate rows, padded with -1; ``above``: (queries, width,
    groups) how many candidates of each group score strictly above each relevant item;
    ``top``: (queries, k) best candidate rows, best first, ties by row; ``wrong_rank``:
    (queries, 2) the multilingual rank of the best irrelevant candidate in the query's own group
    and outside it (NaN where there is none); ``groups``: the group names (columns of ``above``).
    """

    relevant: np.ndarray
    above: np.ndarray
    top: np.ndarray
    wrong_rank: np.ndarray
    groups: np.ndarray

    def ranks(self, within: np.ndarray | None = None) -> np.ndarray:
        """(queries, width) ranks of the relevant items: in the whole pool, or (``within``: one
        group index per relevant item) among the candidates of that group only."""
        above = self.above.sum(axis=2) if within is None else np.take_along_axis(
            self.above, within[..., None], axis=2)[..., 0]
        return 1 + above


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    width = max((len(r) for r in rows), default=1)
    padded = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    return padded


def count_above(scores: torch.Tensor, probes: torch.Tensor, column_group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(rows, probes, groups): how many columns of each group score strictly above each probe.

    Finds, for every score, how many probes of its row lie strictly below it (``searchsorted``
    among the row's sorted probes), then takes one histogram of (row, group, #probes below):
    about twice as fast as one comparison per probe and group.
    """
    rows, n_probes = probes.shape
    sorted_probes, order = probes.sort(dim=1)
    below = torch.searchsorted(sorted_probes, scores)
    bins = n_groups * (n_probes + 1)
    key = (torch.arange(rows)[:, None] * bins + column_group[None, :] * (n_probes + 1)) + below
    histogram = torch.bincount(key.view(-1), minlength=rows * bins).view(rows, n_groups, n_probes + 1)
    above_sorted = histogram.flip(2).cumsum(2).flip(2)[:, :, 1:]      # scores above the j-th smallest probe
    above = torch.empty_like(above_sorted).scatter_(2, order[:, None, :].expand_as(above_sorted), above_sorted)
    return above.transpose(1, 2)


def score_pools(queries: np.ndarray, candidates: np.ndarray, relevant: list[np.ndarray],
                candidate_groups: np.ndarray, query_groups: np.ndarray, k: int = 10,
                chunk: int = 1024) -> PoolScores:
    """Score every query against every candidate once (chunks of ``chunk`` queries) and count.

    ``relevant[i]``: candidate rows relevant to query ``i``; ``candidate_groups``,
    ``query_groups``: a group label (language) per candidate and per query.
    """
    for name, embeddings in (("query", queries), ("candidate", candidates)):
        if not np.isfinite(embeddings).all():  # NaN scores compare false: every rank would read 1
            raise ValueError(f"{name} embeddings are not finite (NaN or inf): the ranks would be garbage; "
                             "check the model's weights (a diverged training run?)")
    groups, candidate_group = np.unique(candidate_groups, return_inverse=True)
    order = np.argsort(candidate_group, kind="stable")            # candidates contiguous by group
    bounds = np.searchsorted(candidate_group[order], np.arange(len(groups) + 1))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    query_group = np.searchsorted(groups, query_groups)
    pool = torch.from_numpy(np.ascontiguousarray(candidates[order], dtype=np.float32))
    column_group = torch.from_numpy(candidate_group[order])
    padded = _pad(relevant)
    k = min(k, len(order))
    above = np.zeros((*padded.shape, len(groups)), dtype=np.int64)
    top = np.empty((len(padded), k), dtype=np.int64)
    wrong = np.full((len(padded), 2), -np.inf, dtype=np.float32)
    wrong_rank = np.full((len(padded), 2), np.nan)
    with torch.inference_mode():
        for start in range(0, len(padded), chunk):
            stop = min(start + chunk, len(padded))
            scores = torch.from_numpy(np.ascontiguousarray(queries[start:stop], dtype=np.float32)) @ pool.T
            rows = torch.arange(stop - start)[:, None]
            block = torch.from_numpy(padded[start:stop])
            columns = torch.from_numpy(position)[block.clamp(min=0)]
            probes = torch.where(block >= 0, scores[rows, columns], torch.inf)
            masked = scores.clone()
            masked[rows.expand_as(block)[block >= 0], columns[block >= 0]] = -torch.inf
            best = torch.stack([masked[:, a:b].amax(dim=1) if b > a else torch.full((stop - start,), -torch.inf)
                                for a, b in zip(bounds[:-1], bounds[1:])], dim=1)
            own = torch.from_numpy(query_group[start:stop])[:, None]
            wrong_same = best.gather(1, own)[:, 0]
            wrong_other = best.scatter(1, own, -torch.inf).amax(dim=1)
            probes = torch.cat([probes, wrong_same[:, None], wrong_other[:, None]], dim=1)
            counts = count_above(scores, probes, column_group, len(groups)).numpy()
            above[start:stop] = counts[:, :-2]
            wrong[start:stop] = probes[:, -2:].numpy()
            wrong_rank[start:stop] = 1 + counts[:, -2:].sum(axis=2)
            values, best_k = torch.topk(scores, k, dim=1)
            best_k = order[best_k.numpy()]
            by_score_then_row = np.lexsort((best_k, -values.numpy()), axis=1)
            top[start:stop] = np.take_along_axis(best_k, by_score_then_row, axis=1)
    wrong_rank[~np.isfinite(wrong)] = np.nan
    return PoolScores(padded, above, top, wrong_rank, groups)


def score_lareqa(dataset: RetrievalDataset, question_embeddings: np.ndarray,
                 candidate_embeddings: np.ndarray, k: int = 10, chunk: int = 1024) -> PoolScores:
    """:func:`score_pools` for a LAReQA dataset: relevant = the answer in every language (sorted
    candidate rows), groups = languages. Feed it to :func:`lareqa_ranks` and
    ``lib.bias.multilingual_neighbours`` to score the pool once for both."""
    questions, candidates = dataset.questions, dataset.candidates
    if len(question_embeddings) != len(questions) or len(candidate_embeddings) != len(candidates):
        raise ValueError(
            f"embeddings do not match the dataset: {len(question_embeddings)} question rows for "
            f"{len(questions)} questions, {len(candidate_embeddings)} candidate rows for "
            f"{len(candidates)} candidates; encode dataset.questions.text and dataset.candidates.text")
    answers = dataset.answers_by_qid()
    relevant = [np.array(sorted(answers[qid].values())) for qid in questions.qid]
    return score_pools(question_embeddings, candidate_embeddings, relevant, candidates.lang.to_numpy(),
                       questions.lang.to_numpy(), k=k, chunk=chunk)


def lareqa_ranks(dataset: RetrievalDataset, question_embeddings: np.ndarray,
                 candidate_embeddings: np.ndarray, settings=SETTINGS,
                 scored: PoolScores | None = None) -> pd.DataFrame:
    """Long table of relevant ranks: ``setting, query_lang, target_lang, qid, relevant_lang, rank``.

    ``scored``: the :func:`score_lareqa` of these embeddings, when already computed.
    """
    scored = scored or score_lareqa(dataset, question_embeddings, candidate_embeddings, k=1)
    questions, cand_lang = dataset.questions, dataset.candidates.lang.to_numpy()
    valid = scored.relevant >= 0
    lang = np.where(valid, cand_lang[np.maximum(scored.relevant, 0)], "")
    within = np.searchsorted(scored.groups, lang).clip(max=len(scored.groups) - 1)
    pool_rank, multi_rank = scored.ranks(within), scored.ranks()
    qids, query_lang = questions.qid.to_numpy(), questions.lang.to_numpy()
    rows: list[pd.DataFrame] = []

    def record(setting, x, target, query_rows, mask, ranks):
        if mask.any():
            rows.append(pd.DataFrame({
                "setting": setting, "query_lang": x, "target_lang": target,
                "qid": np.repeat(qids[query_rows], mask.sum(axis=1)), "relevant_lang": lang[query_rows][mask],
                "rank": ranks[query_rows][mask].astype(np.int64)}))

    for x in dataset.languages:
        rows_x = np.flatnonzero(query_lang == x)
        if "mono" in settings:
            record("mono", x, x, rows_x, lang[rows_x] == x, pool_rank)
        for y in (y for y in dataset.languages if y != x and "cross" in settings):
            record("cross", x, y, rows_x, lang[rows_x] == y, pool_rank)
        if "multi" in settings:
            record("multi", x, "all", rows_x, valid[rows_x], multi_rank)
    return pd.concat(rows, ignore_index=True)
