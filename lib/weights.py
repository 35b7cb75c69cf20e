"""Systems made in weight space: WiSE-FT interpolation and uniform model soups.

Models of one architecture (the same backbone, fine-tuned or not) are combined parameter by
parameter, ``theta = sum_i c_i theta_i`` with ``sum_i c_i = 1``:

| system   | coefficients                                  | reference                                 |
|----------|-----------------------------------------------|-------------------------------------------|
| WiSE-FT  | ``(1 - lam) * zero_shot + lam * fine_tuned``  | Wortsman et al., arXiv 2109.01903          |
| soup     | ``(1/N) * sum_i theta_i`` (mono + cross, ...)  | Wortsman et al., arXiv 2203.05482 (uniform) |

Rules: every model must have the same keys and shapes (else an error names the first
mismatch); a tensor equal in every model (a frozen word-embedding table, position ids) is copied
as it is, so it stays bit-identical; non-floating tensors (integer buffers) are copied from the
first model, never averaged. The sum is taken in float64 and cast back, so ``lam = 0`` gives the
zero-shot weights and ``lam = 1`` the fine-tuned weights exactly. The result is written by
``lib.checkpoint.save_model`` as an ordinary model folder (``SentenceTransformer(path)`` loads it,
``lib.backbones.load_model(path)`` too) whose ``backbone.json`` records what was merged.

    wise_ft("me5-small-q4", "outputs/train-mono-s0/model", lam=0.5, path="outputs/wise-mono-s0-0.5/model")
    soup(["outputs/train-mono-s0/model", "outputs/train-cross-s0/model"], path="outputs/soup-s0/model")
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from lib.backbones import load_model
from lib.checkpoint import save_model

State = Mapping[str, torch.Tensor]
ENCODING_SETTINGS = ("pooling", "normalize", "query_prefix", "passage_prefix", "max_query_length",
                     "max_passage_length")


class WeightsError(ValueError):
    """Models cannot be combined (different architecture or encoding settings, bad coefficients)."""


def check_same_architecture(states: Sequence[State], names: Sequence[str] | None = None) -> None:
    """Raise unless every state dict has the keys and shapes of the first."""
    names = list(names) if names is not None else [f"model {i}" for i in range(len(states))]
    if len(states) < 1:
        raise WeightsError("no model to combine")
    first = states[0]
    for name, state in zip(names[1:], states[1:]):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            raise WeightsError(f"{name} and {names[0]} differ in parameters (missing {missing[:3]}, extra "
                               f"{extra[:3]}): combine only models of the same backbone")
        for key, tensor in first.items():
            if tuple(state[key].shape) != tuple(tensor.shape) or state[key].dtype != tensor.dtype:
                raise WeightsError(f"{name}: {key} is {tuple(state[key].shape)} {state[key].dtype}, "
                                   f"{names[0]} has {tuple(tensor.shape)} {tensor.dtype}: not the same architecture")


def combine_states(states: Sequence[State], coefficients: Sequence[float],
                   names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``sum_i c_i * state_i`` per floating tensor; equal tensors and integer buffers copied from the first."""
    coefficients = [float(c) for c in coefficients]
    if len(coefficients) != len(states):
        raise WeightsError(f"{len(coefficients)} coefficients for {len(states)} models")
    if any(c < 0 for c in coefficients) or abs(sum(coefficients) - 1) > 1e-9:
        raise WeightsError(f"coefficients {coefficients} must be non-negative and sum to 1 (a convex combination)")
    check_same_architecture(states, names)
    out = {}
    for key, tensor in states[0].items():
        tensors = [state[key].detach().cpu() for state in states]
        if not tensor.is_floating_point() or all(torch.equal(tensors[0], t) for t in tensors[1:]):
            out[key] = tensors[0].clone()
            continue
        total = sum(c * t.double() for c, t in zip(coefficients, tensors))
        out[key] = total.to(tensor.dtype)
    return out


def interpolate_states(zero_shot: State, fine_tuned: State, lam: float) -> dict[str, torch.Tensor]:
    """WiSE-FT: ``(1 - lam) * zero_shot + lam * fine_tuned``, ``0 <= lam <= 1``."""
    if not 0 <= lam <= 1:
        raise WeightsError(f"WiSE-FT lambda {lam} outside [0, 1]: 0 = zero-shot, 1 = fine-tuned")
    return combine_states([zero_shot, fine_tuned], [1 - lam, lam], ["zero_shot", "fine_tuned"])


def uniform_soup_states(states: Sequence[State], names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Uniform soup: the mean of N state dicts."""
    return combine_states(states, [1 / len(states)] * len(states), names)


def _check_same_encoding(models, names: Sequence[str]) -> None:
    first = models[0].backbone.as_dict()
    for name, model in zip(names[1:], models[1:]):
        settings = model.backbone.as_dict()
        different = {k: (first[k], settings[k]) for k in ENCODING_SETTINGS if first[k] != settings[k]}
        if different:
            raise WeightsError(f"{name} encodes differently from {names[0]}: {different}; combine models of "
                               "one backbone (same pooling, prefixes and lengths)")


def _load(model):
    """A model as given (a loaded ``lib.backbones.load_model`` result) or loaded from a name or folder."""
    if hasattr(model, "backbone") and hasattr(model, "state_dict"):
        return model
    return load_model(str(model), device="cpu")


def model_label(model) -> str:
    """How a model is named in provenance: its registry name or folder as given, else its backbone."""
    if hasattr(model, "backbone"):
        return model.backbone.path or model.backbone.name
    return str(model)


def merge_models(models: Sequence, coefficients: Sequence[float], path: str | os.PathLike,
                 name: str, description: str, merge: dict) -> Path:
    """Combine ``models`` (registry names, folders or loaded models) and write the result to ``path``.

    The written folder takes the encoding settings of the last model (the fine-tuned one for
    WiSE-FT) and records ``merge`` (method, inputs, coefficients) in ``backbone.json``'s ``extra``.
    Models passed loaded are left unchanged.
    """
    loaded = [_load(m) for m in models]
    names = [model_label(m) for m in models]
    _check_same_encoding(loaded, names)
    merged = combine_states([m.state_dict() for m in loaded], coefficients, names)
    target = copy.deepcopy(loaded[-1])
    target.load_state_dict(merged, strict=True)
    settings = target.backbone.as_dict()
    settings.update(name=name, source="path", path=None, hub_id=None, description=description,
                    extra={**(settings.get("extra") or {}),
                           "merge": {**merge, "models": names, "backbones": [m.backbone.name for m in loaded],
                                     "coefficients": [float(c) for c in coefficients]}})
    return save_model(target, path, settings)


def wise_ft(zero_shot, fine_tuned, lam: float, path: str | os.PathLike, name: str | None = None) -> Path:
    """Write the WiSE-FT model ``theta = (1 - lam) * theta_zero_shot + lam * theta_fine_tuned`` to ``path``.

    Args:
        zero_shot: the untrained backbone (registry name, model folder or loaded model).
        fine_tuned: a model fine-tuned from it (same architecture and encoding settings).
        lam: weight of the fine-tuned model in [0, 1]; 0 = zero-shot, 1 = fine-tuned.
        path: the model folder to write (``lib.checkpoint.save_model``'s layout).
        name: the written model's name; default the fine-tuned model's + ``-wise<lam>``
            (``me5-small-q4-mono-wise0.5``).

    Returns:
        ``path``, a model folder that ``lib.encode.load_model`` and sentence-transformers load.

    References:
        Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022 (WiSE-FT).

    Example:
        >>> wise_ft("me5-small-q4", "outputs/train-me5-small-q4-hybrid-a0.5-mlqa-r-s0/model", 0.5, "outputs/wise/model")
    """
    if not 0 <= lam <= 1:
        raise WeightsError(f"WiSE-FT lambda {lam} outside [0, 1]: 0 = zero-shot, 1 = fine-tuned")
    fine_tuned = _load(fine_tuned)
    name = name or f"{fine_tuned.backbone.name}-wise{lam:g}"
    return merge_models([zero_shot, fine_tuned], [1 - lam, lam], path, name,
                        f"WiSE-FT: (1 - {lam:g}) * {model_label(zero_shot)} + {lam:g} * {model_label(fine_tuned)}",
                        {"method": "wise-ft", "lambda": float(lam)})


def soup(models: Sequence, path: str | os.PathLike, name: str = "soup") -> Path:
    """Write the uniform soup ``theta = mean_i theta_i`` of ``models`` to ``path``.

    Args:
        models: registry names, model folders or loaded models, all fine-tuned from one backbone.
        path: the model folder to write.
        name: the written model's name.

    Returns:
        ``path``, a model folder like any trained model's.

    References:
        Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves
        accuracy without increasing inference time", ICML 2022.

    Example:
        >>> soup(["outputs/train-...-mono-mlqa-r-s0/model", "outputs/train-...-cross-mlqa-r-s0/model"], "outputs/soup/model")
    """
    if len(models) < 1:
        raise WeightsError("a soup needs at least one model")
    return merge_models(list(models), [1 / len(models)] * len(models), path, name,
                        f"uniform soup of {len(models)} models: {', '.join(map(model_label, models))}",
                        {"method": "uniform-soup"})
