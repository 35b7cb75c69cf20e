"""Batched, cached encoding of queries and passages with a backbone's prefixes and lengths.

``SentenceTransformer.encode`` already sorts each call's texts by length (less padding) and
shows a progress bar; this module adds the backbone's per-side prefix and maximum length,
autocast in the precision ``lib.hardware.resolve_precision`` picks (``auto``: bf16 on a GPU or
a CPU with bf16 units, fp32 elsewhere; embeddings are returned as float32 either way, and
normalised in float32), and a cache of embeddings under ``outputs/cache/embeddings`` keyed on
the model, the side, its settings, the precision and the exact texts, so that re-running an
evaluation re-encodes nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.hardware import autocast_dtype, device_type, resolve_precision
from lib.io import atomic_path, fingerprint, outputs_dir

SIDES = ("query", "passage")
DESCRIPTIVE = ("license", "citation")   # backbone fields that do not change an embedding (not in cache keys)


def model_identity(backbone) -> dict:
    """What determines a backbone's embeddings: its settings and, for folders, their weights' mtime."""
    identity = {key: value for key, value in backbone.as_dict().items() if key not in DESCRIPTIVE}
    if backbone.path:
        weights = sorted(Path(backbone.path).glob("**/*.safetensors"))
        identity["weights"] = [(str(w.relative_to(backbone.path)), w.stat().st_mtime_ns, w.stat().st_size)
                               for w in weights]
    return identity


def _max_length(backbone, side: str) -> int:
    if side not in SIDES:
        raise ValueError(f"side {side!r}: expected one of {SIDES}")
    return backbone.max_query_length if side == "query" else backbone.max_passage_length


def cache_file(backbone, texts: Sequence[str], side: str, precision: str = "fp32") -> Path:
    """Where the embeddings of ``texts`` by ``backbone`` (a ``lib.backbones.Backbone``) in a
    resolved ``precision`` (fp32, bf16, fp16) are cached."""
    key = fingerprint(model_identity(backbone), side, _max_length(backbone, side), precision, list(texts))
    return outputs_dir() / "cache" / "embeddings" / f"{backbone.name}-{side}-{key}.npy"


def cached_embeddings(backbone, texts: Sequence[str], side: str, precision: str = "auto",
                      device: str = "cpu") -> np.ndarray | None:
    """The cached embeddings of ``texts`` (``precision`` resolved on ``device``, as :func:`encode`
    would), or ``None`` on a miss; needs no model."""
    path = cache_file(backbone, texts, side, resolve_precision(precision, device))
    return np.load(path) if path.is_file() else None


def autocast(device: str, precision: str = "auto"):
    """Autocast to the precision ``lib.hardware.resolve_precision(precision, device)`` picks:
    bf16 (fp16 on GPUs without bf16) on a GPU, bf16 on a CPU with bf16 units, nothing for fp32."""
    dtype = autocast_dtype(resolve_precision(precision, device))
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type(device), dtype=dtype)


def encode(model, texts: Sequence[str], side: str, batch_size: int = 64, cache: bool = True,
           precision: str = "auto", show_progress_bar: bool = True) -> np.ndarray:
    """Embed ``texts`` as queries or passages (``side``): float32, L2-normalised rows.

    ``encode(model, ["Wer ...?"], "query")`` prepends the backbone's query prefix and truncates
    at its ``max_query_length``. ``precision`` (auto, fp32, bf16, fp16) is resolved by
    ``lib.hardware.resolve_precision`` on the model's device; under bf16 the model runs in
    autocast and its pooled outputs are cast to float32 before the L2 normalisation.
    """
    texts = list(texts)
    backbone = model.backbone
    resolved = resolve_precision(precision, model.device)
    path = cache_file(backbone, texts, side, resolved) if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    model.max_seq_length = _max_length(backbone, side)
    with autocast(str(model.device), resolved):
        embeddings = model.encode(texts, prompt_name=side, batch_size=batch_size, convert_to_tensor=True,
                                  show_progress_bar=show_progress_bar)
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    embeddings = np.ascontiguousarray(embeddings.cpu().numpy(), dtype=np.float32)
    broken = int((~np.isfinite(embeddings).all(axis=1)).sum()) if embeddings.ndim == 2 else 0
    if broken:  # faiss would rank NaN rows as id -1: metrics of garbage; nothing is cached
        raise ValueError(f"model {backbone.name}: {broken} of {len(embeddings)} {side} embeddings are not finite "
                         "(NaN or inf): the model's weights are broken (a diverged training run?); "
                         "evaluate another model folder or retrain with a lower learning_rate")
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, embeddings)
    return embeddings
