"""Encoding and ranking speed of the evaluation pipeline, each against the obvious alternative.

1. Encoding: length-sorted batches (``lib.encode.encode``, through sentence-transformers'
   length sort) against batches in file order, on the same XQuAD-R candidate sentences.
2. Full ranking for the multilingual setting: faiss exact search (``lib.retrieval.full_ranks``)
   against ``numpy.argsort`` of the full score matrix, on the same embeddings.

    python benchmarks/bench_encode.py --backbone me5-small-q4 --n-texts 384

Writes ``outputs/bench/encode-<backbone>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
import torch

from lib.backbones import load_model
from lib.data import load_lareqa
from lib.encode import encode
from lib.io import run_dir, versions, write_json
from lib.retrieval import build_index, full_ranks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--n-texts", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-queries", type=int, default=1190)
    parser.add_argument("--pool", type=int, default=13014)
    args = parser.parse_args()

    data = load_lareqa("xquad-r")
    rng = np.random.default_rng(0)
    texts = list(data.candidates.text.iloc[rng.choice(len(data.candidates), args.n_texts, replace=False)])
    model = load_model(args.backbone, device="cpu")
    rows = []

    encode(model, texts[:16], "passage", cache=False, show_progress_bar=False)  # warm-up
    start = time.perf_counter()
    sorted_embeddings = encode(model, texts, "passage", batch_size=args.batch_size, cache=False,
                               show_progress_bar=False)
    sorted_s = time.perf_counter() - start
    start = time.perf_counter()
    file_order = np.concatenate([
        encode(model, texts[i:i + args.batch_size], "passage", batch_size=args.batch_size, cache=False,
               show_progress_bar=False)
        for i in range(0, len(texts), args.batch_size)])
    unsorted_s = time.perf_counter() - start
    assert np.allclose(sorted_embeddings, file_order, atol=1e-4)
    rows.append({"task": f"encode {args.n_texts} XQuAD-R sentences ({args.backbone}, batch {args.batch_size})",
                 "ours": "length-sorted batches", "ours_s": sorted_s, "ours_per_s": args.n_texts / sorted_s,
                 "alternative": "file-order batches", "alternative_s": unsorted_s,
                 "alternative_per_s": args.n_texts / unsorted_s, "speed-up": unsorted_s / sorted_s})

    dim = sorted_embeddings.shape[1]
    pool = rng.standard_normal((args.pool, dim)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = rng.standard_normal((args.n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    relevant = [rng.choice(args.pool, 11, replace=False) for _ in range(args.n_queries)]
    start = time.perf_counter()
    ours = full_ranks(build_index(pool), queries, relevant)
    faiss_s = time.perf_counter() - start
    start = time.perf_counter()
    order = np.argsort(-(queries @ pool.T), axis=1, kind="stable")
    position = np.empty_like(order)
    position[np.arange(len(order))[:, None], order] = np.arange(1, args.pool + 1)
    theirs = [position[i, relevant[i]] for i in range(len(order))]
    numpy_s = time.perf_counter() - start
    agree = np.mean([np.array_equal(a, b) for a, b in zip(ours, theirs)])
    rows.append({"task": f"full ranking, {args.n_queries} queries x {args.pool} candidates (dim {dim})",
                 "ours": "faiss IndexFlatIP, k = pool", "ours_s": faiss_s,
                 "ours_per_s": args.n_queries / faiss_s, "alternative": "numpy matmul + argsort",
                 "alternative_s": numpy_s, "alternative_per_s": args.n_queries / numpy_s,
                 "speed-up": numpy_s / faiss_s, "rank agreement": agree})

    table = pd.DataFrame(rows)
    result = {"rows": rows, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
              "versions": versions()}
    write_json(run_dir("bench") / f"encode-{args.backbone}.json", result)
    print(table.to_markdown(index=False, floatfmt=".3g"))
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB, torch threads {result['threads']}")


if __name__ == "__main__":
    main()
