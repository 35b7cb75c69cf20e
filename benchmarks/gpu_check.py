"""A GPU check of training at the paper's batch size, with and without gradient caching.

Trains the offline backbone me5-small-q4 on MLQA-R with the hybrid sampler at batch 100 in bf16 for
``--steps`` steps, once with ``mini_batch_size=0`` (the whole batch in one forward) and once with
gradient caching (``--mini-batch-size``, lib.gradcache), then evaluates each best model on XQuAD-R.
Prints pairs/s, peak GPU memory (``torch.cuda.max_memory_allocated``, reset between runs), the
validation loss and XQuAD-R's metrics; writes ``outputs/bench/gpu-check.json``. Offline: needs the
LAReQA files (LAREQA_DIR or the download cache) and the PyPI wheels of me5-small-q4 in the cache.

    LAREQA_DIR=... python benchmarks/gpu_check.py --steps 300          # about 10 minutes on one GPU

Not run in this project's sessions (no GPU): its figures are for whoever runs it.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from lib.evaluate import run_evaluation
from lib.io import run_dir, versions, write_json
from lib.train import TrainConfig, train


def check(args: argparse.Namespace, mini_batch_size: int) -> dict:
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    config = TrainConfig(backbone=args.backbone, sampler="hybrid", alpha=0.5, train_sources="mlqa-r",
                         batch_size=args.batch_size, mini_batch_size=mini_batch_size, steps=args.steps,
                         precision=args.precision, device=args.device, eval_every=max(1, args.steps // 3), patience=0,
                         checkpoint_every=0, run=f"gpu-check-b{args.batch_size}-mbs{mini_batch_size}", resume=False)
    result = train(config, progress=True)
    evaluation, _ = run_evaluation(str(result.best_model_dir), "xquad-r", batch_size=256, device=args.device,
                                   run=f"{config.run}-xquad-r", max_questions=args.max_questions)
    return {"mini_batch_size": mini_batch_size, "pairs_per_second": result.metrics["pairs_per_second"],
            "peak_memory_mb": result.metrics["peak_memory_mb"], "peak_memory_kind": result.metrics["peak_memory_kind"],
            "best_val_loss": result.metrics["best_val_loss"],
            "train_time_s": result.metrics["train_time_s"],
            **{f"xquad-r {name}": value for name, value in evaluation.summary.items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--mini-batch-size", type=int, default=16, help="chunk of the cached run (pairs)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--device", default="cuda", help="cuda (the check); cpu only to try the script itself")
    parser.add_argument("--max-questions", type=int, default=None, help="XQuAD-R questions per language (all)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a machine with a GPU")
    rows = [check(args, mini) for mini in (0, args.mini_batch_size)]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"device: {device}")
    print(pd.DataFrame(rows).T.to_markdown())
    write_json(run_dir("bench") / "gpu-check.json",
               {"device": device, "arguments": vars(args), "rows": rows, "versions": versions()})


if __name__ == "__main__":
    main()
