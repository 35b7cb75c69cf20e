"""When a run is complete: one marker, ``outputs/<run>/COMPLETE.json``, written last.

A run folder fills up over time (config, models, ``metrics.json``, parquet tables, figures, the
executed notebook); a kill can stop it anywhere. So no single artefact says "complete": the
runner (``lib.notebooks.execute``) writes the marker atomically after the notebook has ended
and every artefact is on disk, the scheduler and the grid trust only the marker, and a forced
rerun removes it before anything else. The marker lists the run's files and their sizes.

    clear_complete(path)          # before a (forced) rerun
    ...                           # the run writes its artefacts
    mark_complete(path, notebook="03_train.ipynb")
    is_complete(path)             # True

A folder also records what it holds (``run.json``: its kind, train | evaluate | bias | report,
and the parameters it was made with): :func:`check_run_claim` refuses to write another kind of
run, or the same kind with other parameters, into it unless forced.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lib.io import read_json, write_json

MARKER = "COMPLETE.json"


def marker_path(run_path: str | os.PathLike) -> Path:
    return Path(run_path) / MARKER


def is_complete(run_path: str | os.PathLike) -> bool:
    """True when the run's marker exists (and is readable JSON: a marker is written atomically)."""
    path = marker_path(run_path)
    if not path.is_file():
        return False
    try:
        read_json(path)
    except ValueError:
        return False
    return True


def clear_complete(run_path: str | os.PathLike) -> None:
    """Remove the marker: the run is about to change and counts as incomplete until marked again."""
    marker_path(run_path).unlink(missing_ok=True)


def mark_complete(run_path: str | os.PathLike, **details) -> Path:
    """Write the marker last: the run's files (relative path -> bytes), the time and ``details``."""
    run_path = Path(run_path)
    relative = (p.relative_to(run_path) for p in sorted(run_path.rglob("*")) if p.is_file())
    files = {str(r): (run_path / r).stat().st_size for r in relative   # hidden: temporaries, caches
             if r.name != MARKER and not any(part.startswith(".") for part in r.parts)}
    return write_json(marker_path(run_path), {"completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              **details, "files": files})


# --------------------------------------------------------------------------------------------
# What a run folder holds: its kind and the parameters it was made with (``run.json``)

RUN_RECORD = "run.json"


class RunConflictError(ValueError):
    """A run would be written into a folder that holds another kind of run or other parameters."""


def run_kind(run_path: str | os.PathLike) -> str | None:
    """The kind of run a folder holds: ``run.json``'s, else its ``config.json``'s ``task`` (evaluate,
    bias), else ``train`` for a training configuration; None for a new or empty folder."""
    run_path = Path(run_path)
    for name in (RUN_RECORD, "config.json"):
        try:
            record = read_json(run_path / name)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            kind = record.get("kind") if name == RUN_RECORD else record.get("task")
            if kind is None and name == "config.json" and "learning_rate" in record and "sampler" in record:
                kind = "train"
            if kind:
                return str(kind)
    return None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    text = lambda value: json.dumps(value, sort_keys=True, default=str)  # noqa: E731
    return [f"{key}: {old.get(key)!r} there, {new.get(key)!r} now" for key in sorted(set(old) | set(new))
            if text(old.get(key)) != text(new.get(key))]


def check_run_claim(run_path: str | os.PathLike, kind: str, parameters: dict[str, Any], source: str,
                    force: bool = False, fix: str = "--force (force=True from Python)") -> None:
    """Refuse to write a ``kind`` run made by ``source`` with ``parameters`` into a folder that holds
    another kind of run, or the same kind made by ``source`` with other parameters (``force``: allowed)."""
    run_path = Path(run_path)
    if force:
        return
    found = run_kind(run_path)
    if found is not None and found != kind:
        raise RunConflictError(f"run folder {run_path} holds a {found!r} run, not {kind!r}; choose another run "
                               f"name, or {fix} to write over it")
    try:
        recorded = read_json(run_path / RUN_RECORD).get("parameters", {}).get(source)
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None:
        differences = _differences(recorded, parameters)
        if differences:
            raise RunConflictError(f"run folder {run_path} holds a {kind!r} run made with other parameters "
                                   f"({'; '.join(differences[:4])}); choose another run name, or {fix} to write over it")


def record_run(run_path: str | os.PathLike, kind: str, parameters: dict[str, Any], source: str,
               replace: bool = False) -> Path:
    """Write ``run.json``: the folder's kind and, per ``source`` (a notebook, ``lib.evaluate``...),
    the parameters it was made with; ``replace``: forget what other sources recorded."""
    path = Path(run_path) / RUN_RECORD
    record: dict[str, Any] = {}
    if not replace:
        try:
            record = read_json(path)
        except (OSError, ValueError):
            record = {}
    if not isinstance(record, dict) or record.get("kind") != kind:
        record = {}
    sources = dict(record.get("parameters") or {})
    sources[source] = parameters
    return write_json(path, {"kind": kind, "parameters": sources})
