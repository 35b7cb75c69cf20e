"""Run notebook jobs on worker slots, each once the runs it needs are complete: one scheduler.

One worker runs the jobs one after the other in their order; ``workers`` > 1 as many at once,
each slot with its own environment (one GPU each, or a share of the CPU threads). Complete runs
are skipped without a worker; a failure blocks the jobs that need it. :mod:`lib.grid` plans the
jobs of a grid file and hands them here.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from lib.io import write_text
from lib.notebooks import accept_new_jobs, is_complete, stop_running_jobs
from lib.progress import GridProgress


@dataclass(frozen=True)
class Job:
    """One notebook execution: ``kind`` in train | evaluate | bias | report."""

    kind: str
    notebook: str
    run: str
    parameters: dict[str, Any]
    cell: Any = None                            # the lib.grid_plan.Cell it belongs to (None: no cell)
    dataset: str | None = None
    needs: tuple[str, ...] = ()                 # runs that must be complete first


def worker_environments(workers: int, devices: Sequence[str] | None = None,
                        cpu_count: int | None = None) -> list[dict[str, str]]:
    """The environment each worker adds to its jobs: one GPU each (round-robin over ``devices``: ids
    as in ``CUDA_VISIBLE_DEVICES``; ``None`` = every visible GPU), or, without GPUs, an equal share of
    the CPU cores as torch / OpenMP threads (unless ``OMP_NUM_THREADS`` is set already). A single
    worker with ``devices=None`` adds nothing: its jobs see every GPU and thread, as the process does."""
    if workers == 1 and devices is None:
        return [{}]
    if devices is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            devices = [d.strip() for d in visible.split(",") if d.strip()]
        else:
            devices = [str(i) for i in range(torch.cuda.device_count())]
    devices = [str(d) for d in devices]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (cpu_count or os.cpu_count() or 1) // workers))
    environments = []
    for worker in range(workers):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[worker % len(devices)]
        environments.append(env)
    return environments


ENDED = ("done", "skipped", "failed", "blocked", "not run", "interrupted")
SUCCEEDED = ("done", "skipped")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Schedule:
    """The state of a grid run: jobs waiting, jobs running on worker slots, and how each run ended."""

    jobs: list[Job]
    manifest: Path                                 # outputs/<grid>/: status.csv (this start) and history.csv
    environments: list[dict[str, str]]             # one per worker slot
    force: bool = False
    keep_going: bool = False
    pending: list[Job] = field(default_factory=list)
    running: dict = field(default_factory=dict)    # future -> (job, slot, started)
    free: list[int] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    stopping: bool = False                         # a job failed without keep_going: start nothing new
    progress: GridProgress | None = None           # the line printed as each job starts
    session: str = field(default_factory=_now)   # when this start of the grid began (UTC)

    def record(self, job: Job, state: str, started: float, error: str = "") -> None:
        """The job's end in ``status.csv`` (rewritten: this start's jobs) and ``history.csv`` (one
        line appended per job and start, never rewritten: every restart's record survives);
        ``error``: a failed job's last error line."""
        self.status[job.run] = state
        self.records.append({"kind": job.kind, "run": job.run, "status": state,
                             "seconds": time.perf_counter() - started, "error": error})
        if self.progress is not None:
            self.progress.job_ended(job.run, state, self.records[-1]["seconds"])
        write_text(self.manifest / "status.csv", pd.DataFrame(self.records).to_csv(index=False))
        history = self.manifest / "history.csv"
        line = pd.DataFrame([{"session": self.session, "ended": _now(), **self.records[-1]}])
        line.to_csv(history, mode="a", header=not history.exists(), index=False)

    def needs_of(self, job: Job) -> list[str]:
        """The runs a job waits for: those it needs that are part of this run; the report: all others."""
        if job.kind == "report":
            return [j.run for j in self.jobs if j.kind != "report"]
        planned = {j.run for j in self.jobs}
        return [n for n in job.needs if n in planned]

    def decide(self, job: Job) -> str | None:
        """``not run``, ``blocked``, ``skipped`` or ``start`` for a waiting job; None: keep waiting."""
        needs = self.needs_of(job)
        if self.stopping:
            return "not run"
        if job.kind == "report":                   # summarises whatever exists, once the rest has ended
            return "start" if all(self.status.get(n) in ENDED for n in needs) and self.free else None
        if any(self.status.get(n) in ("failed", "blocked", "not run") for n in needs):
            print(f"[blocked] {job.run}: needs {[n for n in needs if self.status.get(n) not in SUCCEEDED]}",
                  flush=True)
            return "blocked"
        if not all(self.status.get(n) in SUCCEEDED for n in needs):
            return None
        if not self.force and is_complete(job.run):
            print(f"[skip] {job.run}: complete", flush=True)
            return "skipped"
        return "start" if self.free else None


def _advance(schedule: Schedule, pool, execute: Callable) -> bool:
    """Start, skip or block the first waiting job that can be; False when none can."""
    for job in schedule.pending:
        state = schedule.decide(job)
        if state is None:
            continue
        schedule.pending.remove(job)
        if state != "start":
            schedule.record(job, state, time.perf_counter())
            return True
        slot = schedule.free.pop(0)
        env = schedule.environments[slot]
        line = schedule.progress.start_line(job.kind, job.run) if schedule.progress else f"[start] {job.kind} {job.run}"
        print(line + f" (worker {slot}" + "".join(f" {k}={v}" for k, v in env.items()) + ")", flush=True)
        future = pool.submit(execute, job.notebook, job.run, job.parameters,
                             force=schedule.force or job.kind == "report", env=env)
        schedule.running[future] = (job, slot, time.perf_counter())
        return True
    return False


def _collect_finished(schedule: Schedule) -> None:
    """Wait for at least one running job; record each finished one as done or failed, free its slot."""
    finished, _ = wait(list(schedule.running), return_when=FIRST_COMPLETED)
    for future in finished:
        job, slot, started = schedule.running.pop(future)
        schedule.free = sorted([*schedule.free, slot])
        error = future.exception()
        if error is None:
            print(f"[done] {job.run}: {time.perf_counter() - started:.0f} s", flush=True)
            schedule.record(job, "done", started)
        elif getattr(error, "interrupted", False):
            print(f"[interrupted] {job.run}", file=sys.stderr, flush=True)
            schedule.record(job, "interrupted", started)
        else:
            line = getattr(error, "error_line", "") or f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            print(f"[failed] {job.run}: {line} (the end of the log: outputs/{job.run}/runner.log)",
                  file=sys.stderr, flush=True)
            schedule.record(job, "failed", started, error=line)
            schedule.stopping = schedule.stopping or not schedule.keep_going


def _stop(schedule: Schedule) -> None:
    """Ctrl-C or SIGTERM: stop the running notebook jobs (each shuts its kernel down), record them as
    ``interrupted`` and the waiting ones as ``not run``."""
    print(f"[stopping] {len(schedule.running)} running job(s): "
          + ", ".join(job.run for job, _, _ in schedule.running.values()), file=sys.stderr, flush=True)
    stop_running_jobs()
    finished, _ = wait(list(schedule.running), timeout=30)
    for future, (job, _, started) in list(schedule.running.items()):
        done = future in finished and future.exception() is None
        schedule.record(job, "done" if done else "interrupted", started)
    schedule.running.clear()
    for job in list(schedule.pending):
        schedule.pending.remove(job)
        schedule.record(job, "not run", time.perf_counter())


def _run(schedule: Schedule, pool: ThreadPoolExecutor, execute: Callable) -> None:
    while schedule.pending or schedule.running:
        while _advance(schedule, pool, execute):
            pass
        if schedule.running:
            _collect_finished(schedule)
            continue
        for job in list(schedule.pending):          # nothing runs and nothing can start: never will
            schedule.pending.remove(job)
            schedule.record(job, "blocked", time.perf_counter())


def run_jobs(jobs: list[Job], execute: Callable, manifest: Path, workers: int = 1,
             devices: Sequence[str] | None = None, force: bool = False, keep_going: bool = False,
             estimates: dict[str, float] | None = None) -> pd.DataFrame:
    """Run ``jobs`` on ``workers`` slots: a job starts once every run it needs (that is part of
    ``jobs``) is complete, the report once everything else has ended; complete runs are skipped
    without a worker. Each slot keeps its environment (:func:`worker_environments`). A failure
    blocks the jobs that need it; without ``keep_going`` nothing new starts after it, the running
    jobs finish, and the rest is recorded as ``not run``. Returns the job table (kind, run, status,
    seconds), also written to ``manifest/status.csv``. Each job's start prints one progress line
    (``lib.progress``: job n of N, elapsed, remaining from ``estimates``, run -> seconds). Ctrl-C or
    SIGTERM stops the running notebook jobs, records them as ``interrupted`` and the others as
    ``not run``, and raises the KeyboardInterrupt again."""
    schedule = Schedule(jobs, manifest, worker_environments(workers, devices), force=force, keep_going=keep_going,
                        pending=list(jobs), free=list(range(workers)),
                        progress=GridProgress(len(jobs), dict(estimates or {}), workers))
    started = time.perf_counter()
    accept_new_jobs()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        _run(schedule, pool, execute)
    except KeyboardInterrupt:            # Ctrl-C, or SIGTERM through lib.cli
        _stop(schedule)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    table = pd.DataFrame(schedule.records)
    print(f"{manifest.name}: {len(table)} jobs in {time.perf_counter() - started:.0f} s; "
          + ", ".join(f"{k} {v}" for k, v in table.status.value_counts().items()), flush=True)
    return table
