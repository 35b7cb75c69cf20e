"""Contrastive fine-tuning of the dual encoder: batches from a sampler, InfoNCE, AdamW, checkpoints.

One step: ``grad_accumulation`` batches from the sampler (``lib.sampling``), each tokenized with
the backbone's prefixes and maximum lengths, embedded by the shared encoder (queries, positives,
hard negatives), scored by :class:`lib.losses.InfoNCELoss`; then gradient clipping, an AdamW step
and a linear warm-up/decay learning rate (``transformers.get_linear_schedule_with_warmup``).
Every ``eval_every`` steps the same loss on fixed validation batches (question ids held out with
``split_by_qid``) decides early stopping (``patience`` evaluations without improvement) and which
model is kept as the best. Gradient accumulation averages the gradients of several contrastive
batches; it does not add negatives (the softmax of a batch only sees that batch).

Outputs, in ``outputs/<run>/``: ``config.json`` + ``versions.json`` (resolved configuration and
package versions), ``train_log.csv`` (step, epoch, loss, lr, val_loss, pairs_per_second,
elapsed_s; rewritten atomically), ``checkpoints/step-NNNNNN/`` (the last ``keep_checkpoints``),
``model/`` (final) and ``model-best/`` (lowest validation loss), ``metrics.json`` at the end.
A model folder loads with ``SentenceTransformer(path)``, ``transformers.AutoModel.from_pretrained
(path)`` and ``lib.backbones.load_model(path)`` (its ``backbone.json`` holds pooling, prefixes and
maximum lengths; the name is ``<backbone>-<sampler>``).

Resuming: a run whose folder holds a checkpoint continues from the latest one (``resume=True``)
and ends with the same weights as an uninterrupted run, bit for bit on the same machine: a
checkpoint holds the trainable weights, optimizer, scheduler, (fp16) grad scaler, sampler
position, the log, and the RNG states of Python, NumPy and torch (CPU and CUDA). Dropout stays
on during training; it is deterministic because its generator (torch's global RNG) is restored
and nothing else draws from it between steps (the DataLoader gets a generator of its own and no
worker processes, so the sampler's position is exactly the number of batches consumed).
A checkpoint of another configuration is refused (fields in ``RESUME_MAY_DIFFER`` excepted).

Several GPUs: ``torchrun --nproc_per_node=N -m lib.train --config run.yaml key=value ...``
(DistributedDataParallel, NCCL). ``batch_size`` is the global contrastive batch: the sampler
draws batches of ``batch_size`` pairs, each process encodes its ``batch_size / N`` slice, and the
loss gathers every process's embeddings (``torch.distributed.nn.functional.all_gather``, gradients
flow back) so that each query still meets all ``batch_size`` in-batch negatives. Only rank 0
writes files. Tested here: the single-process CPU path (and the gathered loss with two gloo
processes; ``torchrun --nproc_per_node=2 -m lib.train device=cpu ...`` runs on CPUs too).

On a CPU shared with other jobs, ``OMP_NUM_THREADS=1`` can be several times faster than torch's
default thread count (busy-waiting threads); the thread count may change the last bits of a run.

    config = TrainConfig(backbone="tiny", sampler="hybrid", steps=4, batch_size=8, run="demo")
    result = train(config)                       # progress bar; resumes if outputs/demo has a checkpoint
    model = lib.backbones.load_model(result.model_dir)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import random
import re
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.io import atomic_path, run_dir, write_json, write_provenance, write_text
from lib.losses import InfoNCELoss
from lib.naming import train_run_name

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Fields that may change between a checkpoint and its resumption (they do not change the weights
# on one machine; a different device or precision changes the rounding, not the recipe).
RESUME_MAY_DIFFER = ("resume", "device", "precision", "checkpoint_every", "keep_checkpoints", "data_dir")
LOG_COLUMNS = ["step", "epoch", "loss", "lr", "val_loss", "pairs_per_second", "elapsed_s"]


class TrainError(RuntimeError):
    """Training cannot start or resume as configured; the message names the setting and the fix."""


@dataclass
class TrainConfig:
    """Every parameter of a training run; ``resolved()`` fills the automatic ones and is what
    ``config.json`` records.

        config = TrainConfig(backbone="me5-small-q4", sampler="hybrid", alpha=0.5, steps=150)
        config = TrainConfig.from_file("params/train/x.yaml", ["steps=10", "sampler=mono"])
    """

    # model
    backbone: str = "me5-small-q4"           # registry name (params/backbones) or model folder
    freeze_embeddings: bool | str = "auto"   # freeze the word-embedding table; auto: on CPU only
    # data
    train_sources: str = "mlqa-r"            # comma-separated LAReQA datasets: mlqa-r, xquad-r
    languages: str = ""                      # comma-separated training languages; "" = all
    candidate_context: str = "sentence"      # positives as sentences, or sentence + paragraph
    max_negatives: int = 3                   # hard negatives kept per group and language
    data_dir: str = ""                       # LAReQA folder; "" = LAREQA_DIR or the download cache
    # batches
    sampler: str = "hybrid"                  # en | xx | mono | cross | hybrid (lib.sampling)
    alpha: float = 0.5                       # hybrid: probability that a batch is monolingual
    source_temperature: float = 1.0          # source of a batch ~ size ** (1 / T)
    batch_size: int = 32                     # pairs per contrastive batch (over all processes)
    hard_negatives: bool = True
    negative_language: str = "passage"       # language of the hard negative: passage's or query's
    # loss and optimisation
    temperature: float = 0.05                # InfoNCE tau (scale 20)
    symmetric: bool = False                  # add the passage-to-query direction
    steps: int = 150                         # optimizer steps
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1                # share of steps with a linearly rising learning rate
    max_grad_norm: float = 1.0               # gradient clipping (0 = off)
    grad_accumulation: int = 1               # batches per optimizer step
    precision: str = "auto"                  # auto: bf16 (fp16 without bf16) on a GPU, fp32 on CPU
    seed: int = 0
    device: str = "auto"
    # validation, early stopping, checkpoints
    validation_fraction: float = 0.1         # share of question ids held out (split_by_qid)
    split_seed: int = 0                      # held-out ids and validation batches: the same for every seed
    validation_sampler: str = "hybrid"       # fixed for every run (alpha 0.5): comparable losses
    validation_batches: int = 8              # fixed batches of batch_size pairs
    eval_every: int = 25                     # steps between validation losses (0 = only at the end)
    patience: int = 3                        # evaluations without improvement before stopping (0 = never)
    checkpoint_every: int = 50               # steps between checkpoints (0 = none)
    keep_checkpoints: int = 2
    run: str = ""                            # outputs/<run>; "" = lib.naming.train_run_name
    resume: bool = True                      # continue from the latest checkpoint of the run

    def resolved(self) -> "TrainConfig":
        """A copy with ``run``, ``device``, ``precision`` and ``freeze_embeddings`` decided, and checked."""
        from lib.backbones import default_device
        from lib.sampling import NEGATIVE_LANGUAGES, SAMPLERS

        config = dataclasses.replace(self)
        if not config.run:
            config.run = train_run_name(Path(config.backbone).name, config.sampler, config.alpha,
                                        config.train_sources, config.seed)
        if config.device == "auto":
            config.device = default_device()
        on_gpu = str(config.device).startswith("cuda")
        if config.precision not in PRECISIONS:
            raise TrainError(f"precision {config.precision!r}: expected one of {PRECISIONS}")
        if config.precision == "auto":
            config.precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "fp32"
        if config.precision != "fp32" and not on_gpu:
            raise TrainError(f"precision {config.precision!r} needs a CUDA device (device={config.device!r}); "
                             "use precision='fp32' or 'auto' on the CPU")
        if config.freeze_embeddings == "auto":
            config.freeze_embeddings = not on_gpu
        if not isinstance(config.freeze_embeddings, bool):
            raise TrainError(f"freeze_embeddings {config.freeze_embeddings!r}: expected true, false or 'auto'")
        for name in ("sampler", "validation_sampler"):
            if getattr(config, name) not in SAMPLERS:
                raise TrainError(f"{name} {getattr(config, name)!r}: expected one of {SAMPLERS}")
        if config.negative_language not in NEGATIVE_LANGUAGES:
            raise TrainError(f"negative_language {config.negative_language!r}: expected one of {NEGATIVE_LANGUAGES}")
        positive = ("steps", "batch_size", "grad_accumulation", "validation_batches")
        for name in positive:
            if int(getattr(config, name)) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(config, name)!r}")
        for name in ("eval_every", "patience", "checkpoint_every", "max_negatives"):
            if int(getattr(config, name)) < 0:
                raise TrainError(f"{name} must be >= 0, got {getattr(config, name)!r}")
        if config.keep_checkpoints < 1:
            raise TrainError(f"keep_checkpoints must be >= 1, got {config.keep_checkpoints!r}")
        if not 0 <= config.warmup_ratio <= 1:
            raise TrainError(f"warmup_ratio {config.warmup_ratio!r}: expected a share of steps in [0, 1]")
        return config

    def source_list(self) -> list[str]:
        return [s.strip() for s in self.train_sources.split(",") if s.strip()]

    def language_list(self) -> list[str] | None:
        languages = [s.strip() for s in self.languages.split(",") if s.strip()]
        return languages or None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainError(f"unknown training parameters {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> "TrainConfig":
        """A YAML (or JSON) file of parameters, then ``key=value`` overrides (values parsed as YAML)."""
        import yaml

        values: dict[str, Any] = {}
        if path:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            if not isinstance(values, dict):
                raise TrainError(f"{path}: expected a mapping of training parameters")
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise TrainError(f"override {item!r}: expected key=value, e.g. steps=100")
            value = yaml.safe_load(raw) if raw else ""
            values[key.strip()] = "" if value is None else value
        for name in ("train_sources", "languages"):
            if isinstance(values.get(name), (list, tuple)):
                values[name] = ",".join(values[name])
        return cls.from_dict(values)


@dataclass
class TrainResult:
    """Where a run put its models, and what it measured."""

    run_dir: Path
    model_dir: Path
    best_model_dir: Path
    metrics: dict[str, Any]
    log: pd.DataFrame = field(repr=False)


# --------------------------------------------------------------------------------------------
# Batches -> tensors -> embeddings


def text_key(text: str) -> int:
    """A stable 63-bit id of a text (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class PairCollator:
    """Items of ``PairDataset`` -> tokenized queries, positives and the hard negatives that exist.

    Prefixes and maximum lengths are the backbone's (query side: ``query_prefix``,
    ``max_query_length``; passages and negatives: the passage ones). ``candidate_keys`` are text
    ids of the positives then the negatives, for the loss's duplicate mask.
    """

    def __init__(self, tokenizer, backbone, hard_negatives: bool = True):
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.hard_negatives = hard_negatives

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
        keys = [text_key(text) for text in positives]
        if self.hard_negatives:
            rows = [i for i, item in enumerate(items) if item.get("negative")]
            if rows:
                batch["negative"] = self._tokenize([items[i]["negative"] for i in rows], b.passage_prefix,
                                                   b.max_passage_length)
            batch["negative_index"] = torch.tensor(rows, dtype=torch.long)
            keys += [text_key(item["negative"]) if item.get("negative") else -1 for item in items]
        batch["candidate_keys"] = torch.tensor(keys, dtype=torch.long)
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


def _to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=True)
        elif isinstance(value, dict):
            moved[key] = {k: v.to(device, non_blocking=True) for k, v in value.items()}
        else:
            moved[key] = value
    return moved


def batch_loss(dual_encoder: nn.Module, loss_fn: InfoNCELoss, batch: dict[str, Any]) -> torch.Tensor:
    """InfoNCE of one collated batch (already on the model's device)."""
    query, positive, negative, mask = dual_encoder(batch["query"], batch["positive"], batch["negative"],
                                                   batch["negative_index"])
    return loss_fn(query, positive, negative, mask, batch["candidate_keys"])


class _RankSlice:
    """The slice of each global batch that one process encodes (all of it in a single process)."""

    def __init__(self, sampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for batch in self.sampler:
            size = len(batch) // self.world
            yield batch[self.rank * size:(self.rank + 1) * size]

    def __len__(self) -> int:
        return len(self.sampler)


# --------------------------------------------------------------------------------------------
# Seeds, devices, processes


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_processes(config: TrainConfig) -> _Processes:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Processes()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        backend = "nccl" if str(config.device).startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if config.batch_size % world:
        raise TrainError(f"batch_size {config.batch_size} is not divisible by the {world} processes; "
                         "each process encodes batch_size / processes pairs of every batch")
    return _Processes(rank, world, local_rank)


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process: allocated GPU memory on CUDA, else the resident set (ru_maxrss)."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# --------------------------------------------------------------------------------------------
# Models on disk


def trained_backbone_settings(config: TrainConfig, backbone, step: int, kind: str) -> dict[str, Any]:
    """``backbone.json`` of a trained model: the base backbone's encoding settings, a new name."""
    settings = backbone.as_dict()
    base_name = settings["name"]
    settings.update(
        name=f"{base_name}-{config.sampler}", source="path", path=None, hub_id=None,
        description=f"{base_name} fine-tuned with the {config.sampler} sampler ({kind} model, step {step})",
        extra={**(settings.get("extra") or {}), "trained_from": base_name, "run": config.run,
               "sampler": config.sampler, "alpha": config.alpha, "step": step, "kind": kind})
    return settings


def save_model(encoder, path: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Write a SentenceTransformer folder (prompts = the prefixes) plus ``backbone.json``, atomically."""
    from transformers.utils import logging as transformers_logging

    path = Path(path)
    encoder.prompts = {"query": settings["query_prefix"], "passage": settings["passage_prefix"]}
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Writing model shards" bar at every save
    try:
        with atomic_path(path) as tmp:
            encoder.save(str(tmp), model_name=settings["name"], create_model_card=False)
            write_json(tmp / "backbone.json", settings)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return path


def _trainable_state(encoder) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in encoder.named_parameters() if p.requires_grad}


def _load_trainable_state(encoder, state: dict[str, torch.Tensor]) -> None:
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        raise TrainError(f"checkpoint holds parameters {sorted(set(state) ^ trainable)[:5]}... that do not match "
                         "the trainable parameters of this model (another backbone or freeze setting)")
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (folders appear only once fully written)."""
    folder = run_path / "checkpoints"
    found = [p for p in folder.glob("step-*") if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


# --------------------------------------------------------------------------------------------
# Training


def load_training_groups(config: TrainConfig):
    """LAReQA groups of every source in ``train_sources``, then ``split_by_qid`` -> (train, validation)."""
    from lib.training_data import lareqa_groups, split_by_qid

    groups = []
    for source in config.source_list():
        groups += lareqa_groups(source, candidate_context=config.candidate_context,
                                max_negatives=config.max_negatives, data_dir=config.data_dir or None)
    if not groups:
        raise TrainError(f"train_sources {config.train_sources!r} gave no training groups; "
                         "name LAReQA datasets, e.g. 'mlqa-r' or 'mlqa-r,xquad-r'")
    return split_by_qid(groups, config.validation_fraction, config.split_seed)


def train(config: TrainConfig, groups=None, progress: bool = True,
          on_step_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train as ``config`` says; resume from the run's latest checkpoint when there is one.

    ``groups``: ``(train_groups, validation_groups)`` to use instead of loading ``train_sources``
    (tests, other data); ``on_step_end(step)`` is called after each step's checkpoint.

        result = train(TrainConfig(backbone="tiny", steps=4, batch_size=8, run="demo"))
        result.metrics["best_val_loss"], result.model_dir
    """
    from transformers import get_linear_schedule_with_warmup

    from lib.backbones import load_model
    from lib.encode import autocast
    from lib.sampling import PairDataset, SamplingError, build_sampler

    config = config.resolved()
    processes = _start_processes(config)
    device = config.device
    if processes.world > 1 and str(device).startswith("cuda"):
        device = f"cuda:{processes.local_rank}"
        torch.cuda.set_device(device)
    path = run_dir(config.run)
    set_seed(config.seed + processes.rank)

    if groups is None:
        train_groups, validation_groups = load_training_groups(config)
    else:
        train_groups, validation_groups = groups
    if not validation_groups and config.validation_fraction > 0 and groups is None:
        raise TrainError("the validation split is empty: raise validation_fraction")

    # --- model ---------------------------------------------------------------------------------
    encoder = load_model(config.backbone, device=device)
    backbone = encoder.backbone
    if config.freeze_embeddings:
        encoder[0].model.get_input_embeddings().weight.requires_grad_(False)
    encoder.train()
    dual_encoder: nn.Module = DualEncoder(encoder)
    if processes.world > 1:
        dual_encoder = nn.parallel.DistributedDataParallel(
            dual_encoder, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None,
            find_unused_parameters=True)  # the BERT pooler is computed but unused by mean/CLS pooling
    loss_fn = InfoNCELoss(config.temperature, config.symmetric, gather_across_devices=processes.world > 1)

    # --- data ----------------------------------------------------------------------------------
    collator = PairCollator(encoder.tokenizer, backbone, config.hard_negatives)
    sampler_options = dict(seed=config.seed, source_temperature=config.source_temperature,
                           languages=config.language_list())
    try:
        sampler = build_sampler(config.sampler, train_groups, config.batch_size, alpha=config.alpha,
                                **sampler_options)
    except SamplingError as error:
        raise TrainError(f"training batches: {error}") from None
    dataset = PairDataset(train_groups, config.hard_negatives, config.negative_language, config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=_RankSlice(sampler, processes.rank, processes.world),
                                         collate_fn=collator, num_workers=0, generator=torch.Generator())
    validation = []
    if validation_groups:
        try:
            validation_sampler = build_sampler(config.validation_sampler, validation_groups, config.batch_size,
                                               alpha=0.5, **{**sampler_options, "seed": config.split_seed})
        except SamplingError as error:
            raise TrainError(
                f"validation batches ({len({g.qid for g in validation_groups})} held-out question ids): {error}. "
                "Raise validation_fraction, lower batch_size, or choose validation_sampler='cross'") from None
        validation_data = PairDataset(validation_groups, config.hard_negatives, config.negative_language,
                                      config.split_seed)
        for index, batch in enumerate(_RankSlice(validation_sampler, processes.rank, processes.world)):
            if index >= config.validation_batches:
                break
            validation.append(collator([validation_data[pair] for pair in batch]))

    # --- optimisation --------------------------------------------------------------------------
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ], lr=config.learning_rate)
    warmup_steps = int(round(config.warmup_ratio * config.steps))
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, config.steps)
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None

    state = {"step": 0, "best_val_loss": math.inf, "best_step": None, "evaluations_since_best": 0,
             "last_val_loss": None, "elapsed_s": 0.0, "train_s": 0.0, "pairs": 0, "log": [],
             "finished": False, "stopped_early": False}
    resumed_from = None
    existing = checkpoints(path)
    if existing and config.resume:
        resumed_from = existing[-1]
        saved = torch.load(resumed_from / "state.pt", map_location="cpu", weights_only=False)
        _check_same_config(saved["config"], asdict(config), resumed_from)
        _load_trainable_state(encoder, torch.load(resumed_from / "model.pt", map_location="cpu"))
        optimizer.load_state_dict(torch.load(resumed_from / "optimizer.pt", map_location="cpu"))
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        sampler.load_state_dict(saved["sampler"])
        state = saved["trainer"]
        rng_states = saved["rng"]
        set_rng_state(rng_states[processes.rank] if processes.rank < len(rng_states) else rng_states[0])
    elif processes.main:  # a fresh start: nothing of an earlier run of this name may survive
        for stale in ("checkpoints", "model", "model-best"):
            shutil.rmtree(path / stale, ignore_errors=True)
        (path / "metrics.json").unlink(missing_ok=True)
    if processes.main:
        write_provenance(path, asdict(config))

    def write_log() -> pd.DataFrame:
        log = pd.DataFrame(state["log"], columns=LOG_COLUMNS)
        if processes.main:
            write_text(path / "train_log.csv", log.to_csv(index=False))
        return log

    def validation_loss() -> float | None:
        if not validation:
            return None
        encoder.eval()
        plain = dual_encoder.module if processes.world > 1 else dual_encoder
        total = 0.0
        with torch.no_grad():
            for batch in validation:
                with autocast(device, config.precision):
                    total += batch_loss(plain, loss_fn, _to_device(batch, device)).item()
        value = torch.tensor(total / len(validation), dtype=torch.float64)
        if processes.world > 1:
            value = value.to(device)
            torch.distributed.all_reduce(value)
            value = value / processes.world
        encoder.train()
        return float(value)

    def save_checkpoint() -> None:
        rng = [rng_state()]
        if processes.world > 1:
            rng = [None] * processes.world
            torch.distributed.all_gather_object(rng, rng_state())
        if not processes.main:
            return
        target = path / "checkpoints" / f"step-{state['step']:06d}"
        with atomic_path(target) as tmp:
            tmp.mkdir()
            torch.save(_trainable_state(encoder), tmp / "model.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save({"config": asdict(config), "trainer": state, "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "sampler": sampler.state_dict(), "rng": rng}, tmp / "state.pt")
            write_json(tmp / "state.json", {k: v for k, v in state.items() if k != "log"}
                       | {"sampler": sampler.state_dict()})
        for old in checkpoints(path)[:-config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def save(kind: str) -> Path:
        target = path / ("model" if kind == "final" else "model-best")
        if processes.main:
            save_model(encoder, target, trained_backbone_settings(config, backbone, state["step"], kind))
        return target

    # --- the loop ------------------------------------------------------------------------------
    def endless_batches():
        while True:  # the sampler moves on to its next epoch when one is exhausted
            yield from loader

    batches = endless_batches()
    model_params = [p for _, p in trainable]
    bar = None
    if progress and processes.main and not state["finished"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=state["step"], desc=f"train {config.run}", unit="step")
    started = time.perf_counter() - state["elapsed_s"]
    while not state["finished"] and state["step"] < config.steps:
        step_start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_loss, step_pairs = 0.0, 0
        for micro in range(config.grad_accumulation):
            batch = _to_device(next(batches), device)
            last = micro == config.grad_accumulation - 1
            sync = dual_encoder.no_sync() if processes.world > 1 and not last else contextlib.nullcontext()
            with sync:
                with autocast(device, config.precision):
                    loss = batch_loss(dual_encoder, loss_fn, batch)
                scaled = loss / config.grad_accumulation
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            step_loss += loss.item() / config.grad_accumulation
            step_pairs += batch["pairs"] * processes.world
        if processes.world > 1:  # log the loss of the whole batch, not of this process's queries
            mean_loss = torch.tensor(step_loss, dtype=torch.float64, device=device)
            torch.distributed.all_reduce(mean_loss)
            step_loss = float(mean_loss) / processes.world
        if scaler is not None:
            scaler.unscale_(optimizer)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model_params, config.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        step_seconds = time.perf_counter() - step_start
        state["step"] += 1
        state["train_s"] += step_seconds
        state["pairs"] += step_pairs
        step = state["step"]

        val_loss = None
        if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
            val_loss = validation_loss()
        if val_loss is not None:
            state["last_val_loss"] = val_loss
            if val_loss < state["best_val_loss"]:
                state.update(best_val_loss=val_loss, best_step=step, evaluations_since_best=0)
                save("best")
            else:
                state["evaluations_since_best"] += 1
                if config.patience and state["evaluations_since_best"] >= config.patience:
                    state["stopped_early"] = True
        state["elapsed_s"] = time.perf_counter() - started
        state["log"].append({"step": step, "epoch": sampler.epoch, "loss": step_loss, "lr": learning_rate,
                             "val_loss": val_loss, "pairs_per_second": step_pairs / step_seconds,
                             "elapsed_s": state["elapsed_s"]})
        write_log()
        state["finished"] = state["stopped_early"] or step >= config.steps
        if state["finished"]:
            save("final")
        if state["finished"] or (config.checkpoint_every and step % config.checkpoint_every == 0):
            save_checkpoint()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", val=f"{state['last_val_loss'] or float('nan'):.3f}")
        if on_step_end is not None:
            on_step_end(step)
    if bar is not None:
        bar.close()

    model_dir = path / "model"
    if not (model_dir / "backbone.json").is_file():
        save("final")  # a run resumed after its final checkpoint but before its model was written
    best_dir = path / "model-best"
    if not (best_dir / "backbone.json").is_file():
        if processes.main:
            shutil.copytree(model_dir, best_dir, dirs_exist_ok=True)  # no validation: best = final
    log = write_log()
    metrics = {
        "run": config.run, "steps": state["step"], "stopped_early": state["stopped_early"],
        "final_val_loss": state["last_val_loss"],
        "best_val_loss": None if math.isinf(state["best_val_loss"]) else state["best_val_loss"],
        "best_step": state["best_step"], "final_train_loss": float(log.loss.iloc[-1]) if len(log) else None,
        "wall_time_s": state["elapsed_s"], "train_time_s": state["train_s"], "pairs": state["pairs"],
        "pairs_per_second": state["pairs"] / state["train_s"] if state["train_s"] else None,
        "peak_memory_mb": peak_memory_mb(device), "peak_memory_kind": "cuda_allocated"
        if str(device).startswith("cuda") else "process_max_rss",
        "device": str(device), "processes": processes.world,
        "train_groups": len(train_groups), "validation_groups": len(validation_groups),
        "validation_batches": len(validation),
        "trainable_parameters": sum(p.numel() for _, p in trainable),
        "frozen_parameters": sum(p.numel() for p in encoder.parameters() if not p.requires_grad),
        "resumed_from_step": int(resumed_from.name.split("-")[1]) if resumed_from else None,
        "model_dir": str(model_dir.relative_to(path)), "best_model_dir": str(best_dir.relative_to(path)),
    }
    if processes.main:
        write_json(path / "metrics.json", metrics)
    return TrainResult(path, model_dir, best_dir, metrics, log)


def _check_same_config(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    different = {key: (saved.get(key), value) for key, value in current.items()
                 if key not in RESUME_MAY_DIFFER and saved.get(key) != value}
    if different:
        detail = "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in different.items())
        raise TrainError(
            f"cannot resume from {where}: it was trained with another configuration ({detail}). "
            "Choose a new run name (run=...), or resume=False to start this run over")


# --------------------------------------------------------------------------------------------
# Figures and the command line


def plot_loss_curves(log: pd.DataFrame, path: str | os.PathLike | None = None, smooth: int = 10):
    """Training loss per step (and its rolling mean over ``smooth`` steps) and validation loss."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    figure, axis = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=log, x="step", y="loss", label="train", alpha=0.45 if len(log) >= smooth else 1.0, ax=axis)
    if len(log) >= smooth:
        sns.lineplot(x=log.step, y=log.loss.rolling(smooth, min_periods=1).mean(),
                     label=f"train (mean of {smooth} steps)", ax=axis)
    evaluated = log.dropna(subset=["val_loss"])
    if len(evaluated):
        sns.lineplot(data=evaluated, x="step", y="val_loss", marker="o", label="validation", ax=axis)
    axis.set(xlabel="optimizer step", ylabel="InfoNCE loss", title="Training and validation loss")
    figure.tight_layout()
    if path is not None:
        from lib.io import save_figure

        save_figure(figure, path)
    return figure


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """``python -m lib.train [--config file.yaml] [key=value ...]`` (also under torchrun)."""
    parser = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file of TrainConfig fields")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. steps=100 sampler=mono")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = TrainConfig.from_file(args.config, args.overrides)
    result = train(config, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model: {result.model_dir}\nbest model: {result.best_model_dir}\nmetrics: {result.metrics}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()      # every rank done communicating before gloo/NCCL is torn down
        torch.distributed.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
