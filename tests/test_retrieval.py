"""Faiss ranking and the three LAReQA settings on a hand-made dataset with known geometry."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data import RetrievalDataset
from lib.retrieval import build_index, full_ranks, lareqa_ranks


def test_full_ranks_exact():
    pool = np.eye(4, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)  # order: 1, 2, 0, 3
    ranks = full_ranks(build_index(pool), query, [np.array([0, 3, 1])])
    assert ranks[0].tolist() == [3, 4, 1]


def unit(*values):
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_settings_on_toy_dataset():
    # two ids (a, b) in en and de; candidates: per language the two answers
    questions = pd.DataFrame({"qid": ["a", "b", "a", "b"], "lang": ["en", "en", "de", "de"],
                              "text": ["", "", "", ""], "answer": [0, 1, 2, 3]})
    candidates = pd.DataFrame({"cid": list("0123"), "lang": ["en", "en", "de", "de"],
                               "paragraph_id": ["p"] * 4, "sentence": [""] * 4,
                               "paragraph": [""] * 4, "text": [""] * 4})
    data = RetrievalDataset("toy", questions, candidates, "sentence", ["de", "en"])
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
