"""Where things live, and how results are written: atomically, with their provenance.

Nothing is ever half-written: every file goes to a temporary sibling first and is moved into
place with ``os.replace`` (atomic on POSIX), so a killed run leaves either the old file or the
new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from lib.hardware import hardware_info

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def outputs_dir() -> Path:
    """Root of everything a run writes (``outputs/``; override with ``HBT_OUTPUTS``)."""
    return Path(os.environ.get("HBT_OUTPUTS", PROJECT_ROOT / "outputs"))


def cache_dir() -> Path:
    """Downloads and converted models, shared by runs and kept outside git.

    ``HBT_CACHE`` overrides; else ``$XDG_CACHE_HOME/hybrid-batch`` (``~/.cache/hybrid-batch``).
    """
    if "HBT_CACHE" in os.environ:
        return Path(os.environ["HBT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "hybrid-batch"


# the characters of the run names a grid makes (lib.naming); a newline or a space is refused, not rewritten
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def run_dir(run: str) -> Path:
    """``outputs/<run>/``, created. A run name is a single path component of ``RUN_NAME``'s characters."""
    if not isinstance(run, str) or not RUN_NAME.fullmatch(run) or run in {".", ".."}:
        raise ValueError(f"run name {run!r} must be a non-empty folder name without '/', spaces or newlines "
                         "(letters, digits and . _ + = -)")
    path = outputs_dir() / run
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Works for files and for directories (an existing directory at ``path`` is replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_dir():
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        elif tmp.exists():
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


# what atomic_path leaves when killed: ".<name>.<mkdtemp's 8 characters>/" and ".<name>.old/"
_TEMPORARY = re.compile(r"^\..+\.(old|[a-z0-9_]{8})$")


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders that killed ``atomic_path`` blocks left in ``folder`` (not below
    it); call it at the start of a run, when nothing else writes there. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    orphans = [p for p in folder.iterdir() if p.is_dir() and _TEMPORARY.match(p.name)]
    for orphan in orphans:
        shutil.rmtree(orphan, ignore_errors=True)
    return orphans


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None: JSON has no NaN (``null`` instead)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:  # numpy scalars
        return _finite(obj.item())
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (NaN and infinities written as ``null``), atomically."""
    text = json.dumps(_finite(data), indent=2, ensure_ascii=False, default=_json_default, allow_nan=False)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_yaml_mapping(path: str | os.PathLike, what: str = "keys") -> dict[str, Any]:
    """The mapping in the YAML (or JSON) file ``path``; a ValueError naming the file, and the line
    for a syntax error, if it is not valid YAML or not a mapping (``what``: what it should map)."""
    try:
        with open(path, encoding="utf-8") as handle:  # read from the file: yaml's marks name it
            values = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of {what}")
    return values


def parse_override(item: str) -> tuple[str, Any]:
    """``"steps=100"`` -> ``("steps", 100)``: the value read as YAML (``""`` for nothing, None for
    null; text that is not valid YAML stays text: the field's type decides); ValueError without ``=``."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"{item!r}: expected key=value, e.g. steps=100")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (cache keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


TRACKED_PACKAGES = (
    "torch", "transformers", "sentence-transformers", "datasets", "accelerate", "faiss-cpu",
    "numpy", "pandas", "scikit-learn", "seaborn", "papermill", "ir-measures",
)


def versions() -> dict[str, Any]:
    """Versions of Python, the packages that shape the numbers, the git commit and the machine
    (``hardware``: CPU model, its bf16/AMX flags, torch's CPU capability: ``lib.hardware``)."""
    found = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
        dirty = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    accelerator, threads = None, None
    with contextlib.suppress(Exception):
        import torch

        # CPU float sums depend on the thread count: same seed and threads -> bit-identical numbers
        threads = torch.get_num_threads()
        if torch.cuda.is_available():
            accelerator = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "python": sys.version.split()[0],
        "packages": found,
        "git_commit": commit,
        "git_dirty": dirty,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "accelerators": accelerator,
        "hardware": hardware_info(),
    }


def write_provenance(run_path: str | os.PathLike, config: dict[str, Any]) -> None:
    """Write ``config.json`` (the resolved parameters) and ``versions.json`` into a run folder."""
    run_path = Path(run_path)
    write_json(run_path / "config.json", config)
    write_json(run_path / "versions.json", versions())


def save_figure(figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix (``.png`` by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    return path
