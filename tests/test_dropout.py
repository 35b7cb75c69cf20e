"""lib.dropout: numpy dropout masks are dropout (rate, scale, unbiased), follow torch's seed, leave
evaluation untouched, and the attention path equals transformers' sdpa when nothing is dropped."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import lib.dropout as dropout
from lib.backbones import load_model
from lib.dropout import (NumpyDropout, attention, keep_multiplier, numpy_dropout, resolve_dropout_masks,
                         use_numpy_dropout)
from lib.train import TrainConfig, TrainError


def test_auto_is_numpy_on_cpu_and_torch_on_gpus():
    assert resolve_dropout_masks("auto", "cpu") == "numpy"
    assert resolve_dropout_masks("auto", "cuda:0") == "torch"
    assert resolve_dropout_masks("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="dropout_masks 'fast'.*expected one of"):
        resolve_dropout_masks("fast", "cpu")


def test_masks_drop_at_the_rate_and_keep_the_mean():
    torch.manual_seed(0)
    p, count = 0.1, 2_000_000
    multiplier = keep_multiplier((count,), p, torch.float64)
    dropped = round(p * 65536) / 65536
    assert multiplier.unique().tolist() == [0.0, pytest.approx(1 / (1 - dropped), rel=1e-12)]
    rate = (multiplier == 0).double().mean().item()
    assert abs(rate - dropped) < 5 * math.sqrt(dropped * (1 - dropped) / count)
    assert multiplier.mean().item() == pytest.approx(1.0, abs=5 * 0.33 / math.sqrt(count))


def test_masks_follow_torchs_seed():
    torch.manual_seed(3)
    first = keep_multiplier((64, 128), 0.1, torch.float32)
    second = keep_multiplier((64, 128), 0.1, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(keep_multiplier((64, 128), 0.1, torch.float32), first)
    assert not torch.equal(first, second)


def test_dropout_is_identity_in_evaluation_and_zero_at_one():
    x = torch.randn(4, 8, requires_grad=True)
    assert numpy_dropout(x, 0.3, training=False) is x
    assert torch.equal(numpy_dropout(x, 0.0), x)
    assert torch.equal(numpy_dropout(x, 1.0), torch.zeros_like(x))


def test_gradient_passes_through_the_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(32, 16, requires_grad=True)
    y = NumpyDropout(0.5)(x)
    y.sum().backward()
    kept = y != 0
    assert 0 < kept.sum() < x.numel()
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.all(x.grad[~kept] == 0)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_equals_sdpa_when_nothing_is_dropped(monkeypatch, mask_kind):
    torch.manual_seed(2)
    query, key, value = (torch.randn(3, 4, 10, 8) for _ in range(3))
    keep = torch.ones(3, 1, 10, 10, dtype=torch.bool)
    keep[0, :, :, 7:] = False
    mask = {"none": None, "bool": keep,
            "additive": torch.zeros(3, 1, 10, 10).masked_fill(~keep, torch.finfo(torch.float32).min)}[mask_kind]
    module = nn.Module().train()
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, is_causal=False)
    monkeypatch.setattr(dropout, "keep_multiplier", lambda shape, p, dtype: torch.ones(shape, dtype=dtype))
    got, _ = attention(module, query, key, value, mask, dropout=0.1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_the_switched_model_is_unchanged_in_evaluation_and_seeded_in_training():
    model = load_model("tiny", device="cpu")
    switched = load_model("tiny", device="cpu")
    count = use_numpy_dropout(switched)
    assert count == sum(isinstance(m, NumpyDropout) for m in switched.modules()) > 0
    assert not any(type(m) is nn.Dropout for m in switched.modules())
    features = switched.tokenize(["a short question", "a somewhat longer passage about the rivers of Europe"])
    model.eval(), switched.eval()
    with torch.no_grad():
        torch.testing.assert_close(switched(dict(features))["sentence_embedding"],
                                   model(dict(features))["sentence_embedding"], rtol=0, atol=0)
    switched.train()
    embeddings = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        embeddings.append(switched(dict(features))["sentence_embedding"])
    assert torch.equal(embeddings[0], embeddings[1]) and not torch.equal(embeddings[0], embeddings[2])


def test_a_bad_dropout_masks_value_is_a_config_error():
    with pytest.raises(TrainError, match="dropout_masks 'fast'"):
        TrainConfig(backbone="tiny", dropout_masks="fast").resolved()
    assert TrainConfig(backbone="tiny", device="cpu").resolved().dropout_masks == "numpy"
