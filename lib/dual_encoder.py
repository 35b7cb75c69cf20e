"""Batches -> tensors -> embeddings -> loss: the collator and the shared-weights dual encoder.

``PairCollator`` tokenizes the items of ``lib.sampling.PairDataset`` with the backbone's
prefixes and maximum lengths (as sentence-transformers' data collator does with prompts);
``DualEncoder`` embeds queries, positives and hard negatives in one forward (what
DistributedDataParallel needs: one forward per backward); ``batch_loss`` scores them with
``lib.losses.InfoNCELoss``; ``RankSlice`` gives each torchrun process its slice of a batch.

    collator = PairCollator(encoder.tokenizer, encoder.backbone)
    loss = batch_loss(DualEncoder(encoder), InfoNCELoss(0.05), to_device(collator(items), "cpu"))
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from lib.losses import InfoNCELoss


def passage_text_id(text: str) -> int:
    """A stable 63-bit id of a passage text (the same in every process, unlike ``hash``): the
    loss's duplicate mask treats two candidates with the same id as the same passage."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class PairCollator:
    """Items of ``PairDataset`` -> tokenized queries, positives and the hard negatives that exist.

    Prefixes and maximum lengths are the backbone's (query side: ``query_prefix``,
    ``max_query_length``; passages and negatives: the passage ones). ``candidate_keys`` are
    ``passage_text_id`` of the positives then the negatives (-1: no negative), for the loss's
    duplicate mask. With ``targets`` (``lib.distill.TeacherTargets``) the batch also holds
    ``query_target`` and ``positive_target``, the (B, D) teacher targets of its pairs' groups.
    """

    def __init__(self, tokenizer, backbone, hard_negatives: bool = True, targets=None):
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.hard_negatives = hard_negatives
        self.targets = targets

    def _tokenize(self, texts: list[str], prefix: str, max_length: int) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer([prefix + text for text in texts], padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt"))

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        b = self.backbone
        queries = [item["query"] for item in items]
        positives = [item["positive"] for item in items]
        batch = {"pairs": len(items),
                 "query": self._tokenize(queries, b.query_prefix, b.max_query_length),
                 "positive": self._tokenize(positives, b.passage_prefix, b.max_passage_length),
                 "negative": None, "negative_index": None}
        keys = [passage_text_id(text) for text in positives]
        if self.hard_negatives:
            rows = [i for i, item in enumerate(items) if item.get("negative")]
            if rows:
                batch["negative"] = self._tokenize([items[i]["negative"] for i in rows], b.passage_prefix,
                                                   b.max_passage_length)
            batch["negative_index"] = torch.tensor(rows, dtype=torch.long)
            keys += [passage_text_id(item["negative"]) if item.get("negative") else -1 for item in items]
        batch["candidate_keys"] = torch.tensor(keys, dtype=torch.long)
        if self.targets is not None:
            batch["query_target"], batch["positive_target"] = self.targets.rows(items)
        return batch


class DualEncoder(nn.Module):
    """One forward for a whole batch (queries, positives, negatives through the shared encoder),
    so that DistributedDataParallel sees a single forward per backward.

    Returns ``(query, positive, negative, negative_mask)`` embeddings; ``negative`` is (B, D) with
    zeros where a pair has no hard negative (``negative_mask`` False), or None without hard negatives.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(dict(features))["sentence_embedding"]

    def forward(self, query, positive, negative=None, negative_index=None):
        query_embeddings = self.embed(query)
        positive_embeddings = self.embed(positive)
        if negative_index is None:
            return query_embeddings, positive_embeddings, None, None
        pairs = query_embeddings.shape[0]
        mask = torch.zeros(pairs, dtype=torch.bool, device=query_embeddings.device)
        negative_embeddings = positive_embeddings.new_zeros(positive_embeddings.shape)
        if negative is not None:
            embedded = self.embed(negative)
            negative_embeddings = negative_embeddings.index_copy(0, negative_index, embedded.to(negative_embeddings.dtype))
            mask[negative_index] = True
        return query_embeddings, positive_embeddings, negative_embeddings, mask


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """A collated batch with its tensors (and dicts of tensors) on ``device``."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=True)
        elif isinstance(value, dict):
            moved[key] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        else:
            moved[key] = value
    return moved


def distill_targets(batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """``(query_target, positive_target)`` of a batch collated with teacher targets, else ``()``:
    the loss's last arguments (``lib.losses.TrainingObjective``)."""
    return (batch["query_target"], batch["positive_target"]) if batch.get("query_target") is not None else ()


def batch_loss(dual_encoder: nn.Module, loss_fn: InfoNCELoss, batch: dict[str, Any]) -> torch.Tensor:
    """The loss of one collated batch (already on the model's device): InfoNCE, or a
    ``lib.losses.TrainingObjective`` (with the batch's teacher targets when it has them). Under
    autocast only the encoder runs in bf16/fp16: the loss (similarity products, softmax, squared
    distances) is computed in fp32."""
    query, positive, negative, mask = dual_encoder(batch["query"], batch["positive"], batch["negative"],
                                                   batch["negative_index"])
    with torch.autocast(query.device.type, enabled=False):
        return loss_fn(query, positive, negative, mask, batch["candidate_keys"], *distill_targets(batch))


class RankSlice:
    """The slice of each global batch that one process encodes (all of it in a single process)."""

    def __init__(self, sampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for batch in self.sampler:
            size = len(batch) // self.world
            yield batch[self.rank * size:(self.rank + 1) * size]

    def __len__(self) -> int:
        return len(self.sampler)
