"""Tatoeba loading and scoring (lib.tatoeba) on small files the tests write."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

import lib.corpus
from lib import tatoeba
from lib.data import DataError
from lib.tatoeba import (XQUAD_R_TATOEBA, XTREME_R_TATOEBA, XTREME_TATOEBA, available_languages, evaluate_tatoeba,
                         load_tatoeba, load_tatoeba_pair, read_lines, retrieval_accuracy, set_averages, summary_table,
                         tatoeba_code, tatoeba_summary_keys)

PAIRS = {
    "deu": (["Ich habe Hunger.", "Wo ist der Bahnhof?", "Das ist gut."],
            ["I am hungry.", "Where is the station?", "That is good."]),
    "fra": (["J'ai faim.", "Il pleut.\u2028Encore."], ["I am hungry.", "It is raining.\u2028Again."]),
    "xho": (["Ndilambile."], ["I am hungry."]),
}


def write_pairs(folder, pairs=PAIRS):
    folder.mkdir(parents=True, exist_ok=True)
    for code, (sentences, english) in pairs.items():
        (folder / f"tatoeba.{code}-eng.{code}").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        (folder / f"tatoeba.{code}-eng.eng").write_text("\n".join(english) + "\n", encoding="utf-8")
    return folder


def test_language_sets():
    assert len(XTREME_TATOEBA) == 36 and len(XTREME_R_TATOEBA) == 41 and len(set(XTREME_R_TATOEBA)) == 41
    assert set(XQUAD_R_TATOEBA) <= set(XTREME_TATOEBA)
    assert sorted(XQUAD_R_TATOEBA) == sorted(["ara", "deu", "ell", "spa", "hin", "rus", "tha", "tur", "vie", "cmn"])
    assert set(XTREME_R_TATOEBA) <= set(tatoeba.PINNED_LANGUAGES) and len(tatoeba.PINNED_LANGUAGES) == 112
    assert tatoeba_code("de") == "deu" and tatoeba_code("zh") == "cmn" and tatoeba_code("xho") == "xho"
    with pytest.raises(DataError, match="3-letter"):
        tatoeba_code("german")


def test_reads_pairs_from_data_dir_and_env(tmp_path, monkeypatch):
    folder = write_pairs(tmp_path / "tatoeba")
    (folder / "tatoeba.zul-eng.eng").write_text("x\n", encoding="utf-8")       # no .zul side: not available
    assert available_languages(folder) == ["deu", "fra", "xho"]
    monkeypatch.setenv("TATOEBA_DIR", str(folder))
    pairs = load_tatoeba(verify=False)
    assert list(pairs) == ["deu", "fra", "xho"]
    assert pairs["fra"].sentences[1] == "Il pleut.\u2028Encore."                # split on \n only
    assert pairs["deu"].english == PAIRS["deu"][1] and pairs["deu"].iso == "de" and not pairs["deu"].pinned


def test_read_lines_strips_and_keeps_empty_inner_lines(tmp_path):
    path = tmp_path / "f"
    path.write_bytes("  a  \r\n\nb".encode("utf-8"))
    assert read_lines(path) == ["a", "", "b"]


def test_clear_errors(tmp_path):
    folder = write_pairs(tmp_path / "t")
    with pytest.raises(DataError, match="missing file"):
        load_tatoeba_pair("spa", folder, verify=False)
    (folder / "tatoeba.deu-eng.eng").write_text("only one line\n", encoding="utf-8")
    with pytest.raises(DataError, match="unequal line counts"):
        load_tatoeba_pair("deu", folder, verify=False)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_tatoeba_pair("fra", folder, verify=True)
    with pytest.raises(DataError, match="does not exist"):
        available_languages(tmp_path / "nowhere")


def test_download_checks_the_pinned_sha256(tmp_path, monkeypatch):
    monkeypatch.delenv("TATOEBA_DIR", raising=False)
    monkeypatch.setenv("HBT_CACHE", str(tmp_path / "cache"))
    content = {"tatoeba.xho-eng.xho": b"Ndilambile.\n", "tatoeba.xho-eng.eng": b"I am hungry.\n"}
    monkeypatch.setitem(tatoeba.TATOEBA_SHA256, "tatoeba.xho-eng.xho", hashlib.sha256(content["tatoeba.xho-eng.xho"]).hexdigest())
    monkeypatch.setitem(tatoeba.TATOEBA_SHA256, "tatoeba.xho-eng.eng", hashlib.sha256(content["tatoeba.xho-eng.eng"]).hexdigest())
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        return io.BytesIO(content[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(tatoeba.urllib.request, "urlopen", fake_urlopen)
    pair = load_tatoeba_pair("xho")
    assert pair.pinned and pair.sentences == ["Ndilambile."]
    assert urls[0].startswith(f"https://raw.githubusercontent.com/facebookresearch/LASER/{tatoeba.TATOEBA_COMMIT}/")
    load_tatoeba_pair("xho")                                                    # cached: no second download
    assert len(urls) == 2
    monkeypatch.setitem(tatoeba.TATOEBA_SHA256, "tatoeba.xho-eng.xho", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_tatoeba_pair("xho")


def test_retrieval_accuracy_on_hand_made_vectors():
    english = np.eye(3, dtype=np.float32)
    sentences = np.array([[1, 0, 0], [0, 0, 1], [0, 0.1, 0.9]], dtype=np.float32)
    sentences /= np.linalg.norm(sentences, axis=1, keepdims=True)
    # xx -> eng: row 0 finds 0 (right), 1 finds 2, 2 finds 2 (right); eng -> xx: 0 -> 0, 1 -> 2, 2 -> 1
    assert retrieval_accuracy(sentences, english) == pytest.approx((2 / 3, 1 / 3))
    with pytest.raises(ValueError, match="one row per aligned line"):
        retrieval_accuracy(sentences[:2], english)


def test_set_averages_and_summary_table():
    import pandas as pd

    table = pd.DataFrame({"acc_xx_to_eng": [0.9, 0.5, 0.2], "acc_eng_to_xx": [0.7, 0.5, 0.0]},
                         index=pd.Index(["deu", "pol", "xho"], name="lang"))
    summary = set_averages(table)
    assert summary["tatoeba_all-xx2eng_accuracy"] == pytest.approx(1.6 / 3)
    assert summary["tatoeba_xtreme_n_languages"] == 1 and summary["tatoeba_xtreme-r_n_languages"] == 2
    assert summary["tatoeba_xtreme-r-mean_accuracy"] == pytest.approx((0.8 + 0.5) / 2)
    assert summary["tatoeba_xquad-r-eng2xx_accuracy"] == pytest.approx(0.7)
    assert set(summary) <= set(tatoeba_summary_keys())
    assert summary_table(table).loc["xtreme_r", "xx->eng"] == pytest.approx(70.0)


def same_vector_for_translations(model, texts, side, batch_size=64, cache=True, show_progress_bar=True, precision="auto"):
    """An oracle encoder: a sentence and its translation (same row in PAIRS) get the same vector."""
    row_of = {}
    for sentences, english in PAIRS.values():
        for i, (x, e) in enumerate(zip(sentences, english)):
            row_of[x] = row_of[e] = hashlib.md5(e.encode()).hexdigest()
    out = np.stack([np.random.default_rng(int(row_of[t][:8], 16)).standard_normal(8) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def test_evaluate_tatoeba_with_an_oracle_encoder(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setattr(lib.corpus, "encode", same_vector_for_translations)
    folder = write_pairs(tmp_path / "t")
    evaluation = evaluate_tatoeba(tiny_model, data_dir=folder, verify=False, shard_size=4)
    table = evaluation.per_language
    assert list(table.index) == ["deu", "fra", "xho"]
    assert table.acc_xx_to_eng.tolist() == [1.0, 1.0, 1.0] and table.acc_eng_to_xx.tolist() == [1.0, 1.0, 1.0]
    assert table.loc["deu", "in_xquad_r"] and not table.loc["xho", "in_xtreme"]
    assert len(table.loc["deu", "sha256_xx"]) == 64
    assert evaluation.summary["tatoeba_all-mean_accuracy"] == 1.0
    assert evaluation.summary["tatoeba_xquad-r_n_languages"] == 1
    assert evaluation.timings["n_unique_sentences"] == 10                    # "I am hungry." is encoded once


def test_evaluate_tatoeba_with_the_tiny_backbone(tmp_path, tiny_model):
    folder = write_pairs(tmp_path / "t")
    evaluation = evaluate_tatoeba(tiny_model, ["de", "xho"], data_dir=folder, verify=False)
    assert list(evaluation.per_language.index) == ["deu", "xho"]
    assert evaluation.per_language.loc["xho", "acc_xx_to_eng"] == 1.0          # one pair: always right
    again = evaluate_tatoeba(tiny_model, ["de", "xho"], data_dir=folder, verify=False)
    assert again.per_language.equals(evaluation.per_language)                 # resumed from the shards


def test_the_shared_files_match_the_pinned_checksums(monkeypatch):
    import os

    if not os.environ.get("TATOEBA_DIR"):
        pytest.skip("TATOEBA_DIR is not set: the real Tatoeba files are not available")
    pair = load_tatoeba_pair("deu", verify=True)
    assert pair.pinned and len(pair) == 1000
    assert set(available_languages()) == set(tatoeba.PINNED_LANGUAGES)
