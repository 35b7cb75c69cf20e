"""Debiasing variants of one evaluation: one encoding, one run folder per variant, `none` unchanged."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from lib.debias import Debias, DebiasError
from lib.debias_evaluation import parse_variants, pool_sample, reference_texts
from lib.evaluate import run_evaluation


def test_parse_variants_puts_none_first_and_drops_duplicates():
    names = [spec.name for spec in parse_variants("center-pool, lir-k1-pool,center-pool")]
    assert names == ["none", "center-pool", "lir-k1-pool"]
    assert [s.name for s in parse_variants(None)] == ["none"]
    assert parse_variants(["none", "center-transductive"])[1] == Debias("center", "transductive")
    with pytest.raises(DebiasError, match="center-pool"):
        parse_variants("centre")


def test_pool_sample_caps_each_language_and_is_fixed():
    languages = np.array(["de"] * 7 + ["en"] * 3 + ["de"] * 5)
    rows = pool_sample(languages, size=4)
    assert list(rows) == sorted(rows)
    assert (languages[rows] == "de").sum() == 4 and list(rows[languages[rows] == "en"]) == [7, 8, 9]
    assert list(pool_sample(languages, size=4)) == list(rows)          # the same sample every time
    assert list(pool_sample(languages, size=100)) == list(range(15))   # small languages: every row


def test_reference_texts_cover_each_language_english_from_the_english_sides():
    if not os.environ.get("TATOEBA_DIR"):
        pytest.skip("TATOEBA_DIR is not set")
    texts, labels = reference_texts(["de", "en", "el"], size=5)
    assert labels == ["de"] * 5 + ["en"] * 5 + ["el"] * 5
    assert len(set(texts[5:10])) == 5
    with pytest.raises(DebiasError, match="xx"):
        reference_texts(["xx"])


@pytest.mark.real_data
def test_variants_are_ranked_from_the_same_embeddings_and_written_beside_the_run(lareqa_dir):
    plain, _ = run_evaluation("tiny", "xquad-r", max_questions=10, device="cpu", run="plain")
    evaluation, path = run_evaluation("tiny", "xquad-r", max_questions=10, device="cpu", run="e",
                                      debias="none,center-pool,lir-k1-pool,center-transductive")
    # `none` is the evaluation without debiasing, bit for bit
    pd.testing.assert_frame_equal(evaluation.ranks, plain.ranks)
    assert evaluation.summary == plain.summary
    config = json.loads((path / "config.json").read_text())
    assert config["debias"] == ["none", "center-pool", "lir-k1-pool", "center-transductive"]
    assert config["debias_runs"]["center-pool"] == "e-center-pool"
    for name in ("center-pool", "lir-k1-pool", "center-transductive"):
        folder = path.parent / f"e-{name}"
        for file in ("metrics.json", "per_query.parquet", "ranks.parquet", "neighbours.parquet"):
            assert (folder / file).is_file(), (name, file)
        variant_config = json.loads((folder / "config.json").read_text())
        assert variant_config["debias"]["name"] == name and variant_config["debias_of"] == "e"
        assert variant_config["debias"]["transductive"] == (name == "center-transductive")
        summary = json.loads((folder / "metrics.json").read_text())["summary"]
        assert summary == pytest.approx(evaluation.variants[name].summary)
    # centering changes the multilingual ranking (the tiny model's language means are far apart)
    assert not np.array_equal(evaluation.variants["center-pool"].ranks["rank"], evaluation.ranks["rank"])
    # the bias tables of a variant come from its debiased embeddings: best relevant ranks agree
    alignment = pd.read_parquet(path.parent / "e-center-pool" / "alignment.parquet").set_index(["query_lang", "qid"])
    ranks = evaluation.variants["center-pool"].ranks.query("setting == 'multi'").groupby(["query_lang", "qid"])["rank"].min()
    best = alignment[["same_language_rank", "best_other_rank"]].min(axis=1)
    assert (best.loc[ranks.index] == ranks).mean() > 0.99


def test_debias_is_refused_for_tatoeba():
    with pytest.raises(ValueError, match="LAReQA"):
        run_evaluation("tiny", "tatoeba", device="cpu", debias="center-pool")
