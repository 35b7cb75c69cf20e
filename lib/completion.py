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
"""

from __future__ import annotations

import os
import time
from pathlib import Path

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
