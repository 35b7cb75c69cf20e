"""A grid beyond one machine: its jobs submitted to Slurm with submitit, one job per notebook run.

The same jobs as ``lib.grid`` plans (one training, evaluation, bias analysis per cell, then the
report), the same completion marker deciding what is done (``lib.notebooks.is_complete``: a
complete run is not submitted), and the same notebook runner inside each job
(``lib.notebooks.execute_subprocess``: ``outputs/<run>/runner.log``). Dependencies go to Slurm:
a job that needs runs starts ``afterok`` of their jobs (the report ``afterany``: it summarises
whatever exists). On an executor without dependencies (submitit's ``local`` and ``debug``, for
tests and single machines), the submitting process waits for the jobs a job needs before
submitting it. Training on several GPUs inside one job stays ``torchrun`` (``lib.train``).

    python -m lib.slurm params/grid.yaml --partition gpu --gpus-per-node 1 --timeout-min 240
    python -m lib.slurm params/grid-smoke.yaml --cluster local           # the same, on this machine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit

from lib.cli import run_cli
from lib.grid_plan import Grid, load_grid, plan_jobs
from lib.io import outputs_dir
from lib.notebooks import execute_subprocess, execute_when_ready, is_complete
from lib.scheduler import Job


def slurm_dependency(kind: str, job_ids: Sequence[str]) -> str | None:
    """sbatch's ``--dependency`` for a job that needs ``job_ids``: ``afterok:...`` (``afterany`` for the report)."""
    if not job_ids:
        return None
    return ("afterany:" if kind == "report" else "afterok:") + ":".join(job_ids)


def make_executor(cluster: str | None = None, folder: str | Path | None = None, **parameters: Any) -> submitit.AutoExecutor:
    """submitit's ``AutoExecutor`` (``cluster``: slurm | local | debug; None: Slurm where there is one),
    logs in ``outputs/submitit/``; ``parameters``: its ``update_parameters`` (``timeout_min``,
    ``gpus_per_node``, ``slurm_partition``, ...)."""
    executor = submitit.AutoExecutor(folder=str(folder or outputs_dir() / "submitit" / "%j"), cluster=cluster)
    executor.update_parameters(**parameters)
    return executor


def submit_grid(grid: Grid | str | Path, executor: submitit.AutoExecutor, force: bool = False,
                kinds: Sequence[str] = ("train", "evaluate", "bias", "report"),
                execute: Callable = execute_subprocess) -> dict[str, submitit.Job]:
    """Submit every job of the grid that is not complete, one submitit job each, in plan order;
    returns run -> submitit job. A job that needs a run submitted here waits for it (Slurm:
    ``--dependency``; other executors: this process waits before submitting it)."""
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    jobs = [job for job in plan_jobs(grid) if job.kind in kinds]
    submitted: dict[str, submitit.Job] = {}
    for job in jobs:
        if job.kind != "report" and not force and is_complete(job.run):
            print(f"[skip] {job.run}: complete", flush=True)
            continue
        needs = _needs(job, jobs)
        waiting_for = [submitted[name] for name in needs if name in submitted]
        dependency = slurm_dependency(job.kind, [j.job_id for j in waiting_for])
        if executor.cluster == "slurm":
            executor.update_parameters(slurm_dependency=dependency)
        else:
            for needed in waiting_for:
                needed.exception()           # wait; a failure shows in execute_when_ready's check
        executor.update_parameters(name=job.run)
        submitted[job.run] = executor.submit(execute_when_ready, job.notebook, job.run, job.parameters,
                                             needs if job.kind != "report" else (), force or job.kind == "report",
                                             execute)
        print(f"[submitted] {job.kind} {job.run}: job {submitted[job.run].job_id}"
              + (f" ({dependency})" if dependency else ""), flush=True)
    return submitted


def _needs(job: Job, jobs: Sequence[Job]) -> list[str]:
    """Runs a job waits for: what it needs; the report: every other job of the grid."""
    if job.kind == "report":
        return [other.run for other in jobs if other.kind != "report"]
    return list(job.needs)


def main(argv: Sequence[str] | None = None) -> dict[str, submitit.Job]:
    parser = argparse.ArgumentParser(prog="python -m lib.slurm", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file, e.g. params/grid.yaml")
    parser.add_argument("--cluster", default=None, help="slurm | local | debug (default: Slurm where sbatch exists)")
    parser.add_argument("--partition", default=None, help="Slurm partition")
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--mem-gb", type=float, default=32)
    parser.add_argument("--timeout-min", type=int, default=240, help="time limit of each job")
    parser.add_argument("--force", action="store_true", help="submit complete runs too")
    parser.add_argument("--wait", action="store_true", help="wait for every job and print how each ended")
    args = parser.parse_args(argv)
    parameters = {"timeout_min": args.timeout_min, "gpus_per_node": args.gpus_per_node,
                  "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb}
    if args.partition:
        parameters["slurm_partition"] = args.partition
    submitted = submit_grid(args.grid, make_executor(args.cluster, **parameters), force=args.force)
    if args.wait:
        for run, job in submitted.items():
            error = job.exception()
            print(f"[{'failed' if error else 'done'}] {run}" + (f": {error}" if error else ""), flush=True)
    return submitted


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.slurm"))
