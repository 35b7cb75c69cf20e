"""Ranks by counting, the three LAReQA settings, ties, and agreement with the old faiss full sort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.data import RetrievalDataset
from lib.retrieval import lareqa_ranks, score_lareqa, score_pools
from lib.bias import multilingual_neighbours
from tests.faiss_reference import build_index, full_ranks, lareqa_ranks_full_sort, multilingual_neighbours_before


def test_faiss_reference_full_ranks_exact():
    pool = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)  # order: 1, 2, 0, 3
    ranks = full_ranks(build_index(pool), query, [np.array([0, 3, 1])])
    assert ranks[0].tolist() == [3, 4, 1]


def test_counting_ranks_top_k_and_best_irrelevant():
    pool = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)  # order: 1, 2, 0, 3
    scored = score_pools(query, pool, [np.array([0, 3, 1])], np.array(["a", "a", "b", "b"]), np.array(["a"]), k=3)
    assert scored.ranks()[0].tolist() == [3, 4, 1]
    assert scored.ranks(np.array([[0, 1, 0]]))[0].tolist() == [2, 2, 1]   # within a: 1, 0; within b: 2, 3
    assert scored.top[0].tolist() == [1, 2, 0]
    # best irrelevant: none in group a (rows 0, 1 are relevant), row 2 outside it (rank 2)
    np.testing.assert_array_equal(scored.wrong_rank[0], [np.nan, 2.0])


def test_planted_ties_are_optimistic():
    pool = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)     # rows 0, 1, 3 tie
    query = np.array([[1, 0]], dtype=np.float32)
    scored = score_pools(query, pool, [np.array([3])], np.zeros(4, dtype=int), np.zeros(1, dtype=int), k=3)
    assert scored.ranks()[0].tolist() == [1]             # nothing scores strictly above row 3
    assert scored.top[0].tolist() == [0, 1, 3]           # tied neighbours by candidate row
    assert scored.wrong_rank[0, 0] == 1                  # best irrelevant (row 0) ties too


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def toy_dataset():
    # two ids (a, b) in en and de; candidates: per language the two answers
    questions = pd.DataFrame({"qid": ["a", "b", "a", "b"], "lang": ["en", "en", "de", "de"],
                              "text": ["", "", "", ""], "answer": [0, 1, 2, 3]})
    candidates = pd.DataFrame({"cid": list("0123"), "lang": ["en", "en", "de", "de"],
                               "paragraph_id": ["p"] * 4, "sentence": [""] * 4,
                               "paragraph": [""] * 4, "text": [""] * 4})
    return RetrievalDataset("toy", questions, candidates, "sentence", ["de", "en"])


def test_settings_on_toy_dataset():
    data = toy_dataset()
    # candidate vectors: en-a, en-b, de-a, de-b; "language" direction on axis 2
    cand = np.stack([unit(1, 0, 1), unit(0, 1, 1), unit(1, 0, -1), unit(0, 1, -1)])
    # en query for a: close to a, and to English; de query for b: close to b, neutral
    q = np.stack([unit(1, 0, 0.5), unit(0.2, 1, 0.6), unit(1, 0, 0), unit(0, 1, 0)])
    ranks = lareqa_ranks(data, q, cand)
    by = ranks.set_index(["setting", "query_lang", "target_lang", "qid", "relevant_lang"])["rank"]
    assert by[("mono", "en", "en", "a", "en")] == 1
    assert by[("cross", "en", "de", "a", "de")] == 1
    # multi, en query a: en-a first (same language), then de-a
    assert by[("multi", "en", "all", "a", "en")] == 1
    assert by[("multi", "en", "all", "a", "de")] == 2
    assert len(ranks.query("setting == 'multi'")) == 8  # 4 queries x 2 translations
    assert set(ranks.query("setting == 'cross'").target_lang) == {"en", "de"}
    # the de query for a scores en-a and de-a equally (a tie): optimistic, both rank 1 in multi
    assert by[("multi", "de", "all", "a", "en")] == by[("multi", "de", "all", "a", "de")] == 1
    old = lareqa_ranks_full_sort(data, q, cand)
    assert (ranks["rank"] <= old["rank"]).all() and ranks.drop(columns="rank").equals(old.drop(columns="rank"))


def random_lareqa(n_ids=60, languages=("ar", "de", "en", "zh"), extra=25, dim=16, seed=0):
    """Every id in every language but one id missing per language, plus non-answer candidates."""
    rng = np.random.default_rng(seed)
    questions, candidates = [], []
    for li, lang in enumerate(languages):
        for i in range(n_ids):
            if i == li:
                continue
            candidates.append({"cid": f"{lang}-{i}", "lang": lang, "qid": f"q{i}"})
            questions.append({"qid": f"q{i}", "lang": lang, "text": "", "answer": len(candidates) - 1})
        candidates += [{"cid": f"{lang}-x{j}", "lang": lang, "qid": None} for j in range(extra)]
    candidates = pd.DataFrame(candidates).assign(paragraph_id="p", sentence="", paragraph="", text="")
    data = RetrievalDataset("random", pd.DataFrame(questions), candidates.drop(columns="qid"), "sentence",
                            sorted(languages))
    q = rng.standard_normal((len(questions), dim)).astype(np.float32)
    c = rng.standard_normal((len(candidates), dim)).astype(np.float32)
    return data, q / np.linalg.norm(q, axis=1, keepdims=True), c / np.linalg.norm(c, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk", [7, 1024])
def test_identical_to_faiss_full_sort_on_random_data(chunk):
    data, q, c = random_lareqa()
    ours = lareqa_ranks(data, q, c, scored=score_lareqa(data, q, c, chunk=chunk))
    pd.testing.assert_frame_equal(ours, lareqa_ranks_full_sort(data, q, c))
    mono_only = lareqa_ranks(data, q, c, settings=("mono",))
    pd.testing.assert_frame_equal(mono_only, ours[ours.setting == "mono"].reset_index(drop=True))


def test_top_k_equals_a_full_sort():
    data, q, c = random_lareqa(seed=1)
    scored = score_lareqa(data, q, c, k=10, chunk=13)
    assert np.array_equal(scored.top, np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :10])


def test_neighbours_from_the_shared_pass_equal_the_old_second_scan():
    data, q, c = random_lareqa(seed=2)
    scored = score_lareqa(data, q, c, k=10, chunk=50)
    ours = multilingual_neighbours(data, k=5, scored=scored)
    old = multilingual_neighbours_before(data, q, c, k=5, progress=False)
    pd.testing.assert_frame_equal(ours.top_k, old.top_k)
    pd.testing.assert_frame_equal(ours.alignment, old.alignment, check_dtype=False)
    assert ours.alignment.same_language_distractor.notna().all()
    multi = lareqa_ranks(data, q, c, scored=scored).query("setting == 'multi'")
    best = multi.groupby(["query_lang", "qid"])["rank"].min()
    assert (ours.alignment.set_index(["query_lang", "qid"])[["same_language_rank", "best_other_rank"]]
            .min(axis=1).loc[best.index] == best).all()
