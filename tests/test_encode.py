"""Encoding precision: fp32 equals plain sentence-transformers, bf16 is close, caches are apart."""

from __future__ import annotations

import numpy as np
import pytest

from lib import hardware
from lib.encode import cache_file, cached_embeddings, encode

TEXTS = ["Wie alt ist Berlin?", "How old is Berlin?", "¿Qué edad tiene Berlín?", "Berlin wurde 1237 erstmals erwähnt."]


def test_fp32_equals_plain_sentence_transformers(tiny_model):
    ours = encode(tiny_model, TEXTS, "passage", precision="fp32", cache=False, show_progress_bar=False)
    tiny_model.max_seq_length = tiny_model.backbone.max_passage_length
    plain = tiny_model.encode([tiny_model.backbone.passage_prefix + t for t in TEXTS], normalize_embeddings=True)
    np.testing.assert_allclose(ours, plain, atol=1e-6)


def test_bf16_is_float32_normalised_close_and_cached_apart(tiny_model, tmp_path):
    fp32 = encode(tiny_model, TEXTS, "query", precision="fp32", show_progress_bar=False)
    bf16 = encode(tiny_model, TEXTS, "query", precision="bf16", show_progress_bar=False)
    assert bf16.dtype == np.float32 and np.allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-6)
    assert not np.array_equal(fp32, bf16)                       # autocast did run
    assert (np.sum(fp32 * bf16, axis=1) > 0.99).all()
    backbone = tiny_model.backbone
    assert cache_file(backbone, TEXTS, "query", "fp32") != cache_file(backbone, TEXTS, "query", "bf16")
    assert np.array_equal(cached_embeddings(backbone, TEXTS, "query", "bf16"), bf16)
    assert np.array_equal(cached_embeddings(backbone, TEXTS, "query", "fp32"), fp32)


def test_auto_follows_the_cpu(tiny_model, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    auto = encode(tiny_model, TEXTS, "query", show_progress_bar=False)
    assert np.array_equal(auto, cached_embeddings(tiny_model.backbone, TEXTS, "query", "fp32"))
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(hardware, "CPU_AUTO_BF16", False)     # the switch: fp32 on every CPU
    assert np.array_equal(cached_embeddings(tiny_model.backbone, TEXTS, "query"), auto)
    monkeypatch.setattr(hardware, "CPU_AUTO_BF16", True)
    assert cached_embeddings(tiny_model.backbone, TEXTS, "query") is None      # auto = bf16 now: not encoded yet
    with pytest.raises(ValueError, match="fp16"):
        encode(tiny_model, TEXTS, "query", precision="fp16", show_progress_bar=False)
