"""Training state on disk: seeds and RNG states, resumable checkpoints, saved model folders.

A checkpoint ``<run>/checkpoints/step-NNNNNN/`` holds what a resumed run needs to continue bit
for bit (on the same machine), in files that cannot run code when read (no pickle):
``model.safetensors`` (the trainable weights only; frozen ones come from the backbone),
``optimizer.json`` + ``optimizer.safetensors``, and ``resume.json`` + ``resume.safetensors``
with the configuration, the trainer's counters and log, the scheduler, the (fp16) grad scaler,
the sampler's position and the RNG states of Python, NumPy and torch (CPU and CUDA) of every
process; ``state.json`` repeats the counters for people. Each ``.json`` holds the state as a
tree of JSON values in which tensors and arrays are references into its ``.safetensors`` file,
and tuples, non-finite floats and non-text keys are tagged (:func:`to_safe_tree`). A folder
appears only once fully written (``lib.io.atomic_path``). A checkpoint of the old pickle
format (``state.pt``) is refused, never unpickled (:class:`UnsafeCheckpointError`).

A saved model is a sentence-transformers folder plus ``backbone.json`` (``lib.backbones``):

    write_checkpoint(run_path / "checkpoints" / "step-000010", encoder, optimizer, {...})
    state = read_checkpoint_state(checkpoints(run_path)[-1])
    load_checkpoint_weights(checkpoints(run_path)[-1], encoder, optimizer)
    save_model(encoder, run_path / "model", settings)
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.utils import logging as transformers_logging

from lib.backbones import Backbone, apply_encoding_settings
from lib.io import atomic_path, write_json, write_text

FORMAT = "hbt-checkpoint/2"
WEIGHTS_FILE = "model.safetensors"
OLD_FORMAT_FILES = ("state.pt", "model.pt", "optimizer.pt")   # pickles: never read


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model it should be loaded into."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file cannot be read (truncated by a full disk, damaged by a copy)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint in the old pickle format: unpickling it could run any code, so it is not read."""


# --------------------------------------------------------------------------------------------
# A state as JSON + safetensors: nothing in it can run code when read


def to_safe_tree(value: Any, tensors: dict[str, torch.Tensor], path: str = "state") -> Any:
    """``value`` as JSON values; each tensor or numpy array goes into ``tensors`` under a new key
    and is replaced by a reference; tuples, non-finite floats, bytes, numpy scalars and dicts
    whose keys are not plain text are tagged ``{"__type__": ...}`` so that they come back as they
    were. Anything else (a function, an object) is refused with a TypeError naming ``path``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__type__": "float", "value": repr(value)}
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"__type__": "tensor", "key": key}
    if isinstance(value, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.frombuffer(bytearray(np.ascontiguousarray(value).tobytes()), dtype=torch.uint8)
        return {"__type__": "ndarray", "key": key, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return {"__type__": "numpy", "dtype": value.dtype.str, "value": to_safe_tree(value.item(), tensors, path)}
    if isinstance(value, bytes):
        return {"__type__": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        items = [to_safe_tree(item, tensors, f"{path}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else {"__type__": "tuple", "items": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and "__type__" not in value:
            return {k: to_safe_tree(v, tensors, f"{path}.{k}") for k, v in value.items()}
        return {"__type__": "dict", "items": [[to_safe_tree(k, tensors, path), to_safe_tree(v, tensors, f"{path}.{k}")]
                                              for k, v in value.items()]}
    raise TypeError(f"checkpoint {path} is a {type(value).__name__}, which a checkpoint cannot hold (JSON values, "
                    "tuples, bytes, tensors and numpy arrays only); give it a state_dict of those")


def from_safe_tree(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`to_safe_tree`."""
    if isinstance(value, list):
        return [from_safe_tree(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__type__")
    if kind is None:
        return {k: from_safe_tree(v, tensors) for k, v in value.items()}
    if kind == "tensor":
        return tensors[value["key"]]
    if kind == "ndarray":
        data = tensors[value["key"]].numpy().tobytes()
        return np.frombuffer(data, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if kind == "numpy":
        return np.dtype(value["dtype"]).type(from_safe_tree(value["value"], tensors))
    if kind == "float":
        return float(value["value"])
    if kind == "bytes":
        return base64.b64decode(value["base64"])
    if kind == "tuple":
        return tuple(from_safe_tree(item, tensors) for item in value["items"])
    if kind == "dict":
        return {from_safe_tree(k, tensors): from_safe_tree(v, tensors) for k, v in value["items"]}
    raise ValueError(f"unknown tag {kind!r}")


def save_tree(folder: Path, name: str, value: Any) -> None:
    """``<name>.json`` (the tree) and ``<name>.safetensors`` (its tensors) in ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    tree = to_safe_tree(value, tensors, name)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    write_text(folder / f"{name}.json", json.dumps({"format": FORMAT, "tree": tree}, allow_nan=False) + "\n")


def _unreadable(path: Path, error: BaseException) -> CorruptCheckpointError:
    detail = str(error).splitlines()[0][:200] if str(error) else "truncated"
    return CorruptCheckpointError(f"checkpoint file {path} is unreadable ({type(error).__name__}: {detail})")


def load_tree(folder: Path, name: str) -> Any:
    """What :func:`save_tree` wrote; a damaged file raises CorruptCheckpointError naming it."""
    path = folder / f"{name}.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        tree = document["tree"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _unreadable(path, error) from None
    tensors = _load_tensors(folder / f"{name}.safetensors")
    try:
        return from_safe_tree(tree, tensors)
    except (KeyError, ValueError, TypeError) as error:
        raise _unreadable(path, error) from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError, ValueError, RuntimeError) as error:
        raise _unreadable(path, error) from None


def check_safe_format(checkpoint: Path) -> None:
    """Refuse a checkpoint of the old pickle format (``state.pt``): reading it could run code."""
    if (checkpoint / "resume.json").is_file():
        return
    old = [name for name in OLD_FORMAT_FILES if (checkpoint / name).is_file()]
    if old:
        raise UnsafeCheckpointError(
            f"checkpoint {checkpoint} is in the old pickle format ({', '.join(old)}), which can run code when "
            f"loaded and is not read; start the run over with resume=False (or delete {checkpoint.parent})")


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
    """Write a checkpoint folder atomically: trainable weights (``model.safetensors``), optimizer,
    ``state`` (``resume``: config, trainer, scheduler, scaler, sampler, rng) and ``summary``
    (``state.json``)."""
    with atomic_path(target) as tmp:
        tmp.mkdir()
        save_file(trainable_state(encoder), str(tmp / WEIGHTS_FILE))
        save_tree(tmp, "optimizer", optimizer.state_dict())
        save_tree(tmp, "resume", state)
        write_json(tmp / "state.json", summary)
    return target


def read_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's resume state (config, trainer, scheduler, scaler, sampler, rng); an old
    pickle checkpoint raises UnsafeCheckpointError without being read."""
    check_safe_format(checkpoint)
    return load_tree(checkpoint, "resume")


def load_checkpoint_weights(checkpoint: Path, encoder, optimizer) -> None:
    """Load a checkpoint's trainable weights and optimizer state into ``encoder`` and ``optimizer``."""
    check_safe_format(checkpoint)
    load_trainable_state(encoder, _load_tensors(checkpoint / WEIGHTS_FILE))
    optimizer.load_state_dict(load_tree(checkpoint, "optimizer"))


def load_latest_readable_checkpoint(existing: list[Path], encoder, optimizer,
                                    accept: Callable[[dict[str, Any], Path], None]) -> tuple[Path, dict[str, Any]]:
    """The newest of ``existing`` whose files are readable, its resume state checked by
    ``accept(state, path)`` (which raises to refuse) and its weights loaded into ``encoder`` and
    ``optimizer``. A damaged checkpoint is reported on stderr by path and the one before it is
    tried; CorruptCheckpointError when none is readable; UnsafeCheckpointError (not read) for
    one of the old pickle format."""
    for checkpoint in reversed(existing):
        check_safe_format(checkpoint)
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
