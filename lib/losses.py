"""The contrastive loss of the dual encoder: InfoNCE over in-batch and hard negatives.

For a batch of B triplets (q_i, d+_i, d-_i), with L2-normalised embeddings (so that the dot
product is the cosine similarity) and temperature tau, the candidates of every query are the
B positives of the batch followed by the M hard negatives that exist (M <= B: a pair may have
none), C = [d+_1 .. d+_B, d-_1 .. d-_M], and

    s_ij  = cos(q_i, c_j) / tau
    L_q→p = -1/B sum_i log( exp(s_ii) / sum_j exp(s_ij) )          (softmax over the B + M candidates)

With ``symmetric=True`` the passage-to-query direction is added, each positive choosing its
query among the B queries of the batch, and the two directions are averaged:

    L_p→q = -1/B sum_i log( exp(cos(d+_i, q_i)/tau) / sum_k exp(cos(d+_i, q_k)/tau) )
    L     = (L_q→p + L_p→q) / 2

Relation to sentence-transformers' ``MultipleNegativesRankingLoss`` (MNRL): with every pair
holding one hard negative, ``InfoNCELoss(temperature=0.05)`` equals
``MultipleNegativesRankingLoss(model, scale=20)`` (scale = 1 / temperature; cosine similarity;
every hard negative of the batch is a candidate of every query, as there), and
``symmetric=True`` equals ``directions=("query_to_doc", "doc_to_query"),
partition_mode="per_direction"`` (the old ``MultipleNegativesSymmetricRankingLoss``). It differs
in three ways: (1) pairs without a hard negative are allowed, their slot is dropped from the
candidates rather than filled; (2) with ``candidate_keys``, a candidate whose key equals the
key of query i's positive (the same passage text under another pair, a false negative) is
removed from query i's softmax, where MNRL relies on a no-duplicates batch sampler instead;
(3) the embeddings are inputs, so the module holds no model and works on gathered tensors.

Across several processes (``gather_across_devices=True``, torchrun/DDP) each process scores
its own queries against the candidates of every process, gathered with
``torch.distributed.nn.functional.all_gather`` so that gradients flow back to the process that
produced them (as MNRL's ``gather_across_devices``). Every process must hold the same number of
pairs.

    loss_fn = InfoNCELoss(temperature=0.05, symmetric=False)
    loss = loss_fn(query_embeddings, positive_embeddings, negative_embeddings, negative_mask)
    loss.backward()

Beside it, :class:`DistillationMSELoss` (multilingual knowledge distillation, Reimers & Gurevych
2020: each text pulled onto a frozen teacher's embedding of its source-language version) and
:class:`TrainingObjective`, the loss the trainer calls: InfoNCE, distillation, or InfoNCE +
weight x distillation, each term kept for the log.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (rank order), gradients flowing back."""
    _, world = _world()
    if world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in torch 2.13 for a private module; still the public API
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(tensor), dim=0)


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch negatives and optional hard negatives (formula in the module docstring).

    ``temperature``: tau (0.05 = scale 20); ``symmetric``: add the passage-to-query direction;
    ``gather_across_devices``: use the candidates of every process as negatives.
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False, gather_across_devices: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature {temperature!r} must be > 0 (0.05 is scale 20, the usual choice)")
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.gather_across_devices = bool(gather_across_devices)

    @property
    def scale(self) -> float:
        return 1.0 / self.temperature

    def forward(self, query: Tensor, positive: Tensor, negative: Tensor | None = None,
                negative_mask: Tensor | None = None, candidate_keys: Tensor | None = None) -> Tensor:
        """Mean loss over the local queries.

        ``query``, ``positive``: (B, D); ``negative``: (B, D) with ``negative_mask`` (B,) bool saying
        which rows are real hard negatives (rows where it is False are ignored; without a mask every
        row is one), or None for in-batch negatives only. ``candidate_keys``: optional integer ids of
        the positive texts (B,), followed by those of the negative texts when there are negatives
        (2B,); equal ids mean equal texts. A candidate equal to query i's positive, other than that
        positive itself, is left out of query i's softmax (and, when symmetric, the queries of the
        other pairs with that positive are left out of its reverse softmax).
        Embeddings need not be normalised: the score is the cosine similarity.
        """
        batch = query.shape[0]
        if positive.shape != query.shape:
            raise ValueError(f"positive embeddings have shape {tuple(positive.shape)}, expected "
                             f"{tuple(query.shape)} like the queries (one positive per query)")
        precision = torch.promote_types(query.dtype, torch.float32)  # bf16/fp16 embeddings: score in fp32
        query = F.normalize(query.to(precision), dim=-1)
        positive = F.normalize(positive.to(precision), dim=-1)
        has_negatives = negative is not None
        if has_negatives:
            if negative.shape != query.shape:
                raise ValueError(f"negative embeddings have shape {tuple(negative.shape)}, expected "
                                 f"{tuple(query.shape)}: one row per pair, with negative_mask for missing ones")
            negative = F.normalize(negative.to(precision), dim=-1)
            if negative_mask is None:
                negative_mask = torch.ones(batch, dtype=torch.bool, device=query.device)
        rank, world = _world() if self.gather_across_devices else (0, 1)
        all_queries, all_positives = query, positive
        if world > 1:
            all_queries, all_positives = gather_with_grad(query), gather_with_grad(positive)
        candidates, valid = [all_positives], [torch.ones(all_positives.shape[0], dtype=torch.bool, device=query.device)]
        if has_negatives:
            candidates.append(gather_with_grad(negative) if world > 1 else negative)
            valid.append(_gather_plain(negative_mask.bool()) if world > 1 else negative_mask.bool())
        candidates = torch.cat(candidates)
        valid = torch.cat(valid)
        own = torch.arange(batch, device=query.device) + rank * batch  # column of q_i's positive

        logits = query @ candidates.T * self.scale  # (B, world*B [+ world*B])
        blocked = ~valid.unsqueeze(0).expand_as(logits)
        reverse_blocked = None
        if candidate_keys is not None:
            expected = batch * (2 if has_negatives else 1)
            if candidate_keys.shape != (expected,):
                raise ValueError(f"candidate_keys has shape {tuple(candidate_keys.shape)}, expected ({expected},): "
                                 "the ids of the positive texts, then of the negative texts if any")
            keys = _gather_plain(candidate_keys) if world > 1 else candidate_keys
            # per-process blocks [positives, negatives] -> the candidate order [all positives, all negatives]
            keys = keys.view(world, -1, batch).transpose(0, 1).reshape(-1)
            own_keys = keys[own].unsqueeze(1)
            rows = torch.arange(batch, device=query.device)
            duplicate = keys.unsqueeze(0) == own_keys
            duplicate[rows, own] = False
            blocked = blocked | duplicate
            # the same passage text under another pair: that pair's query is no negative either
            reverse_blocked = keys[: world * batch].unsqueeze(0) == own_keys
            reverse_blocked[rows, own] = False
        loss = F.cross_entropy(logits.masked_fill(blocked, float("-inf")), own)
        if self.symmetric:
            # positive i chooses its query among all queries (of every process)
            reverse = positive @ all_queries.T * self.scale
            if reverse_blocked is not None:
                reverse = reverse.masked_fill(reverse_blocked, float("-inf"))
            loss = (loss + F.cross_entropy(reverse, own)) / 2
        return loss


def _gather_plain(tensor: Tensor) -> Tensor:
    """All-gather without gradients (masks, ids), concatenated in rank order."""
    world = torch.distributed.get_world_size()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class DistillationMSELoss(nn.Module):
    """Multilingual knowledge distillation: every text of a group pulled onto its teacher target.

    For a batch of B pairs, the student's L2-normalised embeddings s_r of its 2B texts (the B
    queries, then the B positive passages, each in whatever language the sampler drew) and their
    targets t_r (the frozen teacher's embedding of the same question or passage in the group's
    source language, or averaged over the group's languages; ``lib.distill.TeacherTargets``):

        L_distill = 1/(2B) sum_r || s_r / ||s_r|| - t_r ||^2          (r over the 2B rows)

    = D x sentence-transformers' ``MSELoss`` (mean over the B x D elements) on normalised
    embeddings, so that the term is on the scale of InfoNCE (for unit vectors, 2 - 2 cos(s_r, t_r))
    whatever the dimension D. The targets are constants: no gradient reaches the teacher.

    Args:
        none: the term has no parameter; its weight beside InfoNCE is :class:`TrainingObjective`'s
        ``distill_weight``, its targets come from ``lib.distill`` (``distill_target``,
        ``distill_target_centering``, ``distill_teacher`` of ``lib.train.TrainConfig``).

    References:
        Reimers & Gurevych (2020), "Making Monolingual Sentence Embeddings Multilingual using
        Knowledge Distillation", EMNLP, arXiv 2004.09813; sentence-transformers' ``MSELoss`` and
        its ``make_multilingual`` example.

    Inputs:
        ``query``, ``positive``: (B, D) student embeddings (any float dtype; scored in fp32);
        ``query_target``, ``positive_target``: (B, D) teacher targets.

    Relations:
        ``MSELoss`` regresses raw embeddings on the teacher's, with the source sentence and its
        translation as two rows; here the rows are normalised (retrieval scores cosines), and the
        source-language text is a row only when the sampler draws it.

    Example:
        loss_fn = DistillationMSELoss()
        loss = loss_fn(student_queries, student_passages, teacher_queries, teacher_passages)
        loss.backward()
    """

    def forward(self, query: Tensor, positive: Tensor, query_target: Tensor, positive_target: Tensor) -> Tensor:
        student = torch.cat([query, positive])
        target = torch.cat([query_target, positive_target])
        if student.shape != target.shape:
            raise ValueError(f"distillation targets have shape {tuple(target.shape)}, expected "
                             f"{tuple(student.shape)}: one teacher target per query and per positive")
        precision = torch.promote_types(student.dtype, torch.float32)
        student = F.normalize(student.to(precision), dim=-1)
        return (student - target.detach().to(precision)).pow(2).sum(dim=-1).mean()


OBJECTIVES = ("contrastive", "distill", "contrastive+distill")


class TrainingObjective(nn.Module):
    """The training loss: InfoNCE, distillation, or their sum (``objective`` of ``lib.train``).

        L = L_InfoNCE                                   objective "contrastive"
        L = L_distill                                   objective "distill"
        L = L_InfoNCE + distill_weight * L_distill      objective "contrastive+distill"

    Args:
        objective: contrastive | distill | contrastive+distill (default contrastive).
        contrastive: the InfoNCE module (default ``InfoNCELoss()``: temperature 0.05 = scale 20).
        distill_weight: weight of L_distill in contrastive+distill (default 1.0; > 0).

    After each call ``terms`` holds the detached value of each term computed
    (``{"contrastive": ..., "distill": ...}``), which the trainer logs as ``loss_contrastive`` and
    ``loss_distill``. Called like :class:`InfoNCELoss`, with the targets of
    :class:`DistillationMSELoss` when distilling.

        objective = TrainingObjective("contrastive+distill", InfoNCELoss(0.05), distill_weight=1.0)
        loss = objective(query, positive, negative, mask, keys, query_target, positive_target)
    """

    def __init__(self, objective: str = "contrastive", contrastive: InfoNCELoss | None = None,
                 distill_weight: float = 1.0):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r}: expected one of {OBJECTIVES}")
        if not distill_weight > 0:
            raise ValueError(f"distill_weight {distill_weight!r} must be > 0 (1.0: the two terms as they are)")
        self.objective = objective
        self.contrastive = (contrastive or InfoNCELoss()) if objective != "distill" else None
        self.distill = DistillationMSELoss() if objective != "contrastive" else None
        self.distill_weight = float(distill_weight)
        self.terms: dict[str, Tensor] = {}

    def forward(self, query: Tensor, positive: Tensor, negative: Tensor | None = None,
                negative_mask: Tensor | None = None, candidate_keys: Tensor | None = None,
                query_target: Tensor | None = None, positive_target: Tensor | None = None) -> Tensor:
        terms = {}
        if self.contrastive is not None:
            terms["contrastive"] = self.contrastive(query, positive, negative, negative_mask, candidate_keys)
        if self.distill is not None:
            if query_target is None or positive_target is None:
                raise ValueError(f"objective {self.objective!r} needs teacher targets: the batch has none "
                                 "(collate it with PairCollator(..., targets=lib.distill.TeacherTargets))")
            terms["distill"] = self.distill(query, positive, query_target, positive_target)
        self.terms = {name: value.detach() for name, value in terms.items()}
        if self.objective == "contrastive":
            return terms["contrastive"]
        if self.objective == "distill":
            return terms["distill"]
        return terms["contrastive"] + self.distill_weight * terms["distill"]
