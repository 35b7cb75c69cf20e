"""Batched, cached encoding of queries and passages with a backbone's prefixes and lengths.

``SentenceTransformer.encode`` already sorts each call's texts by length (less padding) and
shows a progress bar; this module adds the backbone's per-side prefix and maximum length,
autocast on a GPU, and a cache of embeddings under ``outputs/cache/embeddings`` keyed on the
model, the side, its settings and the exact texts, so that re-running an evaluation re-encodes
nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.io import atomic_path, fingerprint, outputs_dir

SIDES = ("query", "passage")


def model_identity(backbone) -> dict:
    """What determines a backbone's embeddings: its settings and, for folders, their weights' mtime."""
    identity = backbone.as_dict()
    if backbone.path:
        weights = sorted(Path(backbone.path).glob("**/*.safetensors"))
        identity["weights"] = [(str(w.relative_to(backbone.path)), w.stat().st_mtime_ns, w.stat().st_size)
                               for w in weights]
    return identity


def _max_length(backbone, side: str) -> int:
    if side not in SIDES:
        raise ValueError(f"side {side!r}: expected one of {SIDES}")
    return backbone.max_query_length if side == "query" else backbone.max_passage_length


def cache_file(backbone, texts: Sequence[str], side: str) -> Path:
    """Where the embeddings of ``texts`` by ``backbone`` (a ``lib.backbones.Backbone``) are cached."""
    key = fingerprint(model_identity(backbone), side, _max_length(backbone, side), list(texts))
    return outputs_dir() / "cache" / "embeddings" / f"{backbone.name}-{side}-{key}.npy"


def cached_embeddings(backbone, texts: Sequence[str], side: str) -> np.ndarray | None:
    """The cached embeddings of ``texts``, or ``None`` on a miss; needs no model."""
    path = cache_file(backbone, texts, side)
    return np.load(path) if path.is_file() else None


def autocast(device: str, precision: str = "auto"):
    """bf16 autocast on a GPU that supports it (fp16 otherwise), nothing on the CPU."""
    import torch

    if not str(device).startswith("cuda") or precision == "fp32":
        return contextlib.nullcontext()
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def encode(model, texts: Sequence[str], side: str, batch_size: int = 64, cache: bool = True,
           precision: str = "auto", show_progress_bar: bool = True) -> np.ndarray:
    """Embed ``texts`` as queries or passages (``side``): float32, L2-normalised rows.

    ``encode(model, ["Wer ...?"], "query")`` prepends the backbone's query prefix and truncates
    at its ``max_query_length``.
    """
    texts = list(texts)
    backbone = model.backbone
    path = cache_file(backbone, texts, side) if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    model.max_seq_length = _max_length(backbone, side)
    with autocast(str(model.device), precision):
        embeddings = model.encode(texts, prompt_name=side, batch_size=batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=show_progress_bar)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
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
