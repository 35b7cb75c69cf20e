"""Training state on disk: seeds and RNG states, resumable checkpoints, saved model folders.

A checkpoint ``<run>/checkpoints/step-NNNNNN/`` holds what a resumed run needs to continue bit
for bit (on the same machine): ``model.pt`` (the trainable weights only; frozen ones come
from the backbone), ``optimizer.pt``, and ``state.pt`` with the configuration, the trainer's
counters and log, the scheduler, the (fp16) grad scaler, the sampler's position and the RNG
states of Python, NumPy and torch (CPU and CUDA) of every process; ``state.json`` repeats the
counters for people. A folder appears only once fully written (``lib.io.atomic_path``).

A saved model is a sentence-transformers folder plus ``backbone.json`` (``lib.backbones``):

    write_checkpoint(run_path / "checkpoints" / "step-000010", encoder, optimizer, {...})
    state = read_checkpoint_state(checkpoints(run_path)[-1])
    load_checkpoint_weights(checkpoints(run_path)[-1], encoder, optimizer)
    save_model(encoder, run_path / "model", settings)
"""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

from lib.backbones import Backbone, apply_encoding_settings
from lib.io import atomic_path, write_json


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model it should be loaded into."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file cannot be read (truncated by a full disk, damaged by a copy)."""


def _load(checkpoint: Path, name: str, weights_only: bool = True) -> Any:
    """``torch.load`` of one file of a checkpoint; a damaged file raises CorruptCheckpointError naming it."""
    path = checkpoint / name
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        raise CorruptCheckpointError(f"checkpoint file {path} is unreadable ({type(error).__name__}: "
                                     f"{str(error).splitlines()[0][:200] if str(error) else 'truncated'})") from None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy and torch (CPU, and every GPU when there is one)."""
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


def trainable_state(encoder) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that require gradients (frozen ones are the backbone's)."""
    return {name: p.detach().cpu().clone() for name, p in encoder.named_parameters() if p.requires_grad}


def load_trainable_state(encoder, state: dict[str, torch.Tensor]) -> None:
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        raise CheckpointError(
            f"checkpoint holds parameters {sorted(set(state) ^ trainable)[:5]}... that do not match the "
            "trainable parameters of this model (another backbone or freeze setting)")
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name in state:
                parameter.copy_(state[name])


def checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (folders appear only once fully written)."""
    folder = run_path / "checkpoints"
    found = [p for p in folder.glob("step-*") if p.is_dir() and re.fullmatch(r"step-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step of a checkpoint folder ``step-NNNNNN``."""
    return int(checkpoint.name.split("-")[1])


def write_checkpoint(target: Path, encoder, optimizer, state: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically: trainable weights, optimizer, ``state`` (``state.pt``:
    config, trainer, scheduler, scaler, sampler, rng) and ``summary`` (``state.json``)."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        torch.save(trainable_state(encoder), tmp / "model.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(state, tmp / "state.pt")
        write_json(tmp / "state.json", summary)
    return target


def read_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``state.pt`` (config, trainer, scheduler, scaler, sampler, rng)."""
    return _load(checkpoint, "state.pt", weights_only=False)


def load_checkpoint_weights(checkpoint: Path, encoder, optimizer) -> None:
    """Load a checkpoint's trainable weights and optimizer state into ``encoder`` and ``optimizer``."""
    load_trainable_state(encoder, _load(checkpoint, "model.pt"))
    optimizer.load_state_dict(_load(checkpoint, "optimizer.pt"))


def load_latest_readable_checkpoint(existing: list[Path], encoder, optimizer,
                                    accept: Callable[[dict[str, Any], Path], None]) -> tuple[Path, dict[str, Any]]:
    """The newest of ``existing`` whose files are readable, its ``state.pt`` checked by
    ``accept(state, path)`` (which raises to refuse) and its weights loaded into ``encoder`` and
    ``optimizer``. A damaged checkpoint is reported on stderr by path and the one before it is
    tried; CorruptCheckpointError when none is readable."""
    for checkpoint in reversed(existing):
        try:
            state = read_checkpoint_state(checkpoint)
            accept(state, checkpoint)
            load_checkpoint_weights(checkpoint, encoder, optimizer)
        except CorruptCheckpointError as error:
            print(f"warning: {error}; resuming from the checkpoint before it", file=sys.stderr, flush=True)
            continue
        return checkpoint, state
    raise CorruptCheckpointError(f"no checkpoint of {existing[0].parent} is readable "
                                 f"({', '.join(p.name for p in existing)})")


def save_model(encoder, path: str | os.PathLike, settings: dict[str, Any], model_card: bool = False) -> Path:
    """Write a SentenceTransformer folder (weights as ``model.safetensors``) plus ``backbone.json``,
    atomically; ``model_card``: with sentence-transformers' ``README.md`` rendered from
    ``encoder.model_card_data`` (``lib.model_card``).

    The folder carries the backbone's encoding (``lib.backbones.apply_encoding_settings``):
    prompts ``query`` / ``document`` / ``passage`` and the query and passage lengths, so that
    ``SentenceTransformer(path).encode_query`` / ``encode_document`` give ``lib.encode``'s embeddings."""
    path = Path(path)
    known = {k: v for k, v in settings.items() if k in Backbone.__dataclass_fields__}
    apply_encoding_settings(encoder, Backbone(**known))
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Writing model shards" bar at every save
    try:
        with atomic_path(path) as tmp:
            encoder.save(str(tmp), model_name=settings["name"], create_model_card=model_card)
            write_json(tmp / "backbone.json", settings)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return path
