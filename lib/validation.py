"""Parameters checked before any work: values coerced to their declared types, ranges, finite numbers.

Every entry point (``lib.train.TrainConfig``, ``lib.evaluate.run_evaluation``, grid files,
papermill parameters) passes what a person typed through here before data or a model is loaded
and before a folder is created. YAML reads ``1e-4`` as the string ``"1e-4"`` (YAML 1.1 wants a dot
in a float); :func:`coerce` turns it into the float the field declares, and refuses what cannot be
one with a message naming the parameter, what was expected and the fix.

    coerce("learning_rate", "1e-4", float)        # 0.0001
    coerce_fields(config)                         # every field of a dataclass, in place
    check_range("alpha", 1.5, low=0, high=1)      # ParameterError: alpha 1.5: expected ... in [0, 1]
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from lib.io import RUN_NAME

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class ParameterError(ValueError):
    """A parameter has the wrong type or lies outside its range; the message names it and the fix."""


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """``float`` -> (float,); ``bool | str`` -> (bool, str); ``int | None`` -> (int, NoneType)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(arg for arg in typing.get_args(annotation))
    return (annotation,)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ParameterError(f"{name} {value!r}: expected true or false")


def _as_number(name: str, value: Any, kind: type) -> int | float:
    """An int or a float from a number or its text (``"1e-4"``, ``"3"``); never from a bool."""
    if isinstance(value, bool) or value is None:
        raise ParameterError(f"{name} {value!r}: expected a number ({kind.__name__}), e.g. {name}=1e-4"
                             if kind is float else f"{name} {value!r}: expected a whole number, e.g. {name}=10")
    number: int | float
    try:
        number = float(value.strip()) if isinstance(value, str) else value
        if not isinstance(number, (int, float)):
            raise TypeError
    except (TypeError, ValueError):
        raise ParameterError(f"{name} {value!r}: expected a number ({kind.__name__}), e.g. {name}=1e-4"
                             if kind is float else f"{name} {value!r}: expected a whole number, e.g. {name}=10") from None
    if not math.isfinite(number):
        raise ParameterError(f"{name} {value!r}: expected a finite number")
    if kind is int:
        if float(number) != int(number):
            raise ParameterError(f"{name} {value!r}: expected a whole number, e.g. {name}={int(number)}")
        return int(number)
    return float(number)


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` declares (``float``, ``int``, ``bool``, ``str``, a union
    of these, ``X | None``); numbers and booleans written as text are converted."""
    allowed = _allowed_types(annotation)
    if value is None:
        if type(None) in allowed:
            return None
        raise ParameterError(f"{name} is empty (None): expected a value of type "
                             f"{' or '.join(t.__name__ for t in allowed)}")
    text_for_bool = isinstance(value, str) and bool in allowed   # "true" for a bool | str field
    if type(value) in allowed and not text_for_bool and not (type(value) is float and not math.isfinite(value)):
        return value
    errors = []
    for kind in allowed:  # in declared order: "auto" stays a str for bool | str, "true" becomes True
        try:
            if kind is bool:
                return _as_bool(name, value)
            if kind in (int, float):
                return _as_number(name, value, kind)
            if kind is str and not isinstance(value, (bool, list, dict)):
                return str(value)
        except ParameterError as error:
            errors.append(str(error))
    raise ParameterError(errors[0] if len(errors) == 1 else
                         f"{name} {value!r}: expected {' or '.join(t.__name__ for t in allowed if t is not type(None))}")


def coerce_fields(instance: Any) -> None:
    """Coerce every field of a dataclass instance to its annotated type, in place."""
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        setattr(instance, f.name, coerce(f.name, getattr(instance, f.name), hints[f.name]))


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, fix: str = "") -> None:
    """Refuse ``value`` outside [low, high] (``low_open``/``high_open``: the bound itself excluded)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        interval = (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
                    + ("inf" if high is None else f"{high:g}") + (")" if high_open else "]"))
        raise ParameterError(f"{name} {value!r}: expected a value in {interval}" + (f"; {fix}" if fix else ""))


def check_device(device: str, name: str = "device") -> str:
    """Refuse a device torch cannot use here (``bogus``, ``cuda`` without a CUDA GPU, ``cuda:3`` on
    a machine with two) before anything is loaded; returns ``device`` (``auto`` unchanged)."""
    import torch

    text = str(device).strip()
    if text in ("", "auto", "cpu"):          # "": a null from YAML, the caller's default
        return text
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ParameterError(f"{name} 'mps': this machine has no Apple GPU; use {name}=cpu or {name}=auto")
        return text
    if not match:
        raise ParameterError(f"{name} {device!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ParameterError(f"{name} {device!r}: this machine has no CUDA GPU (torch.cuda.is_available() is False); "
                             f"use {name}=cpu or {name}=auto")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ParameterError(f"{name} {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0; use {name}=cuda:0 or {name}=auto")
    return text


def check_run_name(run: str, name: str = "run") -> str:
    """A run name is one folder name made of the characters a grid's names use (letters, digits,
    ``. _ + = -``); anything else (``/``, a newline, a space) is refused, not rewritten."""
    if not isinstance(run, str) or not RUN_NAME.fullmatch(run) or run in (".", ".."):
        raise ParameterError(f"{name} {run!r}: expected a folder name of letters, digits and . _ + = - "
                             "(no '/', spaces or newlines), e.g. run=hybrid-tiny-s0")
    return run
