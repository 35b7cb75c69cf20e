"""Speed of the evaluation pipeline on this machine, each step against its baseline, in one run.

1. ``encode``: texts/s of ``lib.encode.encode`` in fp32 and bf16, and of plain
   ``SentenceTransformer.encode`` under bf16 autocast, each as a ratio to plain
   ``SentenceTransformer.encode`` in fp32 on the same prefixed XQuAD-R sentences; fidelity =
   min / mean cosine of each embedding to the plain fp32 one.
2. ``ranking``: every LAReQA rank (mono, cross, multi) plus the multilingual top-10
   (``lib.retrieval.score_lareqa`` once, then ``lareqa_ranks`` and
   ``lib.bias.multilingual_neighbours``) against the old path (faiss full sort of every pool,
   then a second scan of the multilingual pool), on the full XQuAD-R shapes: the cached
   embeddings of an evaluation run (``--embeddings-from <run>``) or random unit vectors.
3. Hooks, not measured yet: training pairs/s (fp32 vs bf16) and a full evaluation split
   (``STEPS`` lists them; they raise until written).

    python benchmarks/bench_speed.py --backbone me5-small-q4 --n-texts 512 --steps encode ranking

Writes ``outputs/bench/speed-<backbone>.json`` with the CPU model, flags and torch threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from lib.backbones import load_model
from lib.bias import multilingual_neighbours
from lib.data import load_lareqa
from lib.encode import encode
from lib.hardware import hardware_info
from lib.io import outputs_dir, read_json, run_dir, versions, write_json
from lib.retrieval import lareqa_ranks, score_lareqa
from tests.faiss_reference import lareqa_ranks_full_sort, multilingual_neighbours_before


def timed(function, repeats: int):
    """Best wall time of ``repeats`` calls (the least disturbed by other jobs) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_encode(args, data) -> list[dict]:
    rng = np.random.default_rng(0)
    texts = list(data.candidates.text.iloc[rng.choice(len(data.candidates), args.n_texts, replace=False)])
    model = load_model(args.backbone, device="cpu")
    model.max_seq_length = model.backbone.max_passage_length
    prefixed = [model.backbone.passage_prefix + t for t in texts]

    def plain(dtype=None):
        def run():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                return model.encode(prefixed, batch_size=args.batch_size, normalize_embeddings=True,
                                    convert_to_tensor=True, show_progress_bar=False).float().numpy()
        return run

    def ours(precision):
        return lambda: encode(model, texts, "passage", batch_size=args.batch_size, cache=False,
                              precision=precision, show_progress_bar=False)

    variants = {"plain ST fp32": plain(), "lib.encode fp32": ours("fp32"),
                "lib.encode bf16": ours("bf16"), "plain ST bf16 autocast": plain(torch.bfloat16)}
    encode(model, texts[:32], "passage", cache=False, precision="bf16", show_progress_bar=False)  # warm-up
    plain()()
    seconds, embeddings = {}, {}
    for _ in range(args.repeats):      # interleaved rounds: a burst of other jobs hits every variant
        for name, run in variants.items():
            elapsed, embeddings[name] = timed(run, 1)
            seconds[name] = min(seconds.get(name, float("inf")), elapsed)
    reference = embeddings["plain ST fp32"]
    rows = []
    for name in variants:
        cosine = np.sum(embeddings[name] * reference, axis=1)
        rows.append({"step": "encode", "variant": name, "seconds": seconds[name],
                     "texts_per_s": args.n_texts / seconds[name],
                     "ratio_to_plain_fp32": seconds["plain ST fp32"] / seconds[name],
                     "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())})
    return rows


def ranking_embeddings(args, data):
    if args.embeddings_from:
        from lib.bias import run_embeddings

        config = read_json(outputs_dir() / args.embeddings_from / "config.json")
        _, questions, candidates = run_embeddings(config)
        return questions, candidates, f"cached embeddings of {args.embeddings_from}"
    rng = np.random.default_rng(0)
    unit = [rng.standard_normal((n, args.dim)).astype(np.float32) for n in (len(data.questions), len(data.candidates))]
    questions, candidates = (u / np.linalg.norm(u, axis=1, keepdims=True) for u in unit)
    return questions, candidates, f"random unit vectors, dim {args.dim}"


def bench_ranking(args, data) -> list[dict]:
    questions, candidates, source = ranking_embeddings(args, data)
    shape = f"{len(questions)} questions x {len(candidates)} candidates ({source})"

    def new():
        scored = score_lareqa(data, questions, candidates, k=10)
        return lareqa_ranks(data, questions, candidates, scored=scored), multilingual_neighbours(data, scored=scored)

    def old():
        return (lareqa_ranks_full_sort(data, questions, candidates),
                multilingual_neighbours_before(data, questions, candidates, k=10, progress=False))

    new_s, (new_ranks, new_neighbours) = timed(new, args.repeats)
    rows = [{"step": "ranking", "variant": "counting, one pass", "seconds": new_s, "shape": shape}]
    if not args.skip_old:
        old_s, (old_ranks, old_neighbours) = timed(old, 1)
        same = new_ranks["rank"].to_numpy() == old_ranks["rank"].to_numpy()
        rows[0].update(old_seconds=old_s, speedup=old_s / new_s, rank_agreement=float(same.mean()),
                       top_k_agreement=float((new_neighbours.top_k.cid == old_neighbours.top_k.cid).mean()))
        rows.append({"step": "ranking", "variant": "faiss full sort + second scan (old)", "seconds": old_s,
                     "shape": shape})
    return rows


STEPS = {"encode": bench_encode, "ranking": bench_ranking}
HOOKS = ("train", "evaluate")   # training pairs/s fp32 vs bf16; full XQuAD-R evaluation split: not written yet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--n-texts", type=int, default=512, help="XQuAD-R candidate sentences to encode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="rounds per variant; the best is kept")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=[*STEPS, *HOOKS])
    parser.add_argument("--embeddings-from", default="", help="evaluation run whose cached embeddings to rank")
    parser.add_argument("--dim", type=int, default=384, help="dimension of the random embeddings")
    parser.add_argument("--skip-old", action="store_true", help="do not time the old ranking path")
    args = parser.parse_args()
    missing = [s for s in args.steps if s in HOOKS]
    if missing:
        raise NotImplementedError(f"steps {missing} are hooks, not written yet; run --steps {' '.join(STEPS)}")

    data = load_lareqa("xquad-r")
    rows = [row for step in args.steps for row in STEPS[step](args, data)]
    result = {"rows": rows, "hardware": hardware_info("cpu", "auto"), "args": vars(args),
              "versions": versions()}
    write_json(run_dir("bench") / f"speed-{args.backbone}.json", result)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    print({k: result["hardware"][k] for k in ("cpu_model", "cpu_flags", "torch_threads", "precision")})


if __name__ == "__main__":
    main()
