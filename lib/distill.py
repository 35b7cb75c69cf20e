"""Teacher targets of multilingual distillation (``objective`` distill | contrastive+distill).

The frozen teacher (the zero-shot backbone unless ``distill_teacher`` names another) embeds every
distinct query and passage text of the training and validation groups once, in the run's
precision, before the first step; the loss (``lib.losses.DistillationMSELoss``) then reads one
target per (group, side) and the teacher never runs during training. Per group g and side
(query, passage), with e_l the teacher's L2-normalised embedding of the group's text in language l:

| ``distill_target`` | target t_g                                                         |
|--------------------|--------------------------------------------------------------------|
| ``english``        | c(e_en): the source language (a group without English: as ``mean``) |
| ``mean``           | normalise( 1/|L_g| sum_{l in L_g} c(e_l) ) over the group's languages |

c(e) = e without ``distill_target_centering``; with it, c(e_l) = normalise(e_l - mu_l), mu_l the
mean of the teacher's embeddings of language l's texts of the *training* groups, per side: the
``center`` transform of ``lib.debias`` with the training pool as its statistics, distilled into
the student so that no statistics are needed at test time.

The teacher's embeddings are cached in ``outputs/cache/teacher/<teacher>-<precision>-<key>.safetensors``
(tensors ``query`` and ``passage``, rows in the order of the sorted distinct texts; no pickle).
The key hashes the teacher's identity (its registry settings: hub id and pinned revision, pooling,
prefixes, lengths; for a model folder the SHA-256 of its weight files), the precision and the
texts: another teacher, precision or text set is another file, computed anew. A resumed run reads
the same file (or recomputes the same values) before its checkpoint is loaded.

    texts = group_texts(train_groups + validation_groups)
    embeddings = teacher_embeddings(teacher_model, texts, precision="bf16")
    targets = build_targets(train_groups + validation_groups, texts, embeddings, "english",
                            centering=True, pool=train_groups)
    query_target, positive_target = targets.rows(items)          # (B, D) each, for the collator
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lib.backbones import get_backbone
from lib.checkpoint import rng_state, set_rng_state
from lib.data import ParallelGroup
from lib.encode import encode
from lib.io import atomic_path, fingerprint, outputs_dir, sha256_file

TARGETS = ("english", "mean")
SOURCE_LANGUAGE = "en"
SIDES = {"query": "queries", "passage": "positives"}   # embedding side -> ParallelGroup field


class DistillError(ValueError):
    """Distillation targets cannot be built as configured; the message names the input and the fix."""


def teacher_identity(backbone) -> dict[str, Any]:
    """What determines the teacher's embeddings: its registry settings (hub id, revision, pooling,
    prefixes, lengths) and, for a model folder, the SHA-256 of each weight file (not its path)."""
    identity = {k: v for k, v in backbone.as_dict().items() if k not in ("path", "description")}
    if backbone.path:
        folder = Path(backbone.path)
        identity["weights"] = [(str(w.relative_to(folder)), sha256_file(w))
                               for w in sorted(folder.glob("**/*.safetensors"))]
    return identity


def group_texts(groups: Sequence[ParallelGroup]) -> dict[str, list[str]]:
    """The distinct query texts and positive texts of ``groups``, sorted (the cache's row order)."""
    return {side: sorted({text for g in groups for lang, text in getattr(g, field).items() if lang in g.languages})
            for side, field in SIDES.items()}


def teacher_cache_file(backbone, precision: str, texts: dict[str, list[str]]) -> Path:
    """Where the teacher's embeddings of ``texts`` in a resolved ``precision`` are cached."""
    key = fingerprint(teacher_identity(backbone), precision, texts["query"], texts["passage"])
    return outputs_dir() / "cache" / "teacher" / f"{backbone.name}-{precision}-{key}.safetensors"


def teacher_embeddings(teacher: Callable[[], Any] | Any, backbone, texts: dict[str, list[str]], precision: str,
                       batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{"query": (Nq, D), "passage": (Np, D)}`` float32 L2-normalised teacher embeddings of
    ``texts`` (:func:`group_texts`), read from the cache or computed with ``lib.encode.encode`` in
    ``precision`` and cached. ``teacher``: the model, or a function returning it (called on a miss
    only). Python's, NumPy's and torch's RNG states are left as they were (a hit and a miss give
    the run the same random draws)."""
    from safetensors.numpy import load_file, save_file

    path = teacher_cache_file(backbone, precision, texts)
    if path.is_file():
        return load_file(str(path))
    state = rng_state()
    try:
        model = teacher() if callable(teacher) and not isinstance(teacher, torch.nn.Module) else teacher
        training, max_length = model.training, model.max_seq_length
        embeddings = {side: encode(model, texts[side], side, batch_size=batch_size, cache=False, precision=precision,
                                   show_progress_bar=False) for side in SIDES}
        model.max_seq_length = max_length      # encode sets it per side; a student keeps its own
        model.train(training)
    finally:
        set_rng_state(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({side: np.ascontiguousarray(rows) for side, rows in embeddings.items()}, str(tmp))
    return embeddings


@dataclass
class TeacherTargets:
    """One target per group and side: ``rows(items)`` gives the (B, D) targets of a batch's
    queries and positives (items of ``lib.sampling.PairDataset``: ``source``, ``qid``)."""

    index: dict[tuple[str, str], int]     # (source, qid) -> row of query / passage
    query: torch.Tensor                   # (G, D) float32
    passage: torch.Tensor                 # (G, D) float32
    without_source: int = 0               # groups without the source language (english: mean used)

    def rows(self, items: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            rows = torch.tensor([self.index[(item["source"], item["qid"])] for item in items], dtype=torch.long)
        except KeyError as error:
            raise DistillError(f"no teacher target for group {error.args[0]!r}: the targets were built for "
                               "other groups than the batches'") from None
        return self.query[rows], self.passage[rows]


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def _language_means(groups: Sequence[ParallelGroup], field: str, lookup: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mu_l of one side over ``groups`` (the training pool): the mean of the teacher's embeddings
    of every (group, language) text, as ``lib.debias.language_means`` over the pool."""
    by_language: dict[str, list[np.ndarray]] = {}
    for group in groups:
        for lang in group.languages:
            by_language.setdefault(lang, []).append(lookup[getattr(group, field)[lang]])
    return {lang: np.mean(np.asarray(rows, dtype=np.float64), axis=0) for lang, rows in by_language.items()}


def _group_vectors(group: ParallelGroup, field: str, lookup: dict[str, np.ndarray],
                   means: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """c(e_l) of each language of ``group`` on one side: e_l, or normalise(e_l - mu_l) with ``means``."""
    vectors = {lang: lookup[getattr(group, field)[lang]] for lang in group.languages}
    if means is None:
        return vectors
    missing = sorted(set(vectors) - set(means))
    if missing:
        raise DistillError(f"group {group.qid!r} has languages {missing} that no training group has: no mean "
                           "to centre them; drop them from the data or set distill_target_centering=false")
    return {lang: _normalise(vector - means[lang]) for lang, vector in vectors.items()}


def build_targets(groups: Sequence[ParallelGroup], texts: dict[str, list[str]], embeddings: dict[str, np.ndarray],
                  target: str = "english", centering: bool = False,
                  pool: Sequence[ParallelGroup] | None = None) -> TeacherTargets:
    """The targets of ``groups`` (table in the module docstring) from the teacher's ``embeddings``
    of ``texts``; ``pool``: the groups whose per-language means centre the embeddings
    (``centering``; default ``groups``)."""
    if target not in TARGETS:
        raise DistillError(f"distill_target {target!r}: expected one of {TARGETS}")
    targets, without_source = {}, 0
    for side, field in SIDES.items():
        lookup = dict(zip(texts[side], np.asarray(embeddings[side], dtype=np.float64)))
        means = _language_means(pool if pool is not None else groups, field, lookup) if centering else None
        rows = []
        for group in groups:
            vectors = _group_vectors(group, field, lookup, means)
            if target == "english" and SOURCE_LANGUAGE in vectors:
                rows.append(vectors[SOURCE_LANGUAGE])
            else:
                without_source += int(target == "english" and side == "query")
                rows.append(_normalise(np.mean(list(vectors.values()), axis=0)))
        targets[side] = torch.from_numpy(np.asarray(rows, dtype=np.float32))
    index = {(group.source, group.qid): row for row, group in enumerate(groups)}
    if len(index) != len(groups):
        raise DistillError("two groups share a (source, qid): the teacher targets need one group per question id")
    return TeacherTargets(index, targets["query"], targets["passage"], int(without_source))


def teacher_targets(config, student, train_groups: Sequence[ParallelGroup],
                    validation_groups: Sequence[ParallelGroup], compute: bool = True) -> TeacherTargets:
    """The targets of a run (a resolved ``lib.train.TrainConfig``): the teacher is
    ``distill_teacher`` or, when empty, the run's backbone, whose untrained weights are
    ``student``'s at set-up (no second model is loaded). ``compute=False``: read the cache only
    (the other processes of a torchrun, after rank 0 wrote it)."""
    from lib.backbones import load_model

    name = config.distill_teacher or config.backbone
    backbone = get_backbone(name)
    groups = list(train_groups) + list(validation_groups)
    texts = group_texts(groups)
    if compute:
        teacher = student if name == config.backbone else (lambda: load_model(name, device=config.device))
        embeddings = teacher_embeddings(teacher, backbone, texts, config.precision)
    else:
        from safetensors.numpy import load_file

        embeddings = load_file(str(teacher_cache_file(backbone, config.precision, texts)))
    return build_targets(groups, texts, embeddings, config.distill_target, config.distill_target_centering,
                         pool=train_groups)
