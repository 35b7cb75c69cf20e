"""The training loop of ``lib.train``: batches from a sampler, InfoNCE, AdamW, validation, checkpoints.

It reads as named steps over one ``_Run`` (model, batches, optimizer, ``TrainerState``):
``_set_up`` -> ``_resume`` -> (``_train_step`` -> ``_end_step``: ``_validate``, log, ``_save_model``,
``_save_checkpoint``)* -> ``_finish``. The configuration is a resolved ``lib.train.TrainConfig``;
call it through ``lib.train.train``.

One step: ``grad_accumulation`` batches from the sampler (``lib.sampling``), each tokenized with
the backbone's prefixes and maximum lengths, embedded by the shared encoder (queries, positives,
hard negatives), scored by :class:`lib.losses.TrainingObjective` (``objective``: InfoNCE,
distillation onto a frozen teacher's cached embeddings (``lib.distill``), or both, each term
logged); then gradient clipping, an AdamW step
and a linear warm-up/decay learning rate (``transformers.get_linear_schedule_with_warmup``).
Every ``eval_every`` steps the same loss on fixed validation batches (question ids held out with
``split_by_qid``; ``validation_batch_size`` 0 = the training batch size lowered to what those ids
allow, so that no batch size makes validation impossible) decides early stopping (``patience``
evaluations without improvement) and which model is kept as the best. Gradient accumulation averages the gradients of several contrastive
batches; it does not add negatives (the softmax of a batch only sees that batch). A large batch in
bounded memory is ``mini_batch_size``: gradient caching (``lib.gradcache``), the same gradients.

Outputs, in ``outputs/<run>/``: ``config.json`` + ``versions.json`` (resolved configuration and
package versions), ``train_log.csv`` (step, epoch, loss, loss_contrastive, loss_distill, lr,
val_loss, pairs_per_second, elapsed_s; rewritten atomically), ``checkpoints/step-NNNNNN/`` (the last ``keep_checkpoints``),
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

    result = lib.train.train(TrainConfig(backbone="tiny", steps=4, batch_size=8, run="demo"))
    # = run_training(config.resolved()); model: lib.backbones.load_model(result.model_dir)

About 570 lines, on purpose: the steps share one ``_Run`` and read best in the order they run;
what is not the loop already lives beside it (checkpoints, collator and dual encoder, gradient
caching, tracking, model cards). A next split would move the process-group helpers out.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lib.backbones import load_model
from lib.checkpoint import (CorruptCheckpointError, checkpoint_step, checkpoints, load_latest_readable_checkpoint,
                            read_checkpoint_state,
                            rng_state, save_model, set_rng_state, set_seed, write_checkpoint)
from lib.distill import teacher_targets
from lib.dual_encoder import DualEncoder, PairCollator, RankSlice, batch_loss, to_device
from lib.dropout import use_numpy_dropout
from lib.encode import autocast
from lib.gradcache import step_loss_backward
from lib.io import outputs_dir, remove_orphaned_temporaries, run_dir, write_json, write_provenance, write_text
from lib.losses import InfoNCELoss, TrainingObjective
from lib.model_card import attach_card_data, training_card_data
from lib.sampling import PairDataset, SamplingError, build_sampler, fitting_batch_size, options_for
from lib.sources import declared_sizes, load_source_groups
from lib.tracking import Tracker, open_tracker
from lib.training_data import split_by_qid

# Fields that may change between a checkpoint and its resumption (they do not change the weights
# on one machine; a different device or precision changes the rounding, not the recipe; the dropout
# masks' generator follows the device under auto and changes which masks, not their distribution).
RESUME_MAY_DIFFER = ("resume", "device", "precision", "dropout_masks", "mini_batch_size", "checkpoint_every", "keep_checkpoints",
                     "data_dir", "report_to", "keep_optimizer_state")
# fields added after checkpoints were written: a checkpoint without one was made with this value
ADDED_FIELD_DEFAULTS = {"source_weighting": "loaded"}
LOG_COLUMNS = ["step", "epoch", "loss", "loss_contrastive", "loss_distill", "lr", "val_loss", "pairs_per_second",
               "elapsed_s"]
LOSS_TERMS = ("contrastive", "distill")   # TrainingObjective.terms, logged as loss_<term>


class TrainError(RuntimeError):
    """Training cannot start or resume as configured; the message names the setting and the fix."""


@dataclass
class TrainResult:
    """Where a run put its models, and what it measured."""

    run_dir: Path
    model_dir: Path
    best_model_dir: Path
    metrics: dict[str, Any]
    log: pd.DataFrame = field(repr=False)


# --------------------------------------------------------------------------------------------
# Processes and devices


@dataclass
class _Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_processes(config) -> _Processes:
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


def trained_backbone_settings(config, backbone, step: int, kind: str) -> dict[str, Any]:
    """``backbone.json`` of a trained model: the base backbone's encoding settings, a new name."""
    settings = backbone.as_dict()
    base_name = settings["name"]
    objective = getattr(config, "objective", "contrastive")
    suffix, how = ("", "") if objective == "contrastive" else (
        "-distill" if objective == "distill" else "+distill", f", objective {objective}")
    settings.update(
        name=f"{base_name}-{config.sampler}{suffix}", source="path", path=None, hub_id=None,
        description=f"{base_name} fine-tuned with the {config.sampler} sampler{how} ({kind} model, step {step})",
        extra={**(settings.get("extra") or {}), "trained_from": base_name, "run": config.run,
               "sampler": config.sampler, "alpha": config.alpha, "objective": objective, "step": step, "kind": kind})
    return settings


def _source_groups(config, name: str) -> list:
    return load_source_groups(name, candidate_context=config.candidate_context, max_negatives=config.max_negatives,
                              data_dir=config.data_dir or None, translation_model=config.translation_model or None)


def load_training_groups(config):
    """Groups of every registered source in ``train_sources`` (``lib.sources``) -> (train, validation):
    ``split_by_qid`` of them, or, with ``validation_source``, all of them and that source's groups."""
    groups = [group for source in config.source_list() for group in _source_groups(config, source)]
    if not groups:
        raise TrainError(f"train_sources {config.train_sources!r} gave no training groups; name registered "
                         "sources (params/sources/*.yaml), e.g. 'mlqa-r' or 'mlqa-r,xquad-r'")
    if getattr(config, "validation_source", ""):
        return groups, _source_groups(config, config.validation_source)
    return split_by_qid(groups, config.validation_fraction, config.split_seed)


# --------------------------------------------------------------------------------------------
# Training: set-up, resume, steps, validation, checkpoints, finish


@dataclass
class TrainerState:
    """The counters and log of a run; a checkpoint saves them (``resume.json``'s ``trainer``)."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int | None = None
    evaluations_since_best: int = 0
    last_val_loss: float | None = None
    elapsed_s: float = 0.0
    train_s: float = 0.0
    pairs: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False


@dataclass
class _Run:
    """Everything a run's steps share: configuration, model, batches, optimizer and ``state``."""

    config: Any  # a resolved lib.train.TrainConfig
    processes: _Processes
    device: str
    path: Path
    encoder: Any
    dual_encoder: nn.Module
    loss_fn: TrainingObjective
    groups: tuple[list, list] = ((), ())
    targets: Any = None               # lib.distill.TeacherTargets when distilling
    sampler: Any = None
    batches: Iterator[dict[str, Any]] | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None
    trainable: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    state: TrainerState = field(default_factory=TrainerState)
    resumed_from: Path | None = None


def _set_up(config, groups) -> _Run:
    """Processes, seed, data, model, batches and optimizer, in this order (the order of RNG draws)."""
    processes = _start_processes(config)
    device = config.device
    if processes.world > 1 and str(device).startswith("cuda"):
        device = f"cuda:{processes.local_rank}"
        torch.cuda.set_device(device)
    set_seed(config.seed + processes.rank)
    if groups is None:
        train_groups, validation_groups = load_training_groups(config)
    else:
        train_groups, validation_groups = groups
    if not validation_groups and config.validation_fraction > 0 and groups is None:
        raise TrainError("the validation split is empty: raise validation_fraction")

    encoder = load_model(config.backbone, device=device)
    targets = _distillation_targets(config, processes, encoder, train_groups, validation_groups)
    if config.dropout_masks == "numpy":
        use_numpy_dropout(encoder)
    if config.freeze_embeddings:
        encoder[0].model.get_input_embeddings().weight.requires_grad_(False)
    encoder.train()
    dual_encoder: nn.Module = DualEncoder(encoder)
    if processes.world > 1:
        dual_encoder = nn.parallel.DistributedDataParallel(
            dual_encoder, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None,
            find_unused_parameters=True)  # the BERT pooler is computed but unused by mean/CLS pooling
    loss_fn = TrainingObjective(config.objective, InfoNCELoss(config.temperature, config.symmetric,
                                                              gather_across_devices=processes.world > 1),
                                config.distill_weight)
    run = _Run(config, processes, device, outputs_dir() / config.run, encoder, dual_encoder, loss_fn,
               groups=(train_groups, validation_groups), targets=targets)
    _set_up_batches(run)
    _set_up_optimizer(run)
    run.path = run_dir(config.run)  # only once data, model and batches passed their checks
    if processes.main:  # what saves killed by earlier runs left (a whole model each)
        for folder in (run.path, run.path / "checkpoints"):
            remove_orphaned_temporaries(folder)
    return run


def _distillation_targets(config, processes: _Processes, encoder, train_groups, validation_groups):
    """The teacher's targets of every training and validation group (``lib.distill``), or None
    when not distilling: rank 0 computes (or reads) the cache, the other processes then read it."""
    if config.objective == "contrastive":
        return None
    if processes.world > 1:
        if processes.main:
            teacher_targets(config, encoder, train_groups, validation_groups)
        torch.distributed.barrier()
    return teacher_targets(config, encoder, train_groups, validation_groups, compute=processes.main)


def _endless(loader) -> Iterator[dict[str, Any]]:
    while True:  # the sampler moves on to its next epoch when one is exhausted
        yield from loader


def _set_up_batches(run: _Run) -> None:
    """The training sampler and loader (no workers: its position = batches consumed) and the fixed
    validation batches (``split_seed``, the same for every training seed)."""
    config, processes = run.config, run.processes
    train_groups, validation_groups = run.groups
    # distillation alone scores no negatives: none are encoded
    collator = PairCollator(run.encoder.tokenizer, run.encoder.backbone,
                            config.hard_negatives and config.objective != "distill", run.targets)
    sampler_options = dict(seed=config.seed, source_temperature=config.source_temperature,
                           languages=config.language_list())
    sizes = declared_sizes(config.source_list()) if getattr(config, "source_weighting", "loaded") == "declared" else None
    try:
        run.sampler = build_sampler(config.sampler, train_groups, config.batch_size, source_sizes=sizes,
                                    **sampler_options, **options_for(config.sampler, asdict(config)))
    except SamplingError as error:
        raise TrainError(f"training batches: {error}") from None
    dataset = PairDataset(train_groups, collator.hard_negatives, config.negative_language, config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=RankSlice(run.sampler, processes.rank, processes.world),
                                         collate_fn=collator, num_workers=0, generator=torch.Generator())
    run.batches = _endless(loader)
    if not validation_groups:
        return
    validation_options = dict(alpha=0.5, **{**sampler_options, "seed": config.split_seed})
    try:
        if not config.validation_batch_size:  # what the held-out pools allow, recorded in config.json
            size = fitting_batch_size(config.validation_sampler, validation_groups, config.batch_size,
                                      processes.world, **validation_options)
            run.config = config = replace(config, validation_batch_size=size)
        validation_sampler = build_sampler(config.validation_sampler, validation_groups,
                                           config.validation_batch_size, **validation_options)
    except SamplingError as error:
        raise TrainError(
            f"validation batches ({len({g.qid for g in validation_groups})} held-out question ids): {error}. "
            "Raise validation_fraction, set validation_batch_size=0 (what the held-out ids allow), "
            "or choose validation_sampler='cross'") from None
    validation_data = PairDataset(validation_groups, collator.hard_negatives, config.negative_language,
                                  config.split_seed)
    for index, batch in enumerate(RankSlice(validation_sampler, processes.rank, processes.world)):
        if index >= config.validation_batches:
            break
        run.validation.append(collator([validation_data[pair] for pair in batch]))


def _set_up_optimizer(run: _Run) -> None:
    """AdamW (no weight decay on biases and LayerNorm), linear warm-up/decay, fp16 grad scaler."""
    config = run.config
    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")
    run.trainable = [(n, p) for n, p in run.encoder.named_parameters() if p.requires_grad]
    run.optimizer = torch.optim.AdamW([
        {"params": [p for n, p in run.trainable if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in run.trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ], lr=config.learning_rate)
    warmup_steps = int(round(config.warmup_ratio * config.steps))
    run.scheduler = get_linear_schedule_with_warmup(run.optimizer, warmup_steps, config.steps)
    run.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None


def _resume(run: _Run) -> None:
    """Continue from the run's latest checkpoint (``resume=True``), or clear what an earlier run
    of this name left; then write ``config.json`` and ``versions.json``."""
    config, processes, path = run.config, run.processes, run.path
    existing = checkpoints(path)
    saved = None
    if existing and config.resume and _is_stripped(existing[-1]):  # finished, weights in model/
        saved = read_checkpoint_state(existing[-1])
        _check_same_config(saved["config"], asdict(config), existing[-1], _field_defaults(config))
        run.resumed_from = existing[-1]
    elif existing and config.resume:  # a damaged newest checkpoint: reported, the one before it is used
        try:
            run.resumed_from, saved = load_latest_readable_checkpoint(
                existing, run.encoder, run.optimizer, lambda state, where: _check_same_config(
                    state["config"], asdict(config), where, _field_defaults(config)))
        except CorruptCheckpointError as error:
            raise TrainError(f"{error}; delete {path / 'checkpoints'} or set resume=False to start over") from None
    if saved is not None:
        run.scheduler.load_state_dict(saved["scheduler"])
        if run.scaler is not None and saved.get("scaler"):
            run.scaler.load_state_dict(saved["scaler"])
        run.sampler.load_state_dict(saved["sampler"])
        run.state = TrainerState(**saved["trainer"])
        rng_states = saved["rng"]
        set_rng_state(rng_states[processes.rank] if processes.rank < len(rng_states) else rng_states[0])
    elif processes.main:  # a fresh start: nothing of an earlier run of this name may survive
        for stale in ("checkpoints", "model", "model-best"):
            shutil.rmtree(path / stale, ignore_errors=True)
        (path / "metrics.json").unlink(missing_ok=True)
    if processes.main:
        write_provenance(path, asdict(config))


def _check_same_config(saved: dict[str, Any], current: dict[str, Any], where: Path,
                       defaults: dict[str, Any] | None = None) -> None:
    """Refuse a checkpoint of another configuration; a field the checkpoint predates counts as its
    ``defaults`` value (an older checkpoint without ``objective`` was contrastive), or as no
    difference at an empty default (``sampler_options``)."""
    defaults = defaults or {}
    different = {key: (saved.get(key, defaults.get(key)), value) for key, value in current.items()
                 if key not in RESUME_MAY_DIFFER and (key in saved or key in defaults or value not in ("", None))
                 and saved.get(key, defaults.get(key)) != value}
    if different:
        detail = "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in different.items())
        raise TrainError(
            f"cannot resume from {where}: it was trained with another configuration ({detail}). "
            "Choose a new run name (run=...), or resume=False to start this run over")


def _field_defaults(config) -> dict[str, Any]:
    """What a checkpoint that predates a field was made with: the field's default, or the value
    ``ADDED_FIELD_DEFAULTS`` records where the default changed when the field came."""
    return {**{f.name: f.default for f in fields(config) if f.default is not MISSING}, **ADDED_FIELD_DEFAULTS}


def _check_finite(run: _Run, what: str, value: float | None, step: int) -> None:
    """Stop a diverged run at once, before its weights change or anything is saved."""
    if value is None or math.isfinite(value):
        return
    config, kept = run.config, checkpoints(run.path)
    reduced = config.precision != "fp32"
    settings = (f"learning_rate {config.learning_rate:g}, temperature {config.temperature:g}, precision "
                f"{config.precision}, warmup_ratio {config.warmup_ratio:g}, max_grad_norm {config.max_grad_norm:g}")
    raise TrainError(
        f"training diverged at step {step}: the {what} is {value} ({settings}); the settings that can cause it: "
        "a learning rate too high, a temperature too low (scale = 1 / temperature), no warm-up or gradient "
        "clipping" + (", an overflow in reduced precision" if reduced else "") + ". Nothing of this step was saved; "
        f"latest checkpoint (finite weights): {kept[-1] if kept else 'none'}. Lower learning_rate, raise "
        "temperature" + (" or use precision=fp32" if reduced else "") + " and start over (a new run name or resume=False)")


@dataclass
class _Step:
    """What one optimizer step measured."""

    loss: float
    learning_rate: float
    pairs: int
    seconds: float
    terms: dict[str, float] = field(default_factory=dict)   # loss_contrastive, loss_distill


def _train_step(run: _Run) -> _Step:
    """``grad_accumulation`` batches forward and backward, clipping, one AdamW and scheduler step."""
    config, processes, scaler = run.config, run.processes, run.scaler
    started = time.perf_counter()
    run.optimizer.zero_grad(set_to_none=True)
    step_loss, step_pairs, terms = 0.0, 0, {}
    for micro in range(config.grad_accumulation):
        batch = to_device(next(run.batches), run.device)
        last = micro == config.grad_accumulation - 1
        sync = run.dual_encoder.no_sync() if processes.world > 1 and not last else contextlib.nullcontext()
        with sync:  # mini_batch_size: gradient caching (lib.gradcache), else one forward of the batch
            loss = step_loss_backward(
                run.dual_encoder, run.loss_fn, batch, config.mini_batch_size,
                precision=lambda: autocast(run.device, config.precision),
                scale=lambda loss: scaler.scale(loss / config.grad_accumulation) if scaler is not None
                else loss / config.grad_accumulation)
        step_loss += loss.item() / config.grad_accumulation
        for name, value in run.loss_fn.terms.items():
            terms[name] = terms.get(name, 0.0) + value.item() / config.grad_accumulation
        step_pairs += batch["pairs"] * processes.world
    if processes.world > 1:  # log the loss of the whole batch, not of this process's queries
        values = torch.tensor([step_loss, *terms.values()], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(values)
        step_loss, *rest = (values / processes.world).tolist()
        terms = dict(zip(terms, rest))
    _check_finite(run, "loss", step_loss, run.state.step + 1)
    if scaler is not None:
        scaler.unscale_(run.optimizer)
    # max_norm inf: the norm without clipping; fp16's grad scaler skips steps with inf gradients itself
    norm = torch.nn.utils.clip_grad_norm_([p for _, p in run.trainable], config.max_grad_norm or math.inf)
    if scaler is None:
        _check_finite(run, "gradient norm", float(norm), run.state.step + 1)
    learning_rate = run.scheduler.get_last_lr()[0]
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    return _Step(step_loss, learning_rate, step_pairs, time.perf_counter() - started, terms)


def _validation_loss(run: _Run) -> float | None:
    """Mean loss over the fixed validation batches (averaged over processes), in eval mode."""
    if not run.validation:
        return None
    run.encoder.eval()
    plain = run.dual_encoder.module if run.processes.world > 1 else run.dual_encoder
    total = 0.0
    with torch.no_grad():
        for batch in run.validation:
            with autocast(run.device, run.config.precision):
                total += batch_loss(plain, run.loss_fn, to_device(batch, run.device)).item()
    value = torch.tensor(total / len(run.validation), dtype=torch.float64)
    if run.processes.world > 1:
        value = value.to(run.device)
        torch.distributed.all_reduce(value)
        value = value / run.processes.world
    run.encoder.train()
    return float(value)


def _validate(run: _Run) -> float | None:
    """At evaluation steps: the validation loss; a new best is saved as ``model-best``, and
    ``patience`` evaluations without improvement stop the run."""
    config, state = run.config, run.state
    if not ((config.eval_every and state.step % config.eval_every == 0) or state.step == config.steps):
        return None
    val_loss = _validation_loss(run)
    if val_loss is None:
        return None
    _check_finite(run, "validation loss", val_loss, state.step)
    state.last_val_loss = val_loss
    if val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step, state.evaluations_since_best = val_loss, state.step, 0
        _save_model(run, "best")
    else:
        state.evaluations_since_best += 1
        if config.patience and state.evaluations_since_best >= config.patience:
            state.stopped_early = True
    return val_loss


def _write_log(run: _Run) -> pd.DataFrame:
    log = pd.DataFrame(run.state.log, columns=LOG_COLUMNS)
    if run.processes.main:
        write_text(run.path / "train_log.csv", log.to_csv(index=False))
    return log


def _save_model(run: _Run, kind: str) -> Path:
    target = run.path / ("model" if kind == "final" else "model-best")
    for name, parameter in run.trainable:  # never write NaN weights
        if not torch.isfinite(parameter).all():
            _check_finite(run, f"weight {name}", math.nan, run.state.step)
    if run.processes.main:
        card = training_card_data(run.config, run.encoder.backbone, len(run.groups[0]), kind, run.state.step)
        attach_card_data(run.encoder, card, run.config, run.encoder.backbone.hub_id)
        save_model(run.encoder, target, trained_backbone_settings(run.config, run.encoder.backbone,
                                                                  run.state.step, kind), model_card=True)
    return target


def _save_checkpoint(run: _Run) -> None:
    """``checkpoints/step-NNNNNN`` (RNG states of every process), keeping the last ``keep_checkpoints``."""
    rng = [rng_state()]
    if run.processes.world > 1:
        rng = [None] * run.processes.world
        torch.distributed.all_gather_object(rng, rng_state())
    if not run.processes.main:
        return
    state, sampler, scaler = asdict(run.state), run.sampler, run.scaler
    write_checkpoint(run.path / "checkpoints" / f"step-{run.state.step:06d}", run.encoder, run.optimizer,
                     {"config": asdict(run.config), "trainer": state, "scheduler": run.scheduler.state_dict(),
                      "scaler": scaler.state_dict() if scaler is not None else None,
                      "sampler": sampler.state_dict(), "rng": rng},
                     summary={k: v for k, v in state.items() if k != "log"} | {"sampler": sampler.state_dict()})
    for old in checkpoints(run.path)[:-run.config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _end_step(run: _Run, step: _Step, started: float) -> None:
    """Count the step, validate, log, and save the final model and checkpoints when due."""
    config, state = run.config, run.state
    state.step += 1
    state.train_s += step.seconds
    state.pairs += step.pairs
    val_loss = _validate(run)
    state.elapsed_s = time.perf_counter() - started
    state.log.append({"step": state.step, "epoch": run.sampler.epoch, "loss": step.loss,
                      **{f"loss_{name}": step.terms.get(name) for name in LOSS_TERMS}, "lr": step.learning_rate,
                      "val_loss": val_loss, "pairs_per_second": step.pairs / step.seconds,
                      "elapsed_s": state.elapsed_s})
    _write_log(run)
    state.finished = state.stopped_early or state.step >= config.steps
    if state.finished:
        _save_model(run, "final")
    if state.finished or (config.checkpoint_every and state.step % config.checkpoint_every == 0):
        _save_checkpoint(run)


def _finish(run: _Run) -> TrainResult:
    """Make sure ``model/`` and ``model-best/`` exist, write the log and ``metrics.json``."""
    config, state, path, device = run.config, run.state, run.path, run.device
    model_dir = path / "model"
    if not (model_dir / "backbone.json").is_file():
        _save_model(run, "final")  # a run resumed after its final checkpoint but before its model was written
    best_dir = path / "model-best"
    if not (best_dir / "backbone.json").is_file() and run.processes.main:
        shutil.copytree(model_dir, best_dir, dirs_exist_ok=True)  # no validation: best = final
    log = _write_log(run)
    train_groups, validation_groups = run.groups
    metrics = {
        "run": config.run, "steps": state.step, "stopped_early": state.stopped_early,
        "final_val_loss": state.last_val_loss,
        "best_val_loss": None if math.isinf(state.best_val_loss) else state.best_val_loss,
        "best_step": state.best_step, "final_train_loss": float(log.loss.iloc[-1]) if len(log) else None,
        "wall_time_s": state.elapsed_s, "train_time_s": state.train_s, "pairs": state.pairs,
        "pairs_per_second": state.pairs / state.train_s if state.train_s else None,
        "peak_memory_mb": peak_memory_mb(device), "peak_memory_kind": "cuda_allocated"
        if str(device).startswith("cuda") else "process_max_rss",
        "device": str(device), "processes": run.processes.world,
        "train_groups": len(train_groups), "validation_groups": len(validation_groups),
        "validation_batches": len(run.validation),
        "trainable_parameters": sum(p.numel() for _, p in run.trainable),
        "frozen_parameters": sum(p.numel() for p in run.encoder.parameters() if not p.requires_grad),
        "resumed_from_step": checkpoint_step(run.resumed_from) if run.resumed_from else None,
        "objective": config.objective,
        "distill_groups_without_source": run.targets.without_source if run.targets is not None else None,
        "model_dir": str(model_dir.relative_to(path)), "best_model_dir": str(best_dir.relative_to(path)),
    }
    if run.processes.main:
        write_json(path / "metrics.json", metrics)
        if not getattr(config, "keep_optimizer_state", True):
            strip_finished_checkpoints(path)
    return TrainResult(path, model_dir, best_dir, metrics, log)


STRIPPED_FILES = ("model.safetensors", "optimizer.json", "optimizer.safetensors")   # what a finished run drops


def _is_stripped(checkpoint: Path) -> bool:
    """A finished run's last checkpoint without weights and optimizer (``strip_finished_checkpoints``)."""
    return (checkpoint / "resume.json").is_file() and not any((checkpoint / name).exists() for name in STRIPPED_FILES)


def strip_finished_checkpoints(path: Path) -> None:
    """A finished run keeps ``model/`` and ``model-best/`` (weights only) and, of its checkpoints, only
    the last one's resume state and ``state.json`` (trainer log, sampler, config: a rerun of the run
    finds it finished): the optimizer state (twice the weights in AdamW) and the checkpoint weights
    go (XLM-R base: about 6.7 GB per run). ``keep_optimizer_state=true`` keeps everything."""
    kept = checkpoints(path)
    for old in kept[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    for name in STRIPPED_FILES:
        if kept:
            (kept[-1] / name).unlink(missing_ok=True)


def run_training(config, groups=None, progress: bool = True,
                 on_step_end: Callable[[int], None] | None = None) -> TrainResult:
    """Train as ``config`` (a resolved ``lib.train.TrainConfig``) says; see ``lib.train.train``."""
    run = _set_up(config, groups)
    _resume(run)
    state, steps = run.state, run.config.steps
    bar = None
    if progress and run.processes.main and not state.finished:
        bar = tqdm(total=steps, initial=state.step, desc=f"train {run.config.run}", unit="step")
    started = time.perf_counter() - state.elapsed_s
    tracker = open_tracker(run.config.report_to, run.path, asdict(run.config), state.step) if (
        run.processes.main and not state.finished) else Tracker()
    try:
        while not state.finished and state.step < steps:
            step = _train_step(run)
            _end_step(run, step, started)
            tracker.log(state.step, state.log[-1])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step.loss:.3f}", val=f"{state.last_val_loss or float('nan'):.3f}")
            if on_step_end is not None:
                on_step_end(state.step)
    finally:
        tracker.close()  # what was logged reaches the event file even when the run is interrupted
    if bar is not None:
        bar.close()
    return _finish(run)
