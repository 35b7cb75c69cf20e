"""Run notebooks with papermill, one folder per run, skipping runs that are already complete.

``python -m lib.runner params/main.yaml`` executes every run the file lists (each a notebook
and its parameters), writes each executed notebook next to its outputs in ``outputs/<run>/``,
and ends with a summary table of every run's metrics (``outputs/<summary>/summary.{md,csv}``).
A run counts as complete when its ``metrics.json`` exists (it is written last and atomically);
an interrupted run is simply executed again (training resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lib.io import PROJECT_ROOT, read_json, run_dir, write_json, write_text

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def execute(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
            log_output: bool = False) -> Path:
    """Execute ``notebooks/<notebook>`` with ``parameters`` (plus ``run``) into ``outputs/<run>/``."""
    import papermill

    path = run_dir(run)
    if not force and (path / "metrics.json").is_file():
        print(f"[skip] {run}: complete")
        return path
    source = Path(notebook) if Path(notebook).is_absolute() else NOTEBOOKS / notebook
    if not source.is_file():
        raise FileNotFoundError(f"notebook {notebook} not found (a name in notebooks/ or an absolute path)")
    started = time.perf_counter()
    print(f"[run ] {run}: {notebook} {parameters}", flush=True)
    papermill.execute_notebook(str(source), str(path / source.name), parameters={**parameters, "run": run},
                               cwd=str(source.parent), log_output=log_output, progress_bar=False)
    print(f"[done] {run}: {time.perf_counter() - started:.0f} s", flush=True)
    return path


def execute_subprocess(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
                       env: dict[str, str] | None = None) -> Path:
    """:func:`execute` in a fresh Python process whose environment adds ``env`` (a grid worker's GPU
    or thread count); its output goes to ``outputs/<run>/runner.log``, whose end a failure quotes."""
    import json
    import os
    import subprocess
    import sys

    path = run_dir(run)
    if not force and (path / "metrics.json").is_file():
        print(f"[skip] {run}: complete")
        return path
    command = [sys.executable, "-m", "lib.runner", "--execute", notebook, "--run", run,
               "--parameters", json.dumps(parameters)] + (["--force"] if force else [])
    log = path / "runner.log"
    with open(log, "w", encoding="utf-8") as handle:
        result = subprocess.run(command, env={**os.environ, **(env or {})}, cwd=str(PROJECT_ROOT),
                                stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{notebook} for run {run} failed (exit {result.returncode}); the end of "
                           f"outputs/{run}/runner.log:\n{tail}")
    return path


TRAINING_COLUMNS = ("sampler", "alpha", "steps", "batch_size", "best_step", "best_val_loss",
                    "pairs_per_second", "peak_memory_mb", "wall_time_s")


def collect(runs: list[str]) -> pd.DataFrame:
    """One row per evaluation run: its backbone, dataset, candidates and summary metrics."""
    rows = []
    for run in runs:
        path = run_dir(run)
        if not (path / "metrics.json").is_file():
            continue
        metrics, config = read_json(path / "metrics.json"), read_json(path / "config.json")
        if config.get("task") != "evaluate" or "summary" not in metrics:
            continue
        settings = config.get("backbone_settings", {})
        rows.append({"run": run, "backbone": settings.get("name", config.get("backbone")),
                     "dataset": config.get("dataset"), "candidates": config.get("candidate_context"),
                     **metrics["summary"], "wall_s": metrics.get("timings", {}).get("total_s")})
    return pd.DataFrame(rows)


def collect_training(runs: list[str]) -> pd.DataFrame:
    """One row per training run (03_train): sampler, steps, validation loss, speed and memory."""
    rows = []
    for run in runs:
        path = run_dir(run)
        if not (path / "metrics.json").is_file() or not (path / "train_log.csv").is_file():
            continue
        metrics, config = read_json(path / "metrics.json"), read_json(path / "config.json")
        merged = {**config, **metrics}
        rows.append({"run": run, **{name: merged.get(name) for name in TRAINING_COLUMNS}})
    return pd.DataFrame(rows)


def run_plan(plan_file: str | Path, force: bool = False, collect_only: bool = False) -> pd.DataFrame:
    """Execute every run of a plan (unless ``collect_only``), then write its summary tables."""
    plan = yaml.safe_load(Path(plan_file).read_text(encoding="utf-8"))
    names = []
    for entry in plan["runs"]:
        entry = dict(entry)
        notebook, run = entry.pop("notebook"), entry.pop("run")
        if not collect_only:
            execute(notebook, run, entry, force=force)
        names.append(run)
    table, training = collect(names), collect_training(names)
    summary = run_dir(plan.get("summary", "summary"))
    text = "## Evaluations\n\n" + table.to_markdown(index=False, floatfmt=".3f") + "\n"
    if len(training):
        text += "\n## Training runs\n\n" + training.to_markdown(index=False, floatfmt=".3f") + "\n"
        write_text(summary / "training.csv", training.to_csv(index=False))
    write_text(summary / "summary.md", text)
    write_text(summary / "summary.csv", table.to_csv(index=False))
    write_json(summary / "plan.json", plan)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", nargs="?", help="YAML file listing runs (params/main.yaml)")
    parser.add_argument("--force", action="store_true", help="re-run complete runs too")
    parser.add_argument("--collect-only", action="store_true", help="only gather the complete runs into the summary")
    parser.add_argument("--execute", metavar="NOTEBOOK", help="execute one notebook instead of a plan (with --run)")
    parser.add_argument("--run", help="with --execute: the output folder")
    parser.add_argument("--parameters", default="{}", help="with --execute: the notebook's parameters as JSON")
    args = parser.parse_args(argv)
    if args.execute:
        import json

        if not args.run:
            parser.error("--execute needs --run")
        execute(args.execute, args.run, json.loads(args.parameters), force=args.force)
        return
    if not args.plan:
        parser.error("give a plan file (params/main.yaml), or --execute NOTEBOOK --run RUN")
    table = run_plan(args.plan, force=args.force, collect_only=args.collect_only)
    print(table.to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
