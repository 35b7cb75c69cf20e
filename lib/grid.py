"""The experiment in one command: a grid of training runs, their evaluations, bias and report.

``python -m lib.grid params/grid.yaml`` expands a grid file into cells and runs, for each cell,
``03_train`` -> ``04_evaluate`` on every evaluation dataset (backbone = the trained model
folder) -> ``05_bias`` on each LAReQA evaluation, and ends with ``06_report`` over the whole grid.
Any dataset with a registered evaluator (``lib.evaluate.DATASETS``: xquad-r, mlqa-r, miracl,
tatoeba) can be evaluated; bias runs, debias variants and the samplers' comparisons need LAReQA's
parallel pool (:func:`analyses_bias`), so MIRACL and Tatoeba runs are evaluations only, and the
report shows them in a descriptive table per dataset.
Every notebook runs through :mod:`lib.notebooks` (papermill), so complete runs are skipped and an
interrupted training run resumes from its checkpoint when the grid is started again. One
scheduler (:func:`lib.scheduler.run_jobs`) runs the jobs: ``--workers 1`` (the default) one after
the other in plan order, more workers as many at once, each once the runs it needs are complete.
The grid file's format, its cells and the plan of its jobs are :mod:`lib.grid_plan`.

A complete run (its completion marker exists) is skipped only if the parameters it was executed
with (papermill records them in the executed notebook) agree with the grid's; otherwise the grid
stops and names the differing parameters (change ``tag``, delete the run, or ``--force``).
What 06_report shows is built by :mod:`lib.gather` (results) and :mod:`lib.report` (tables, verdict).

    run_grid(load_grid("params/grid-smoke.yaml"))    # or: python -m lib.grid params/grid-smoke.yaml
    python -m lib.grid params/grid.yaml --dry-run     # the jobs and the time estimate
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from lib.backbones import BackboneError
from lib.cli import run_cli
from lib.downloads import download_table, preflight
from lib.grid_plan import (Grid, GridError, cell_table, check_notebook_parameters, estimate_arithmetic, estimate_seconds,
                           expand_cells, grid_sources, load_grid, plan_jobs, plan_needs)
from lib.grid_systems import MERGE_JOB
from lib.io import outputs_dir, run_dir, write_json, write_text
from lib.notebooks import execute_subprocess, executed_parameters, is_complete
from lib.scheduler import Job, run_jobs
from lib.sources import TRANSLATE_JOB, translate_sources_job
from lib.train import TrainError
from lib.weight_systems import build_weight_system


JOB_KINDS = ("translate", "train", "merge", "evaluate", "bias", "report")


def _same(key: str, ours: Any, theirs: Any) -> bool:
    if key == "backbone" and isinstance(ours, str) and isinstance(theirs, str) and ("/" in ours or "/" in theirs):
        return Path(ours).parts[-2:] == Path(theirs).parts[-2:]      # outputs/ may have moved
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and not isinstance(ours, bool):
        return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=0.0)
    return json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


def parameter_conflicts(job: Job) -> dict[str, tuple[Any, Any]]:
    """Parameters of a complete run that differ from the grid's: ``{name: (grid, run)}``."""
    recorded = executed_parameters(job.run, job.notebook)
    if recorded is None:
        return {}
    if job.kind == "evaluate" and "debias" in job.parameters:
        recorded.setdefault("debias", "none")       # made before debias existed: it has no variant runs
    return {k: (v, recorded[k]) for k, v in job.parameters.items()
            if k in recorded and not _same(k, v, recorded[k])}


def check_complete_runs(grid: Grid, jobs: Sequence[Job]) -> None:
    """Stop before anything runs if a complete run was made with other parameters than the grid's."""
    for job in jobs:
        if job.kind != "report" and is_complete(job.run):
            conflicts = parameter_conflicts(job)
            if conflicts:
                detail = ", ".join(f"{k}: grid {ours!r} vs run {theirs!r}" for k, (ours, theirs) in conflicts.items())
                raise GridError(
                    f"run {job.run} is complete but was made with other parameters ({detail}); set a "
                    f"different `tag` in {grid.source or grid.name}, delete outputs/{job.run}/, or use --force")


LOCK_FILE = ".grid.lock"


@contextlib.contextmanager
def outputs_lock(grid: Grid) -> Iterator[Path]:
    """Hold an exclusive lock on the outputs folder (``outputs/.grid.lock``, ``fcntl.flock``) while a
    grid runs: a second grid on the same folder is refused with the holder's pid, host, grid file
    and start time. The operating system releases the lock when the holder's process ends, however
    it ends; the file itself stays (its content describes the last holder)."""
    folder = outputs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown holder"
            raise GridError(f"outputs folder {folder} is in use by another grid ({holder}); wait for it to end, "
                            "or point HBT_OUTPUTS at another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, grid {grid.source or grid.name}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        handle.flush()
        yield path
    finally:
        handle.close()          # closing releases the lock


def run_grid(grid: Grid | str | Path, force: bool = False, keep_going: bool = False,
             execute: Callable | None = None, kinds: Sequence[str] = JOB_KINDS,
             check_parameters: bool = True, workers: int = 1, devices: Sequence[str] | None = None) -> pd.DataFrame:
    """Execute the grid's jobs (complete ones are skipped) and return the job table.

    ``workers`` jobs run at once (:func:`lib.scheduler.run_jobs`; one worker = one job after the
    other, in plan order), each as soon as the runs it needs are complete. ``execute(notebook, run,
    parameters, force=..., env=...)`` defaults to :func:`lib.notebooks.execute_subprocess`; ``env``
    is the worker's environment (:func:`lib.scheduler.worker_environments`). ``keep_going`` continues after a failed job (its dependants are
    blocked) and raises at the end; the report always runs again (it summarises whatever exists).
    """
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    if workers < 1:
        raise GridError(f"workers={workers}: expected 1 or more")
    unknown = sorted(set(kinds) - set(JOB_KINDS))
    if unknown:
        close = {k: difflib.get_close_matches(k, JOB_KINDS, n=1) for k in unknown}
        hints = "".join(f"; {k}: did you mean {m[0]}?" for k, m in close.items() if m)
        raise GridError(f"--only {','.join(kinds)}: unknown job kind(s) {unknown}{hints}; expected a comma-separated "
                        f"list of {', '.join(JOB_KINDS)}")
    with outputs_lock(grid):
        return _run_grid(grid, force, keep_going, execute, kinds, check_parameters, workers, devices)


def _run_grid(grid: Grid, force: bool, keep_going: bool, execute: Callable | None, kinds: Sequence[str],
              check_parameters: bool, workers: int, devices: Sequence[str] | None) -> pd.DataFrame:
    execute = execute or execute_subprocess
    notebook_execute = execute

    def execute(notebook, run, parameters, force=False, env=None):    # merge jobs are modules, not notebooks
        if notebook == MERGE_JOB:
            return build_weight_system(run, parameters, force=force)
        if notebook == TRANSLATE_JOB:
            return translate_sources_job(run, parameters, force=force)
        return notebook_execute(notebook, run, parameters, force=force, env=env)
    refuse_unless_ready(grid, workers)
    jobs = [job for job in plan_jobs(grid) if job.kind in kinds]
    if check_parameters and notebook_execute is execute_subprocess:
        check_notebook_parameters(grid)
    if not force:
        check_complete_runs(grid, jobs)
    manifest = run_dir(grid.name)
    write_json(manifest / "grid.json", {"grid": asdict(grid), "jobs": [
        {"kind": j.kind, "notebook": j.notebook, "run": j.run, "parameters": j.parameters} for j in jobs]})
    write_text(manifest / "cells.csv", cell_table(grid).to_csv(index=False))
    estimates = estimate_seconds(grid).set_index("run").estimate_s.to_dict()
    table = run_jobs(jobs, execute, manifest, workers=workers, devices=devices, force=force, keep_going=keep_going,
                     estimates={job.run: estimates.get(job.run, 0.0) for job in jobs})
    failed = table[table.status.isin(["failed", "blocked", "not run"])]
    if len(failed):
        errors = "".join(f"\n  {row.run}: {row.error}" for row in failed.itertuples() if row.error)
        raise GridError(f"{len(failed)} job(s) failed, were blocked or not run: {failed.run.tolist()}{errors}\n"
                        f"(each log: outputs/<run>/runner.log; every job: outputs/{grid.name}/status.csv)")
    return table


# --------------------------------------------------------------------------------------------
# command line


def dry_run(grid: Grid, workers: int = 1) -> None:
    """``--dry-run``: every job with its estimate, the totals, and the downloads the registries
    declare for the grid's backbones, training sources and every dataset some job evaluates."""
    table = estimate_seconds(grid)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    print(f"{len(table)} jobs, {len(expand_cells(grid))} cells; estimate {table.estimate_s.sum() / 3600:.2f} h "
          f"in all, {table.remaining_s.sum() / 3600:.2f} h remaining")
    print("estimate, the arithmetic:\n" + "\n".join(f"  {line}" for line in estimate_arithmetic(grid)))
    sources = grid_sources(grid)
    evaluated = list(dict.fromkeys(job.dataset for job in plan_jobs(grid) if job.kind == "evaluate"))
    downloads = download_table(grid.backbones, sources, evaluated, grid.train.get("translation_model"))
    if len(downloads):
        print(downloads.to_string(index=False, na_rep="unknown"))
        unknown = downloads[downloads.gb.isna()].name.tolist()
        print(f"downloads: {downloads.gb.sum():.1f} GB declared"
              + (f", {len(unknown)} of unknown size ({', '.join(unknown)})" if unknown else ""))
    checks = preflight(plan_needs(grid, workers))
    print("plan-time checks (a grid run refuses to start unless all pass):")
    print("\n".join(str(check) for check in checks))


def refuse_unless_ready(grid: Grid, workers: int = 1) -> None:
    """The plan-time checks (``lib.downloads.preflight``) before any download or job: a GridError
    naming every refused check and its fix."""
    refused = [check for check in preflight(plan_needs(grid, workers)) if not check.ok]
    if refused:
        raise GridError("the plan is refused before any download or job:\n" + "\n".join(str(c) for c in refused))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file, e.g. params/grid.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and the time estimate, run nothing")
    parser.add_argument("--force", action="store_true", help="re-run complete runs too")
    parser.add_argument("--keep-going", action="store_true", help="continue after a failed job")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    parser.add_argument("--only", default=",".join(JOB_KINDS),
                        help="comma-separated job kinds to run (default: all)")
    parser.add_argument("--workers", type=int, default=1,
                        help="jobs at once, each in its own process: one per GPU, or a share of the CPU cores")
    parser.add_argument("--devices", default=None,
                        help="comma-separated GPU ids for the workers (default: every visible GPU)")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    if args.dry_run:
        dry_run(grid, args.workers)
        return
    devices = [d for d in args.devices.split(",") if d] if args.devices is not None else None
    run_grid(grid, force=args.force, keep_going=args.keep_going, kinds=tuple(k.strip() for k in args.only.split(",")),
             workers=args.workers, devices=devices)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.grid", (TrainError, BackboneError)))