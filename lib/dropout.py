"""Dropout masks from numpy's generator on CPU: the same dropout, a third of a bf16 training step less.

A bf16 training step of me5-small on 2 CPU cores spent about a third of its time in
``aten::bernoulli_``: torch's CPU generator (mt19937) draws one number per element of every
dropout mask (111 masks a step: embeddings, attention probabilities and two hidden states per layer,
for queries, passages and hard negatives), in any precision. numpy's PCG64 fills the same mask from
raw 64-bit words (four 16-bit draws each) several times faster (``benchmarks/bench_speed.py``).

    masks = "numpy"   # TrainConfig.dropout_masks (auto: numpy on CPU, torch on GPUs)
    use_numpy_dropout(sentence_transformer)   # every nn.Dropout and the attention dropout

What changes and what does not:
- The distribution: an element is dropped when a uniform 16-bit draw is below ``round(p * 65536)``,
  so the drop probability is that over 65536 (0.1 -> 0.1000061), and kept elements are scaled by
  ``1 / (1 - that)``: unbiased, as torch's. Different masks than torch's for the same seed, so a
  run's numbers differ from a torch-mask run's as a different dropout seed would.
- Reproducibility: each mask's PCG64 seed is one draw from torch's CPU generator, so ``seed``,
  the checkpoints' saved RNG state (bit-identical resume) and gradient caching's RNG replay
  (``lib.gradcache``: the same masks in the second pass) all work unchanged.
- Attention: with dropout, torch's fused CPU attention falls back to its math path (fp32 inside);
  ``attention`` below is that math path with these masks, registered as a transformers attention
  implementation. Without dropout (evaluation, ``model.eval()``), on GPUs and for causal or
  grouped-query attention it is transformers' ``sdpa`` unchanged; saved models do not record it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ATTENTION = "hbt_numpy_dropout"  # the registered name (config._attn_implementation while training)
DROPOUT_MASKS = ("auto", "torch", "numpy")
_LEVELS = 1 << 16  # 16-bit draws: the drop probability's resolution


def resolve_dropout_masks(masks: str, device: str | torch.device) -> str:
    """``"torch"`` or ``"numpy"`` for a requested ``masks`` on ``device``: auto is numpy on CPU
    (where torch's generator is the bottleneck), torch on GPUs (fused, fast)."""
    if masks not in DROPOUT_MASKS:
        raise ValueError(f"dropout_masks {masks!r}: expected one of {DROPOUT_MASKS}")
    if masks == "auto":
        return "numpy" if torch.device(device).type == "cpu" else "torch"
    return masks


def keep_multiplier(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """The dropout mask as a multiplier: 0 where dropped, 1 / (1 - p') where kept, p' = round(p * 65536) / 65536."""
    count = math.prod(shape)
    seed = int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64))  # torch's generator: seed, resume, replay
    draws = np.random.PCG64(seed).random_raw((count + 3) // 4).view(np.uint16)[:count]
    threshold = round(p * _LEVELS)
    keep = torch.from_numpy(draws >= threshold).reshape(shape)
    return keep.to(dtype).mul_(_LEVELS / (_LEVELS - threshold))


def numpy_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``nn.functional.dropout(x, p, training)`` with numpy's masks (on CPU; elsewhere torch's)."""
    if not training or p == 0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    if p == 1:
        return x * 0
    return x * keep_multiplier(x.shape, p, x.dtype)


class NumpyDropout(nn.Dropout):
    """An ``nn.Dropout`` whose masks come from ``keep_multiplier`` on CPU."""

    def forward(self, x: Tensor) -> Tensor:
        return numpy_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
              dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
              **kwargs) -> tuple[Tensor, None]:
    """Encoder self-attention with numpy dropout masks: torch's math path (fp32 inside, like torch's
    own CPU fallback under dropout); anything else goes to transformers' ``sdpa`` unchanged."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    plain = (not module.training or dropout == 0 or query.device.type != "cpu" or causal
             or getattr(module, "num_key_value_groups", 1) > 1 or kwargs.get("cache") is not None)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    inner = torch.promote_types(query.dtype, torch.float32)  # bf16 -> fp32, float64 stays
    with torch.autocast("cpu", enabled=False):
        scores = torch.matmul(query.to(inner), key.to(inner).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                      if attention_mask.dtype == torch.bool else scores + attention_mask)
        probabilities = numpy_dropout(scores.softmax(dim=-1), dropout)
        output = torch.matmul(probabilities, value.to(inner))
    return output.to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)  # the masks sdpa gets: bool or None


def use_numpy_dropout(model: nn.Module) -> int:
    """Switch ``model`` (a SentenceTransformer or any torch module holding transformers models) to
    numpy masks in place: every ``nn.Dropout`` becomes a ``NumpyDropout`` of the same ``p``, and
    every transformers config that uses ``sdpa`` attention uses ``attention``. Returns the number
    of dropout modules switched."""
    switched = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, NumpyDropout(child.p, child.inplace))
                switched += 1
        config = getattr(parent, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = ATTENTION
    return switched
