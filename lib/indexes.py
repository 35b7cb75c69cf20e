"""The faiss index types over corpus embeddings (``lib.corpus``), their search and exact re-ranking.

Index types (``INDEX_TYPES``), all inner product (= cosine on normalised rows):

* ``flat``  exact search (``IndexFlatIP``): 4*d bytes per vector, the reference;
* ``ivf``   inverted lists (``IndexIVFFlat``): k-means into ``nlist`` cells, search ``nprobe``
  of them; same memory as flat, search cost ~ nprobe/nlist of it;
* ``hnsw``  graph (``IndexHNSWFlat``, ``M`` links per node): fast, no training, about 8*M more
  bytes per vector (2*M int32 neighbours on the base layer), slow to build; CPU only in faiss
  (it stays on the CPU when a GPU is present);
* ``ivfpq`` inverted lists over product-quantised codes (``IndexIVFPQ``, ``pq_m`` bytes per
  vector at 8 bits per sub-quantiser): for memory, lossy.

With ``faiss.get_num_gpus() > 0`` (and ``device="auto"``) flat, ivf and ivfpq indexes move to all
GPUs (``index_cpu_to_all_gpus``, rows sharded across GPUs with ``shard=True``).

    store = ShardedEmbeddings.open("outputs/cache/corpus/xx")
    index, record = build_index(store, IndexParams("ivf", nlist=4096, nprobe=64))
    scores, rows = search(index, query_embeddings, k=100)     # rows index store.ids()
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from lib.corpus import CorpusError, ShardedEmbeddings

INDEX_TYPES = ("flat", "ivf", "hnsw", "ivfpq")


@dataclass
class IndexParams:
    """Which faiss index and its knobs. ``None`` knobs get defaults from the corpus size
    (``resolved(n)``): ``nlist = 4 * sqrt(n)`` (faiss guideline: 4-16 sqrt(n)), ``nprobe = nlist/16``
    (at least 16), ``pq_m = 48`` sub-quantisers of 8 bits (48 bytes per 384-dim vector),
    HNSW ``M = 32``, ``efConstruction = 80``, ``efSearch = 128``."""

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int = 48
    pq_nbits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_size: int | None = None   # rows sampled for k-means / PQ training (default 64 * nlist, <= n)
    seed: int = 0
    device: str = "auto"            # auto | cpu | gpu
    gpu_float16: bool = False       # flat/ivf on GPU: store vectors in fp16 (half the memory)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in INDEX_TYPES:
            raise CorpusError(f"index kind {self.kind!r}: expected one of {INDEX_TYPES}")
        if self.device not in ("auto", "cpu", "gpu"):
            raise CorpusError(f"device {self.device!r}: expected auto, cpu or gpu")

    def resolved(self, n: int) -> "IndexParams":
        params = IndexParams(**asdict(self))
        if params.kind in ("ivf", "ivfpq"):
            if params.nlist is None:
                params.nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), max(1, n // 39)))
            if params.nprobe is None:
                params.nprobe = max(1, min(params.nlist, max(16, params.nlist // 16)))
            if params.train_size is None:
                params.train_size = min(n, 64 * params.nlist)
        return params

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def use_gpu(params: IndexParams) -> bool:
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if params.device == "gpu" and gpus == 0:
        raise CorpusError("device='gpu' but faiss sees no GPU: install faiss-gpu or use device='auto'")
    return params.device != "cpu" and gpus > 0 and params.kind != "hnsw"


def make_index(dim: int, params: IndexParams) -> faiss.Index:
    """An empty (untrained) CPU index of ``params.kind`` for ``dim``-dimensional rows."""
    if params.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if params.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    if params.nlist is None:
        raise CorpusError(f"{params.kind} needs nlist: call params.resolved(n_rows) first")
    quantizer = faiss.IndexFlatIP(dim)
    if params.kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, params.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        if dim % params.pq_m:
            raise CorpusError(f"pq_m={params.pq_m} must divide the dimension {dim}")
        index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.pq_m, params.pq_nbits,
                                 faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()
    index.nprobe = params.nprobe
    return index


def _to_gpu(index: faiss.Index, params: IndexParams) -> faiss.Index:
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    options.useFloat16 = params.gpu_float16
    return faiss.index_cpu_to_all_gpus(index, co=options)


def set_search_params(index: faiss.Index, params: IndexParams) -> None:
    """Apply ``nprobe`` / ``efSearch`` to a built index (CPU or GPU)."""
    if params.kind in ("ivf", "ivfpq") and params.nprobe:
        try:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", params.nprobe)
        except (RuntimeError, AttributeError):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", params.nprobe)
    if params.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = params.ef_search


def build_index(corpus: ShardedEmbeddings | np.ndarray, params: IndexParams | str = "flat",
                show_progress: bool = True) -> tuple[faiss.Index, dict[str, Any]]:
    """Train (ivf, ivfpq) and fill an index from a sharded corpus or an in-memory array.

    Returns the index and a record of what was built: resolved parameters, device, train and
    add seconds. Training rows are drawn uniformly with ``params.seed``.
    """
    if isinstance(params, str):
        params = IndexParams(params)
    if isinstance(corpus, np.ndarray):
        array = np.ascontiguousarray(corpus, dtype=np.float32)
        n, dim = array.shape
        shards = [(0, array)]

        def sample(count, seed):
            rows = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
            return array[rows]
    else:
        n, dim = corpus.ntotal, corpus.dim
        shards = corpus.iter_shards()
        sample = corpus.sample
    if n == 0:
        raise CorpusError("cannot index an empty corpus")
    params = params.resolved(n)
    index = make_index(dim, params)
    gpu = use_gpu(params)
    if gpu:
        index = _to_gpu(index, params)
    record = {"params": params.as_dict(), "device": "gpu" if gpu else "cpu", "n": n, "dim": dim}
    start = time.perf_counter()
    if params.kind in ("ivf", "ivfpq"):
        if params.train_size < params.nlist:
            raise CorpusError(f"train_size={params.train_size} < nlist={params.nlist}: lower nlist")
        index.train(sample(params.train_size, params.seed))
    record["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    progress = tqdm(total=n, desc=f"adding to {params.kind} index", unit="vec", disable=not show_progress)
    for _, array in shards:
        for offset in range(0, len(array), 100_000):
            block = np.ascontiguousarray(array[offset:offset + 100_000], dtype=np.float32)
            index.add(block)
            progress.update(len(block))
    progress.close()
    record["add_s"] = time.perf_counter() - start
    set_search_params(index, params)
    return index, record


def search(index: faiss.Index, queries: np.ndarray, k: int = 100, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products and row ids for each query row (ids are -1 where fewer exist)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    scores, rows = [], []
    for start in range(0, len(queries), batch):
        s, r = index.search(queries[start:start + batch], k)
        scores.append(s)
        rows.append(r)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(scores), np.concatenate(rows)


def _merge_top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of each row of ``scores`` (descending; ties by row id)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    top_scores = np.take_along_axis(scores, part, axis=1)
    top_rows = np.take_along_axis(rows, part, axis=1)
    order = np.lexsort((top_rows, -top_scores), axis=1)
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top_rows, order, axis=1)


def rerank(vectors: ShardedEmbeddings | np.ndarray, queries: np.ndarray, candidate_rows: np.ndarray,
           k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its approximate candidates (e.g. ivfpq's top 1000,
    read back from the shards), best ``k`` kept: recovers most of what product quantisation lost.
    Candidate ids of -1 (fewer hits than asked) are dropped."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    valid = candidate_rows >= 0
    safe = np.where(valid, candidate_rows, 0)
    candidates = vectors.rows(safe) if isinstance(vectors, ShardedEmbeddings) else \
        np.asarray(vectors[safe], dtype=np.float32)
    scores = np.einsum("qd,qcd->qc", queries, candidates)
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    return _merge_top_k(scores, np.where(valid, candidate_rows, -1).astype(np.int64), k)


def index_bytes(index: faiss.Index) -> int:
    """Serialised size of a CPU index (a GPU index is copied back to the CPU first)."""
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    return int(faiss.serialize_index(index).size)


def recall_against(exact_rows: np.ndarray, approx_rows: np.ndarray, k: int | None = None) -> float:
    """Recall@k of an approximate top-k against exact top-k: mean |approx ∩ exact| / k."""
    k = k or exact_rows.shape[1]
    hits = [len(np.intersect1d(e[:k], a[:k])) for e, a in zip(exact_rows, approx_rows)]
    return float(np.mean(hits) / k)
