"""Gradient caching: a contrastive batch of any size in the memory of a mini-batch (GradCache).

The InfoNCE loss of a batch couples every query with every candidate, so the batch cannot be split
into independent pieces the way gradient accumulation splits a loss (``grad_accumulation`` averages
several *separate* contrastive batches). Gao et al. (2021, arXiv 2101.06983) separate the loss from
the encoder instead. With E = f_theta(x) the embeddings of the whole batch and L(E) the loss,

    dL/dtheta = sum_chunks  (dL/dE_chunk)^T  dE_chunk/dtheta

so one step is three passes:

1. embed the batch chunk by chunk **without** a graph (``torch.no_grad``), remembering each chunk's
   RNG state;
2. compute the loss on those embeddings (leaf tensors) and backpropagate it **to the embeddings
   only**: dL/dE for every row (the cross-device gather of ``InfoNCELoss`` happens here, so every
   query still meets the candidates of every process; a distillation term, which couples each row
   with its own teacher target only, adds its share of dL/dE here too);
3. re-embed each chunk **with** a graph, replaying its RNG state (the same dropout masks), and
   backpropagate the surrogate ``sum(E_chunk * dL/dE_chunk)``, whose gradient is the chunk's term.

Only one chunk's activations are alive at a time, so memory is that of ``mini_batch_size`` pairs
(queries, positives and hard negatives) plus the B x D embeddings; compute is about one extra
forward. The gradients equal the uncached batch's up to float rounding (``tests/test_gradcache.py``).

Why not sentence-transformers' ``CachedMultipleNegativesRankingLoss``: it is the same algorithm (and
we reuse its ``RandContext`` for the RNG replay), but it embeds through a ``SentenceTransformer``'s
sentence-feature lists and returns a loss whose backward hook replays the chunks; our step needs
what ``lib.losses.InfoNCELoss`` adds (pairs without a hard negative, the duplicate-passage mask
over ``candidate_keys``) and one forward of ``lib.dual_encoder.DualEncoder`` per chunk, so that
DistributedDataParallel sees forward/backward pairs it can synchronise (``no_sync`` on every chunk
but the last), and the trainer keeps its own resumable RNG and fp16-scaler bookkeeping.

    loss = cached_backward(dual_encoder, loss_fn, batch, mini_batch_size=16,
                           precision=lambda: autocast(device, "bf16"), scale=lambda loss: loss / accumulation)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from sentence_transformers.base.losses.gradcache import RandContext
from torch import Tensor, nn

from lib.dual_encoder import batch_loss, distill_targets
from lib.losses import InfoNCELoss


def _rows(features: dict[str, Tensor], rows: Tensor | slice) -> dict[str, Tensor]:
    """Rows of tokenized features, with the padding columns no row of the chunk uses cut off
    (right padding: the mask's longest row is the chunk's width)."""
    chunk = {key: value[rows] for key, value in features.items()}
    mask = chunk.get("attention_mask")
    if mask is not None and mask.shape[0] and mask.dim() == 2:
        width = int(mask.sum(dim=1).max())
        if mask[:, width:].any():  # left padding: keep every column
            return chunk
        chunk = {key: value[:, :width] if value.dim() == 2 and value.shape[1] == mask.shape[1] else value
                 for key, value in chunk.items()}
    return chunk


def chunk_batch(batch: dict[str, Any], begin: int, end: int) -> dict[str, Any]:
    """Pairs ``begin:end`` of a collated batch (``lib.dual_encoder.PairCollator``): their queries,
    positives, the hard negatives those pairs have (``negative_index`` renumbered) and their keys."""
    chunk = {"pairs": end - begin, "query": _rows(batch["query"], slice(begin, end)),
             "positive": _rows(batch["positive"], slice(begin, end)), "negative": None, "negative_index": None,
             "candidate_keys": None}
    index = batch.get("negative_index")
    if index is not None:
        inside = (index >= begin) & (index < end)
        chunk["negative_index"] = index[inside] - begin
        if batch.get("negative") is not None and bool(inside.any()):
            chunk["negative"] = _rows(batch["negative"], inside.nonzero().squeeze(1))
    return chunk


def _embed(dual_encoder: nn.Module, chunk: dict[str, Any]) -> tuple:
    return dual_encoder(chunk["query"], chunk["positive"], chunk["negative"], chunk["negative_index"])


def _first_tensor(chunk: dict[str, Any]) -> Tensor:
    return chunk["query"]["input_ids"]


def _dot(embeddings: Tensor, gradient: Tensor) -> Tensor:
    """sum(E * dL/dE) in at least float32 (bf16/fp16 embeddings), float64 kept."""
    dtype = torch.promote_types(torch.promote_types(embeddings.dtype, gradient.dtype), torch.float32)
    return (embeddings.to(dtype) * gradient.to(dtype)).sum()


def cached_backward(dual_encoder: nn.Module, loss_fn: InfoNCELoss, batch: dict[str, Any], mini_batch_size: int,
                    precision: Callable[[], Any] = contextlib.nullcontext,
                    scale: Callable[[Tensor], Tensor] = lambda loss: loss) -> Tensor:
    """Backpropagate the InfoNCE loss of ``batch`` (on the model's device) through ``dual_encoder``
    in chunks of ``mini_batch_size`` pairs; returns the (detached) loss, equal to ``batch_loss``'s.

    ``precision``: a context factory for the forward passes (``lambda: lib.encode.autocast(device,
    precision)``); ``scale``: what the loss becomes before backward (``/ grad_accumulation``, a
    GradScaler's ``scale``). Under DistributedDataParallel, every chunk but the last runs in
    ``no_sync``; an outer ``no_sync`` (gradient accumulation) defers the last one too.
    """
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size {mini_batch_size!r}: expected a positive number of pairs per chunk")
    pairs = int(batch["pairs"])
    chunks = [chunk_batch(batch, begin, min(begin + mini_batch_size, pairs))
              for begin in range(0, pairs, mini_batch_size)]
    # 1. embeddings without a graph, each chunk's RNG state kept for the replay
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandContext(_first_tensor(chunk)))
            with precision():
                outputs.append(_embed(dual_encoder, chunk))
    query = torch.cat([o[0] for o in outputs]).requires_grad_()
    positive = torch.cat([o[1] for o in outputs]).requires_grad_()
    negative = mask = None
    if outputs[0][2] is not None:
        negative = torch.cat([o[2] for o in outputs]).requires_grad_()
        mask = torch.cat([o[3] for o in outputs])
    # 2. the loss on the whole batch, backpropagated to the embeddings only
    with precision():
        loss = loss_fn(query, positive, negative, mask, batch["candidate_keys"], *distill_targets(batch))
    scale(loss).backward()
    leaves = [query, positive] + ([negative] if negative is not None else [])
    # 3. each chunk again with a graph (same dropout), its share of the gradient into the weights
    begin = 0
    no_sync = getattr(dual_encoder, "no_sync", contextlib.nullcontext)
    for number, (chunk, state) in enumerate(zip(chunks, states)):
        end = begin + chunk["pairs"]
        last = number == len(chunks) - 1
        with contextlib.nullcontext() if last else no_sync():  # forward and backward inside
            with state, precision():
                embedded = _embed(dual_encoder, chunk)[:len(leaves)]
                surrogate = sum(_dot(e, leaf.grad[begin:end]) for e, leaf in zip(embedded, leaves)
                                if e.requires_grad)
            if torch.is_tensor(surrogate):
                surrogate.backward()
        begin = end
    return loss.detach()


def step_loss_backward(dual_encoder: nn.Module, loss_fn: InfoNCELoss, batch: dict[str, Any], mini_batch_size: int,
                       precision: Callable[[], Any] = contextlib.nullcontext,
                       scale: Callable[[Tensor], Tensor] = lambda loss: loss) -> Tensor:
    """The trainer's forward and backward of one batch: cached in chunks when ``mini_batch_size``
    is set and smaller than the batch, else the plain ``batch_loss`` (identical results, one forward)."""
    if mini_batch_size and mini_batch_size < int(batch["pairs"]):
        return cached_backward(dual_encoder, loss_fn, batch, mini_batch_size, precision, scale)
    with precision():
        loss = batch_loss(dual_encoder, loss_fn, batch)
    scale(loss).backward()
    return loss.detach()
