"""Benchmark of the faiss index types of ``lib.indexes`` at a million vectors, and of passage encoding.

What it measures, on this machine, for each index type (flat, ivf, hnsw, ivfpq):

* build time (train + add) of a synthetic corpus of ``--n`` unit vectors of ``--dim`` dimensions
  (clustered gaussian: ``--clusters`` random unit centres, each point = centre + gaussian noise of
  norm about ``--noise``, renormalised; numpy generator seeded with ``--seed``);
* search time of ``--queries`` queries (same distribution, other draws) at ``k = --k``, for a few
  values of the search knob (nprobe for ivf/ivfpq, efSearch for hnsw);
* memory: the serialised index size (``faiss.serialize_index``) and the process RSS increase while
  it is built, both per million vectors;
* recall@k of every approximate index against exact search (flat): mean |approx ∩ exact| / k;
* encoding throughput of a backbone (``--backbone``, default me5-small-q4) on ``--passages``
  Wikipedia paragraphs (XQuAD-R contexts from ``LAREQA_DIR``, 11 languages, cut at the backbone's
  128-token passage length as MIRACL passages would be), to project corpus encoding times.

Writes ``outputs/bench/bench_index.json`` and ``bench_index.md`` (atomically) and prints the table.
Run it niced on a shared machine:

    nice -n 10 .venv/bin/python benchmarks/bench_index.py                 # the full benchmark
    .venv/bin/python benchmarks/bench_index.py --n 20000 --passages 0     # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.indexes import IndexParams, build_index, index_bytes, recall_against, rerank, search  # noqa: E402
from lib.io import outputs_dir, versions, write_json, write_text  # noqa: E402


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def clustered_vectors(n: int, dim: int, clusters: int, noise: float, rng: np.random.Generator,
                      centres: np.ndarray | None = None, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``clusters`` unit centres (float32, built in chunks to bound memory)."""
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        block = centres[rng.integers(len(centres), size=size)]
        block += rng.standard_normal((size, dim), dtype=np.float32) * (noise / np.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + size] = block
    return out, centres


def bench_index(kind: str, params: IndexParams, data: np.ndarray, queries: np.ndarray, k: int,
                knob_values: list[int], exact_rows: np.ndarray | None, rerank_k: int = 0) -> tuple[list[dict], np.ndarray]:
    gc.collect()
    rss_before = rss_bytes()
    start, cpu = time.perf_counter(), time.process_time()
    index, record = build_index(data, params, show_progress=False)
    build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    rss_delta = max(0, rss_bytes() - rss_before)
    size = index_bytes(index)
    n = len(data)
    rows, best = [], None
    knob = {"ivf": "nprobe", "ivfpq": "nprobe", "hnsw": "efSearch"}.get(kind)
    variants = [(value, 0) for value in knob_values or [None]]
    if rerank_k and kind != "flat":
        variants += [(value, rerank_k) for value in knob_values]
    for value, rerank_count in variants:
        if kind in ("ivf", "ivfpq"):
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", value)
        elif kind == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = value
        start, cpu = time.perf_counter(), time.process_time()
        if rerank_count:   # approximate top-N, then exact inner products from the stored vectors
            _, found = rerank(data, queries, search(index, queries, rerank_count)[1], k)
        else:
            _, found = search(index, queries, k)
        search_s, search_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        recall = 1.0 if exact_rows is None else recall_against(exact_rows, found, k)
        label = f"{knob}={value}" if knob else "-"
        rows.append({
            "index": kind + (f"+rerank{rerank_count}" if rerank_count else ""), "knob": label, "n": n,
            "train_s": record["train_s"], "add_s": record["add_s"], "build_s": build_s,
            "build_cpu_s": build_cpu_s, "search_s": search_s, "search_cpu_s": search_cpu_s, "ms_per_query": 1000 * search_s / len(queries),
            "index_bytes": size, "gb_per_million": size / n * 1e6 / 1e9,
            "rss_delta_gb_per_million": rss_delta / n * 1e6 / 1e9,
            f"recall@{k}_vs_exact": recall, "params": {**record["params"], **({{"nprobe": "nprobe", "efSearch": "ef_search"}[knob]: value} if knob else {})},
            "rerank": rerank_count,
        })
        best = found
    del index
    gc.collect()
    return rows, best


def encoding_throughput(backbone: str, count: int, batch_size: int, lareqa_dir: str | None) -> dict:
    """Passages per second of ``lib.encode.encode`` on XQuAD-R paragraphs (no cache)."""
    from lib.backbones import load_model
    from lib.data import lareqa_languages, load_lareqa
    from lib.encode import encode

    languages = lareqa_languages("xquad-r")
    dataset = load_lareqa("xquad-r", languages, data_dir=lareqa_dir)
    paragraphs = dataset.candidates[["lang", "paragraph"]].drop_duplicates()
    per_language = -(-count // len(languages))
    texts = []
    for lang in languages:  # the first paragraphs of every language, MIRACL-style: one passage each
        texts += paragraphs[paragraphs.lang == lang].paragraph.head(per_language).tolist()
    texts = texts[:count]
    model = load_model(backbone)
    tokenizer = model.tokenizer
    lengths = [min(len(tokenizer(t)["input_ids"]), model.backbone.max_passage_length) for t in texts]
    encode(model, texts[:8], "passage", batch_size=batch_size, cache=False, show_progress_bar=False)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    encode(model, texts, "passage", batch_size=batch_size, cache=False, show_progress_bar=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return {"backbone": backbone, "passages": len(texts), "seconds": seconds, "cpu_seconds": cpu_seconds,
            "passages_per_s": len(texts) / seconds, "passages_per_cpu_s": len(texts) / cpu_seconds,
            "mean_tokens": float(np.mean(lengths)), "max_length": model.backbone.max_passage_length,
            "batch_size": batch_size, "device": str(model.device), "torch_threads": _torch_threads(),
            "source": "XQuAD-R paragraphs (11 languages), truncated at the passage length"}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def markdown_table(rows: list[dict], k: int) -> str:
    header = ["index", "knob", "build s (train+add)", "build CPU s", "search s (ms/query)", "search CPU s",
              "GB per 1M (serialised)", "RSS GB per 1M", f"recall@{k} vs exact"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['index']} | {r['knob']} | {r['build_s']:.1f} ({r['train_s']:.1f}+{r['add_s']:.1f}) | "
                     f"{r['build_cpu_s']:.1f} | {r['search_s']:.2f} ({r['ms_per_query']:.2f}) | "
                     f"{r['search_cpu_s']:.2f} | {r['gb_per_million']:.3f} | "
                     f"{r['rss_delta_gb_per_million']:.3f} | {r[f'recall@{k}_vs_exact']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="*", default=["flat", "ivf", "hnsw", "ivfpq"])
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[8, 32, 128])
    parser.add_argument("--train-size", type=int, default=65_536)
    parser.add_argument("--pq-m", type=int, default=48)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="*", default=[64, 128, 256])
    parser.add_argument("--rerank", type=int, default=0, help="also measure approximate top-N + exact re-scoring")
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lareqa-dir", default=None)
    parser.add_argument("--out", default=None, help="folder for the JSON and markdown (default outputs/bench)")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    data, centres = clustered_vectors(args.n, args.dim, args.clusters, args.noise, rng)
    queries, _ = clustered_vectors(args.queries, args.dim, args.clusters, args.noise, rng, centres=centres)
    generate_s = time.perf_counter() - start
    print(f"generated {args.n:,} x {args.dim} vectors in {generate_s:.1f}s", flush=True)

    rows, exact_rows = [], None
    kinds = ["flat"] + [k for k in args.kinds if k != "flat"]     # exact search first: the reference
    for kind in kinds:
        params = IndexParams(kind, nlist=args.nlist, nprobe=args.nprobe[0], pq_m=args.pq_m, hnsw_m=args.hnsw_m,
                             ef_construction=args.ef_construction, ef_search=args.ef_search[0],
                             train_size=args.train_size, seed=args.seed, device="cpu")
        knobs = {"ivf": args.nprobe, "ivfpq": args.nprobe, "hnsw": args.ef_search}.get(kind, [])
        start = time.perf_counter()
        found_rows, found = bench_index(kind, params, data, queries, args.k, knobs, exact_rows, args.rerank)
        if kind == "flat":
            exact_rows = found
        rows += found_rows
        print(f"{kind}: {time.perf_counter() - start:.1f}s", flush=True)
        print(markdown_table(found_rows, args.k), flush=True)

    encoding = None
    if args.passages > 0:
        encoding = encoding_throughput(args.backbone, args.passages, args.batch_size,
                                       args.lareqa_dir or os.environ.get("LAREQA_DIR"))
        print(f"encoding: {encoding['passages_per_s']:.1f} passages/s, {encoding['passages_per_cpu_s']:.2f} per CPU-second "
              f"({encoding['passages']} passages, mean {encoding['mean_tokens']:.0f} tokens)", flush=True)

    result = {
        "config": vars(args), "generate_s": generate_s, "wall_s": time.perf_counter() - wall,
        "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "niceness": os.nice(0),
                    "load_average_at_end": os.getloadavg()},
        "indexes": rows, "encoding": encoding, "versions": versions(),
    }
    out = Path(args.out) if args.out else outputs_dir() / "bench"
    write_json(out / "bench_index.json", result)
    text = [f"# Index benchmark: {args.n:,} vectors x {args.dim}, {args.queries} queries, k={args.k}", "",
            markdown_table(rows, args.k), ""]
    if encoding:
        text.append(f"Encoding ({encoding['backbone']}, {encoding['device']}, {encoding['torch_threads']} threads): "
                    f"{encoding['passages_per_s']:.1f} passages/s wall, {encoding['passages_per_cpu_s']:.2f} per "
                    f"CPU-second, on {encoding['passages']} passages "
                    f"(mean {encoding['mean_tokens']:.0f} tokens, max {encoding['max_length']}).")
    text.append(f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average at end "
                f"{tuple(round(x, 1) for x in os.getloadavg())}), niceness {os.nice(0)}, faiss {faiss.__version__} "
                f"with {faiss.omp_get_max_threads()} threads, wall {result['wall_s']:.0f}s. Wall times include "
                "waiting for the CPU; CPU seconds are summed over threads.")
    write_text(out / "bench_index.md", "\n".join(text) + "\n")
    print("\n".join(text))
    print(json.dumps({"wrote": str(out)}))
    return result


if __name__ == "__main__":
    main()
