"""Corpus embeddings encoded in resumable shards on disk (the faiss index types over them: ``lib.indexes``).

Encoding a corpus of millions of passages takes hours, so it is written in shards and can be
killed and resumed. A corpus directory holds

    manifest.json            what was encoded (model, side, shard size) and every finished shard
    shard-00000.npy          float32 rows, L2-normalised (np.load(..., mmap_mode="r") reads lazily)
    shard-00000.ids.json     the ids of those rows, when ids were given

A shard file is written atomically first, then the manifest is rewritten atomically with the
shard's entry (row range, fingerprint of its texts). A run killed at any moment leaves finished
shards listed and nothing half-written; rerunning the same call skips every listed shard whose
file is intact and whose texts still hash the same, and encodes the rest. Several processes (one
per GPU) can share one directory, each with its own manifest (``worker=r, workers=W``).

    store = encode_corpus(model, texts, "outputs/cache/corpus/xx", ids=docids)
    store.ntotal, store.dim, store.ids()[:3]
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from lib.encode import encode, model_identity
from lib.io import atomic_path, fingerprint, read_json, write_json

MANIFEST = "manifest.json"
SETTING_DEFAULTS = {"dtype": "float32"}   # settings that manifests written before they existed lack


class CorpusError(ValueError):
    """A corpus directory or index request is inconsistent; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# Sharded encoding
# --------------------------------------------------------------------------------------------

def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


@dataclass
class ShardedEmbeddings:
    """A corpus directory written by ``encode_corpus``: its manifest and lazily loaded shards."""

    directory: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, directory: str | Path) -> "ShardedEmbeddings":
        """Read the manifest(s) of a corpus directory; those of several workers are merged."""
        directory = Path(directory)
        paths = sorted(directory.glob("manifest*.json"))
        if not paths:
            raise CorpusError(f"no {MANIFEST} in {directory}: encode the corpus first (encode_corpus)")
        manifests = [read_json(p) for p in paths]
        settings = [{k: m.get(k, SETTING_DEFAULTS.get(k)) for k in ("model", "side", "shard_size", "dtype")}
                    for m in manifests]
        if any(s != settings[0] for s in settings):
            raise CorpusError(f"the manifests in {directory} disagree ({settings}): one directory per model/side")
        shards = {k: v for m in manifests for k, v in m["shards"].items()}
        ordered = sorted(shards.values(), key=lambda e: e["index"])
        contiguous = all(e["index"] == i and e["start"] == (ordered[i - 1]["stop"] if i else 0)
                         for i, e in enumerate(ordered))
        workers = {m.get("workers", 1) for m in manifests}
        complete = (all(m.get("complete") for m in manifests) and contiguous and len(workers) == 1
                    and len(manifests) == workers.pop()
                    and len(ordered) == max(m.get("n_shards", -1) for m in manifests))
        dims = {m["dim"] for m in manifests if m.get("dim") is not None}
        merged = {**settings[0], "dim": dims.pop() if dims else None, "shards": shards, "complete": complete,
                  "n_rows": ordered[-1]["stop"] if ordered else 0, "manifests": [p.name for p in paths]}
        return cls(directory, merged)

    @property
    def shards(self) -> list[dict[str, Any]]:
        return sorted(self.manifest["shards"].values(), key=lambda s: s["index"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def ntotal(self) -> int:
        return sum(s["stop"] - s["start"] for s in self.shards)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def iter_shards(self, mmap: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, embeddings)`` per shard in row order; memory-mapped unless ``mmap=False``."""
        for shard in self.shards:
            array = np.load(self.directory / shard["file"], mmap_mode="r" if mmap else None)
            yield shard["start"], array

    def embeddings(self) -> np.ndarray:
        """All rows in one in-memory float32 array (only for corpora that fit in memory)."""
        if not self.shards:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(a, dtype=np.float32) for _, a in self.iter_shards()])

    def rows(self, row_ids: np.ndarray) -> np.ndarray:
        """The float32 embeddings of arbitrary rows (any shape of ids), read from the memory-mapped shards."""
        row_ids = np.asarray(row_ids)
        flat = row_ids.ravel()
        starts = np.array([s["start"] for s in self.shards])
        which = np.searchsorted(starts, flat, side="right") - 1
        if flat.size and (flat.min() < 0 or flat.max() >= self.ntotal):
            raise CorpusError(f"row ids outside 0..{self.ntotal - 1}")
        out = np.empty((flat.size, self.dim), dtype=np.float32)
        arrays = dict(enumerate(a for _, a in self.iter_shards()))
        for shard in np.unique(which):
            mask = which == shard
            out[mask] = arrays[int(shard)][flat[mask] - starts[shard]]
        return out.reshape(*row_ids.shape, self.dim)

    def ids(self) -> list[str]:
        """The ids of all rows in row order (``encode_corpus(..., ids=...)``)."""
        out: list[str] = []
        for shard in self.shards:
            if "ids_file" not in shard:
                raise CorpusError(f"{self.directory} was encoded without ids; pass ids= to encode_corpus")
            out += json.loads((self.directory / shard["ids_file"]).read_text(encoding="utf-8"))
        return out

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """``count`` rows drawn uniformly without replacement (index training), seeded."""
        total = self.ntotal
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(total, size=min(count, total), replace=False))
        parts = []
        for start, array in self.iter_shards():
            local = rows[(rows >= start) & (rows < start + len(array))] - start
            if local.size:
                parts.append(np.asarray(array[local], dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _shard_is_intact(directory: Path, entry: dict[str, Any]) -> bool:
    path = directory / entry["file"]
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    if array.shape[0] != entry["stop"] - entry["start"]:
        return False
    return "ids_file" not in entry or (directory / entry["ids_file"]).is_file()


def manifest_name(worker: int = 0, workers: int = 1) -> str:
    return MANIFEST if workers == 1 else f"manifest.worker-{worker}-of-{workers}.json"


def encode_corpus(model, texts: Iterable[str], directory: str | Path, ids: Iterable[str] | None = None,
                  side: str = "passage", shard_size: int = 50_000, batch_size: int = 64,
                  n_texts: int | None = None, encode_fn=None, show_progress: bool = True,
                  worker: int = 0, workers: int = 1, dtype: str = "float32") -> ShardedEmbeddings:
    """Encode ``texts`` (any iterable, streamed) into shards of ``shard_size`` rows under ``directory``.

    Resumable: a shard already listed in the manifest, whose file is intact and whose texts hash
    the same, is skipped (its texts are still read from the iterable, not encoded). The manifest
    records the model identity, side and shard size; resuming with other settings is refused.
    Each shard is encoded with ``lib.encode.encode(model, shard_texts, side, cache=False)``
    (``encode_fn`` replaces it, e.g. in tests). ``n_texts`` only sizes the progress bar.

    Several processes (one per GPU) share the work with ``worker=r, workers=W``: worker r encodes
    the shards whose number is r modulo W and keeps its own manifest
    (``manifest.worker-r-of-W.json``); ``ShardedEmbeddings.open`` merges them and is ``complete``
    once every worker has finished. ``dtype="float16"`` stores half the bytes (50 GB -> 25 GB for
    MIRACL English); readers get float32 back.

        store = encode_corpus(model, (d["title"] + " " + d["text"] for d in docs), "corpus/sw",
                              ids=(d["docid"] for d in docs), shard_size=50_000)
    """
    _check_shard_settings(shard_size, dtype, worker, workers)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encode_shard, identity = _shard_encoder(model, side, batch_size, encode_fn)
    manifest_path = directory / manifest_name(worker, workers)
    manifest = _open_manifest(manifest_path, {"model": identity, "side": side, "shard_size": shard_size,
                                              "dtype": dtype}, workers)
    progress = tqdm(total=math.ceil(n_texts / shard_size) if n_texts else None, unit="shard",
                    desc=f"encoding shards ({directory.name})", disable=not show_progress)
    n_rows, n_shards, encoded, skipped = 0, 0, 0, 0
    for index, start, chunk, chunk_ids in _shards(texts, ids, shard_size):
        key = fingerprint(chunk, chunk_ids)
        entry = manifest["shards"].get(str(index))
        if index % workers != worker:
            pass                                      # another worker's shard
        elif entry and entry["fingerprint"] == key and entry["start"] == start and _shard_is_intact(directory, entry):
            skipped += 1
        else:
            embeddings = _shard_embeddings(encode_shard, chunk, index, manifest)
            manifest["shards"][str(index)] = _write_shard(directory, index, start, key, embeddings, chunk_ids, dtype)
            write_json(manifest_path, manifest)
            encoded += 1
        progress.update(1)
        n_rows, n_shards = start + len(chunk), index + 1
    progress.close()
    _close_manifest(manifest_path, manifest, n_rows, n_shards, encoded, skipped)
    return ShardedEmbeddings.open(directory)


def _check_shard_settings(shard_size: int, dtype: str, worker: int, workers: int) -> None:
    if shard_size < 1:
        raise CorpusError(f"shard_size={shard_size}: expected a positive number of rows per shard")
    if dtype not in ("float32", "float16"):
        raise CorpusError(f"dtype={dtype!r}: expected 'float32' or 'float16'")
    if not 0 <= worker < workers:
        raise CorpusError(f"worker={worker} of workers={workers}: expected 0 <= worker < workers")


def _shard_encoder(model, side: str, batch_size: int, encode_fn=None):
    """``(texts -> embeddings, identity)``: the model's ``side`` encoder, or ``encode_fn`` as given;
    the identity (fingerprint of the model, or of ``encode_fn``'s name) goes into the manifest."""
    if encode_fn is not None:
        return encode_fn, fingerprint(getattr(encode_fn, "__qualname__", "custom"))

    def encode_shard(texts):
        return encode(model, texts, side, batch_size=batch_size, cache=False, show_progress_bar=False)
    return encode_shard, fingerprint(model_identity(model.backbone))


def _open_manifest(path: Path, settings: dict[str, Any], workers: int) -> dict[str, Any]:
    """The manifest to resume (refused if made with other settings), or a new empty one."""
    if not path.is_file():
        return {**settings, "dim": None, "shards": {}, "complete": False, "workers": workers}
    manifest = read_json(path)
    old = {key: manifest.get(key, SETTING_DEFAULTS.get(key)) for key in settings}
    if old != settings:
        raise CorpusError(
            f"{path.parent} holds embeddings made with {old}, not {settings}: use another directory "
            "for another model/side/shard size, or delete this one to start over")
    manifest["complete"] = False
    return manifest


def _shards(texts: Iterable[str], ids: Iterable[str] | None,
            shard_size: int) -> Iterator[tuple[int, int, list[str], list[str] | None]]:
    """``(shard number, first row, texts, ids or None)`` of each shard, read lazily; one id per text."""
    id_iter = iter(ids) if ids is not None else None
    text_iter = iter(texts)
    start = 0
    for index in itertools.count():
        chunk = list(itertools.islice(text_iter, shard_size))
        if not chunk:
            break
        chunk_ids = None
        if id_iter is not None:
            chunk_ids = [str(i) for i in itertools.islice(id_iter, len(chunk))]
            if len(chunk_ids) != len(chunk):
                raise CorpusError(f"ids ran out at row {start + len(chunk_ids)}: give one id per text")
        yield index, start, chunk, chunk_ids
        start += len(chunk)
    if id_iter is not None and next(id_iter, None) is not None:
        raise CorpusError(f"more ids than texts ({start} texts): give one id per text")


def _shard_embeddings(encode_shard, chunk: list[str], index: int, manifest: dict[str, Any]) -> np.ndarray:
    """Encode one shard as float32 rows, checked against its texts and the dim of earlier shards
    (recorded in ``manifest["dim"]``)."""
    embeddings = np.ascontiguousarray(encode_shard(chunk), dtype=np.float32)
    if embeddings.shape[0] != len(chunk):
        raise CorpusError(f"encoder returned {embeddings.shape[0]} rows for {len(chunk)} texts")
    if manifest["dim"] not in (None, embeddings.shape[1]):
        raise CorpusError(f"shard {index} has dim {embeddings.shape[1]}, earlier shards {manifest['dim']}")
    manifest["dim"] = int(embeddings.shape[1])
    return embeddings


def _write_shard(directory: Path, index: int, start: int, key: str, embeddings: np.ndarray,
                 chunk_ids: list[str] | None, dtype: str) -> dict[str, Any]:
    """Write a shard's rows (and ids) atomically; return its manifest entry."""
    entry = {"index": index, "file": shard_name(index), "start": start, "stop": start + len(embeddings),
             "fingerprint": key}
    with atomic_path(directory / entry["file"]) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, embeddings.astype(dtype, copy=False))
    if chunk_ids is not None:
        entry["ids_file"] = shard_name(index).replace(".npy", ".ids.json")
        with atomic_path(directory / entry["ids_file"]) as tmp:
            tmp.write_text(json.dumps(chunk_ids, ensure_ascii=False), encoding="utf-8")
    return entry


def _close_manifest(path: Path, manifest: dict[str, Any], n_rows: int, n_shards: int,
                    encoded: int, skipped: int) -> None:
    """Mark the manifest complete; shards beyond the end of a corpus that got shorter are dropped."""
    for stale in [k for k in manifest["shards"] if int(k) >= n_shards]:
        manifest["shards"].pop(stale)
    manifest.update(complete=True, n_rows=n_rows, n_shards=n_shards, encoded_last_run=encoded,
                    skipped_last_run=skipped)
    write_json(path, manifest)
