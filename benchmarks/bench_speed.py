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
3. ``train``: training pairs/s of lib.train's loop (``lib.trainer``'s set-up and ``_train_step``:
   batch ``--train-batch`` + as many hard negatives, the backbone's query/passage lengths, word
   embeddings frozen as on every CPU run) in fp32 and bf16, each with torch's dropout masks and with
   ``lib.dropout``'s numpy masks (``dropout_masks``), against sentence-transformers'
   ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` on the same
   (query, positive, negative) items at the same batch (fp32, and ``bf16=True``); one warm-up
   step each, then ``--train-steps`` steps per variant, in interleaved rounds.
4. ``evaluate``: a full XQuAD-R evaluation (``lib.evaluate.evaluate_lareqa``, embedding cache
   empty: a fresh temporary ``HBT_OUTPUTS``) in fp32 and in bf16, wall time split into encode
   (questions + candidates), rank (one counting pass: ranks and top-10) and the rest (metrics),
   with the summary metrics' largest difference between the two precisions.

    python benchmarks/bench_speed.py --backbone me5-small-q4 --n-texts 512 --steps encode ranking

Writes ``outputs/bench/speed-<backbone>.json`` with the CPU model, flags and torch threads.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.faiss_reference: the old path, timed
from lib.backbones import load_model
from lib.bias import multilingual_neighbours
from lib.data import load_lareqa
from lib.encode import encode
from lib.evaluate import evaluate_lareqa
from lib.hardware import hardware_info
from lib.io import outputs_dir, read_json, run_dir, versions, write_json
from lib.retrieval import lareqa_ranks, score_lareqa
from lib.sampling import PairDataset
from lib.train import TrainConfig
from lib.trainer import _set_up, _train_step
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


def _lib_trainer(args, precision: str, masks: str = "torch"):
    """A set-up lib.train run (the loop's own set-up: seed, data, model, frozen word embeddings,
    AdamW) whose ``step()`` is one ``_train_step``: seconds and pairs of one optimizer step."""
    config = TrainConfig(backbone=args.backbone, batch_size=args.train_batch, steps=10_000, precision=precision,
                         dropout_masks=masks, device="cpu", run=f"bench-train-{precision}-{masks}",
                         seed=0).resolved()
    run = _set_up(config, None)
    return run, lambda: (lambda step: (step.seconds, step.pairs))(_train_step(run))


def _st_trainer(args, items: list[dict], bf16: bool):
    """sentence-transformers' own trainer on ``items`` at the same batch; ``step()`` times one
    optimizer step (a ``train()`` of one step more than it times: the first is the warm-up)."""
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformerTrainer, SentenceTransformerTrainingArguments,
                                       losses)
    from transformers import TrainerCallback

    model = load_model(args.backbone, device="cpu")
    model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    model.max_seq_length = model.backbone.max_passage_length   # one length for every column in ST
    b = model.backbone
    data = Dataset.from_dict({"anchor": [i["query"] for i in items], "positive": [i["positive"] for i in items],
                              "negative": [i["negative"] for i in items]})
    durations: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            durations.append(time.perf_counter() - self.started)

    def step(steps: int):
        training = SentenceTransformerTrainingArguments(
            output_dir=str(run_dir("bench") / "st-trainer"), per_device_train_batch_size=args.train_batch,
            max_steps=steps + 1, learning_rate=3e-5, warmup_ratio=0.1, bf16=bf16, use_cpu=True, report_to="none",
            save_strategy="no", logging_strategy="no", seed=0, dataloader_drop_last=True,
            prompts={"anchor": b.query_prefix, "positive": b.passage_prefix, "negative": b.passage_prefix})
        trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=data,
                                             loss=losses.MultipleNegativesRankingLoss(model, scale=20.0),
                                             callbacks=[StepTimes()])
        durations.clear()
        trainer.train()
        return durations[1:]
    return step


def bench_train(args, data) -> list[dict]:
    lib_runs = {f"lib.train {p}" + (" numpy masks" if masks == "numpy" else ""): _lib_trainer(args, p, masks)
                for masks in ("torch", "numpy") for p in ("fp32", "bf16")}   # lib.train fp32: torch masks
    run = next(iter(lib_runs.values()))[0]
    sampler_batches = iter(run.sampler)          # the same kind of batches, for the ST trainer
    pairs = PairDataset(run.groups[0], True, run.config.negative_language, 0)
    items = [pairs[index] for _, batch in zip(range(args.train_steps + 2), sampler_batches) for index in batch]
    items = [item for item in items if item.get("negative")]
    st_runs = {"ST trainer fp32": _st_trainer(args, items, False)}
    if not args.skip_st_bf16:
        st_runs["ST trainer bf16=True"] = _st_trainer(args, items, True)
    for _, step in lib_runs.values():
        step()                                      # warm-up
    seconds = {name: [] for name in [*lib_runs, *st_runs]}
    pairs_done = {name: 0 for name in seconds}
    for _ in range(args.repeats):                   # interleaved rounds
        for name, (_, step) in lib_runs.items():
            for _ in range(args.train_steps):
                elapsed, n = step()
                seconds[name].append(elapsed)
                pairs_done[name] += n
        for name, step in st_runs.items():
            times = step(args.train_steps)
            seconds[name] += times
            pairs_done[name] += args.train_batch * len(times)
    base = pairs_done["lib.train fp32"] / sum(seconds["lib.train fp32"])
    rows = []
    for name, times in seconds.items():
        rate = pairs_done[name] / sum(times)
        rows.append({"step": "train", "variant": name, "seconds": float(np.median(times)), "steps": len(times),
                     "pairs_per_s": rate, "ratio_to_lib_fp32": rate / base,
                     "shape": f"batch {args.train_batch} + hard negatives, frozen word embeddings"})
    return rows


def bench_evaluate(args, data) -> list[dict]:
    if args.max_questions:
        data = load_lareqa("xquad-r", max_questions=args.max_questions)
    model = load_model(args.backbone, device="cpu")
    rows, summaries = [], {}
    for precision in ("fp32", "bf16"):
        outputs = os.environ.get("HBT_OUTPUTS")
        with tempfile.TemporaryDirectory() as empty_cache:
            os.environ["HBT_OUTPUTS"] = empty_cache
            try:
                start = time.perf_counter()
                evaluation = evaluate_lareqa(model, data, batch_size=args.batch_size, precision=precision)
                wall = time.perf_counter() - start
            finally:
                os.environ.pop("HBT_OUTPUTS") if outputs is None else os.environ.update(HBT_OUTPUTS=outputs)
        t = evaluation.timings
        encode_s = t["encode_questions_s"] + t["encode_candidates_s"]
        rank_s = t["search_s"] + t.get("neighbours_s", 0.0)
        summaries[precision] = evaluation.summary
        rows.append({"step": "evaluate", "variant": f"evaluate_lareqa {precision}", "seconds": wall,
                     "encode_s": encode_s, "rank_s": rank_s, "other_s": wall - encode_s - rank_s,
                     "shape": f"{len(data.questions)} questions x {len(data.candidates)} candidates",
                     "summary": {k: float(v) for k, v in evaluation.summary.items()}})
    # the fidelity guard: every summary metric within 0.002 of fp32, rank distance within 1%
    worst = max(abs(summaries["bf16"][k] - summaries["fp32"][k]) for k in summaries["fp32"]
                if not k.endswith("rank_distance"))
    rank_distance = [k for k in summaries["fp32"] if k.endswith("rank_distance")]
    worst_rank_distance = max((abs(summaries["bf16"][k] / summaries["fp32"][k] - 1) for k in rank_distance),
                              default=0.0)
    for row in rows:
        row.update(max_rank_distance_change=worst_rank_distance,
                   guard_holds=bool(worst <= 0.002 and worst_rank_distance <= 0.01))
    for row in rows:
        row.update(ratio_to_fp32=rows[0]["seconds"] / row["seconds"], max_summary_difference=worst)
    return rows


STEPS = {"encode": bench_encode, "ranking": bench_ranking, "train": bench_train, "evaluate": bench_evaluate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--n-texts", type=int, default=512, help="XQuAD-R candidate sentences to encode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="rounds per variant; the best is kept")
    parser.add_argument("--steps", nargs="+", default=["encode", "ranking"], choices=list(STEPS))
    parser.add_argument("--embeddings-from", default="", help="evaluation run whose cached embeddings to rank")
    parser.add_argument("--dim", type=int, default=384, help="dimension of the random embeddings")
    parser.add_argument("--skip-old", action="store_true", help="do not time the old ranking path")
    parser.add_argument("--train-batch", type=int, default=32, help="pairs per training batch (+ as many negatives)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed optimizer steps per variant and round")
    parser.add_argument("--max-questions", type=int, default=0, help="evaluate: questions per language; 0 = all")
    parser.add_argument("--skip-st-bf16", action="store_true", help="no SentenceTransformerTrainer bf16=True")
    args = parser.parse_args()

    data = load_lareqa("xquad-r")
    rows = [row for step in args.steps for row in STEPS[step](args, data)]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB
    result = {"rows": rows, "hardware": hardware_info("cpu", "auto"), "args": vars(args),
              "peak_rss_mb": peak_rss_mb, "load_average": os.getloadavg(), "versions": versions()}
    write_json(run_dir("bench") / f"speed-{args.backbone}.json", result)
    print(pd.DataFrame(rows).drop(columns=["summary"], errors="ignore").to_markdown(index=False, floatfmt=".4g"))
    print({k: result["hardware"][k] for k in ("cpu_model", "cpu_flags", "torch_threads", "precision")},
          f"peak RSS {peak_rss_mb:.0f} MB, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
