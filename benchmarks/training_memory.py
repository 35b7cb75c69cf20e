"""Where a training run's resident memory goes, step by step (README "Speed", Memory).

Trains the default grid's hybrid cell (me5-small-q4, MLQA-R, seed 0, 40 steps of 32 pairs, the
machine's default precision and dropout masks) and prints, after every optimizer step, the
process's resident memory and its high-water mark from ``/proc/self/status`` (Linux), with the
seconds since the start. Run it under different glibc settings to see what the allocator keeps:

    python benchmarks/training_memory.py
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/training_memory.py    # freed activations returned
    MALLOC_ARENA_MAX=2 python benchmarks/training_memory.py

The run goes to ``HBT_OUTPUTS/memory-hybrid-s0`` (started over each time).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.train import TrainConfig, train  # noqa: E402


def memory_mb() -> dict[str, int]:
    """Resident memory now (VmRSS) and its peak so far (VmHWM), in MB."""
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) // 1024 for key in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    print("step | RSS MB | peak MB | s", flush=True)
    print(f"before | {memory_mb()['VmRSS']} | {memory_mb()['VmHWM']} | 0", flush=True)
    config = TrainConfig(backbone="me5-small-q4", sampler="hybrid", alpha=0.5, train_sources="mlqa-r",
                         seed=args.seed, steps=args.steps, batch_size=32, learning_rate=3e-5, temperature=0.05,
                         run=f"memory-hybrid-s{args.seed}", resume=False)

    def after_step(step: int) -> None:
        memory = memory_mb()
        print(f"{step} | {memory['VmRSS']} | {memory['VmHWM']} | {time.perf_counter() - started:.0f}", flush=True)
    result = train(config, progress=False, on_step_end=after_step)
    print(f"peak_memory_mb (metrics.json): {result.metrics.get('peak_memory_mb'):.0f}")


if __name__ == "__main__":
    main()
