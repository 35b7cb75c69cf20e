"""The experiment in one command: a grid of training runs, their evaluations, bias and report.

``python -m lib.grid params/grid.yaml`` expands a grid file into cells and runs, for each cell,
``03_train`` -> ``04_evaluate`` on every evaluation dataset (backbone = the trained model
folder) -> ``05_bias`` on each evaluation, and ends with ``06_report`` over the whole grid.
Every notebook runs through :func:`lib.runner.execute`, so complete runs are skipped and an
interrupted training run resumes from its checkpoint when the grid is started again.

A grid file (``params/grid*.yaml``) lists::

    backbones: [me5-small-q4]                 # params/backbones/<name>.yaml
    samplers: [en, mono, cross, hybrid]       # lib.sampling.SAMPLERS
    seeds: [0, 1, 2]                          # default for every sampler ...
    seeds_by_sampler: {en: [0]}               # ... unless overridden here
    alphas: [0.5]                             # hybrid only
    train_datasets: [mlqa-r]                  # each entry one training mixture ("mlqa-r,xquad-r") ...
    eval_datasets: [xquad-r]                  # ... evaluated on these, unless the entry says
                                              # {train: xquad-r, evaluate: [mlqa-r]}
    zero_shot: true                           # add the untrained backbone (one cell per backbone)
    train: {steps: 60, batch_size: 32, ...}   # fixed parameters of 03_train
    evaluate: {batch_size: 64, ...}           # fixed parameters of 04_evaluate
    bias: {top_k: 10}                         # fixed parameters of 05_bias
    report: {run: report, resamples: 10000}   # 06_report's output folder and parameters

Cells = backbones x training mixtures x (sampler, alpha, seed); run names are deterministic:

* training     ``train-<backbone>-<sampler>[-a<alpha>]-<sources>-s<seed>[-<tag>]``
  (sources joined by ``+``), e.g. ``train-me5-small-q4-hybrid-a0.5-mlqa-r-s0``;
* evaluation   ``eval-<training run>-<dataset>[-paragraph]``;
  zero-shot    ``zeroshot-<backbone>-<dataset>-<candidate context>`` (the name ``make run`` uses);
* bias         ``bias-<evaluation run>``; the samplers side by side (zero-shot and each
  sampler's first seed): ``bias-<grid>-<backbone>-<sources>-<dataset>``.

A complete run (its ``metrics.json`` exists) is skipped only if the parameters it was executed
with (papermill records them in the executed notebook) agree with the grid's; otherwise the grid
stops and names the differing parameters (change ``tag``, delete the run, or ``--force``).

What 06_report shows is built here too: :func:`grid_results` (one row per cell and dataset, from
each run's metrics.json) -> :func:`seed_summary` (mean, std, n over seeds) -> the paper-style
tables, :func:`paper_side_by_side` (``lib/reference``), :func:`significance_table`
(``lib.significance``); :func:`build_report` gathers them, :func:`write_report` writes them.

    grid = load_grid("params/grid-smoke.yaml")
    jobs = plan_jobs(grid)                    # in execution order
    run_grid(grid)                            # or: python -m lib.grid params/grid-smoke.yaml
    python -m lib.grid params/grid.yaml --dry-run   # the jobs and the time estimate
"""

from __future__ import annotations

import argparse
import ast
import importlib.resources
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml

from lib.io import PROJECT_ROOT, outputs_dir, read_json, run_dir, write_json, write_text

NOTEBOOKS = {"train": "03_train.ipynb", "evaluate": "04_evaluate.ipynb", "bias": "05_bias.ipynb",
             "report": "06_report.ipynb"}
ZERO_SHOT = "zero-shot"
CANDIDATE_CONTEXTS = ("sentence", "paragraph")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
# the paper's model names for our registry backbones (lib/reference/paper_2408.10536.csv)
PAPER_MODELS = {"xlmr-base": "xlmr", "labse": "labse"}
PAPER_SAMPLERS = {"mono": "mono", "cross": "cross", "hybrid a=0.5": "hybrid"}
LAREQA_SAMPLERS = {"en": "en-en", "xx": "x-x", "mono": "x-x-mono", "cross": "x-y"}


class GridError(ValueError):
    """A grid file or a grid run is inconsistent; the message names the key or run and the fix."""


# --------------------------------------------------------------------------------------------
# the grid file


@dataclass
class Grid:
    """A grid file, resolved (see the module docstring for the keys)."""

    name: str
    backbones: list[str]
    samplers: list[str]
    train_datasets: list[dict[str, Any]]    # [{train: "mlqa-r", evaluate: ["xquad-r"]}] once loaded
    eval_datasets: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    seeds_by_sampler: dict[str, list[int]] = field(default_factory=dict)
    alphas: list[float] = field(default_factory=lambda: [0.5])
    zero_shot: bool = True
    candidate_context: str = "sentence"
    model_folder: str = "model"             # which folder of a training run is evaluated
    tag: str = ""                           # appended to training run names
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    bias: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    source: str = ""                        # the file it came from (params/<name>.yaml)

    @property
    def report_run(self) -> str:
        return str(self.report.get("run", f"report-{self.name}"))

    def seeds_for(self, sampler: str) -> list[int]:
        return [int(s) for s in self.seeds_by_sampler.get(sampler, self.seeds)]


# parameters a grid sets itself, per notebook: the fixed sections may not override them
RESERVED = {"train": {"backbone", "sampler", "alpha", "train_sources", "seed", "run"},
            "evaluate": {"backbone", "dataset", "candidate_context", "run"},
            "bias": {"runs", "run"}, "report": {"grid", "run", "extra_runs"}}


def _as_list(value, key: str, source: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    if not isinstance(value, list):
        raise GridError(f"{source}: {key} must be a list, got {type(value).__name__}")
    return value


def _mixture(entry, eval_datasets: list[str], source: str) -> dict[str, Any]:
    """A training mixture as ``{"train": "mlqa-r,xquad-r", "evaluate": [...]}`` (sources comma-separated)."""
    if isinstance(entry, str):
        entry = {"train": entry}
    if not isinstance(entry, dict) or "train" not in entry or set(entry) - {"train", "evaluate"}:
        raise GridError(f"{source}: a train_datasets entry is a string or {{train: ..., evaluate: [...]}}, got {entry!r}")
    sources = [s.strip() for s in str(entry["train"]).split(",") if s.strip()]
    evaluate = _as_list(entry.get("evaluate"), "train_datasets.evaluate", source) or list(eval_datasets)
    return {"train": ",".join(sources), "evaluate": [str(d) for d in evaluate]}


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file: ``load_grid("params/grid.yaml")``.

    A bare name (``"grid-smoke"``) means ``params/<name>.yaml``.
    """
    path = Path(path)
    if not path.suffix and not path.exists():
        path = PROJECT_ROOT / "params" / f"{path.name}.yaml"
    if not path.is_file():
        raise GridError(f"grid file {path} not found; grids live in params/grid*.yaml")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise GridError(f"{path}: expected a mapping of grid keys")
    known = {f.name for f in fields(Grid)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GridError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    values = dict(raw)
    values.setdefault("name", path.stem)
    for key in ("backbones", "samplers", "train_datasets", "eval_datasets", "seeds", "alphas"):
        if key in values:
            values[key] = _as_list(values[key], key, str(path))
    for key in ("train", "evaluate", "bias", "report", "estimate", "seeds_by_sampler"):
        values[key] = values.get(key) or {}
        if not isinstance(values[key], dict):
            raise GridError(f"{path}: {key} must be a mapping")
    values["seeds_by_sampler"] = {k: _as_list(v, f"seeds_by_sampler.{k}", str(path))
                                  for k, v in values["seeds_by_sampler"].items()}
    missing = [k for k in ("backbones", "eval_datasets") if k not in values]
    if missing:
        raise GridError(f"{path}: missing keys {missing} (see lib/grid.py for the format)")
    values.setdefault("samplers", [])          # none: a zero-shot-only grid
    values["train_datasets"] = [_mixture(entry, values["eval_datasets"], str(path))
                                for entry in values.get("train_datasets", [])]
    grid = Grid(**values, source=str(path))
    validate_grid(grid)
    return grid


def validate_grid(grid: Grid) -> None:
    """Names exist (backbones, samplers, datasets), run names are valid, sections don't clash."""
    from lib.backbones import available_backbones
    from lib.evaluate import LAREQA_DATASETS
    from lib.sampling import SAMPLERS

    where = grid.source or grid.name
    if not RUN_NAME.match(grid.name):
        raise GridError(f"{where}: name {grid.name!r} must be a folder name (letters, digits, . _ + = -)")
    if not grid.backbones:
        raise GridError(f"{where}: backbones is empty; name at least one of {available_backbones()}")
    for backbone in grid.backbones:
        if backbone not in available_backbones():
            raise GridError(f"{where}: unknown backbone {backbone!r}; expected one of {available_backbones()} "
                            "(params/backbones/*.yaml)")
    for sampler in [*grid.samplers, *grid.seeds_by_sampler]:
        if sampler not in SAMPLERS:
            raise GridError(f"{where}: unknown sampler {sampler!r}; expected one of {SAMPLERS}")
    if not grid.samplers and not grid.zero_shot:
        raise GridError(f"{where}: no sampler and zero_shot false: the grid has no cell")
    if grid.samplers and not grid.train_datasets:
        raise GridError(f"{where}: samplers given but train_datasets is empty")
    for alpha in grid.alphas:
        if not 0 <= float(alpha) <= 1:
            raise GridError(f"{where}: alpha {alpha!r} must lie in [0, 1]")
    if not grid.eval_datasets:
        raise GridError(f"{where}: eval_datasets is empty; expected some of {LAREQA_DATASETS}")
    for dataset in grid.eval_datasets:
        if dataset not in LAREQA_DATASETS:
            raise GridError(f"{where}: unknown evaluation dataset {dataset!r}; expected one of {LAREQA_DATASETS}")
    for mixture in grid.train_datasets:
        sources = [s for s in mixture["train"].split(",") if s]
        if not sources:
            raise GridError(f"{where}: empty training mixture in train_datasets")
        for dataset in mixture["evaluate"]:
            if dataset not in LAREQA_DATASETS:
                raise GridError(f"{where}: unknown evaluation dataset {dataset!r}; expected one of {LAREQA_DATASETS}")
        overlap = sorted(set(sources) & set(mixture["evaluate"]))
        if overlap:
            raise GridError(f"{where}: training mixture {mixture['train']!r} is evaluated on {overlap}, which it "
                            "trains on: train on mlqa-r and evaluate on xquad-r, or the reverse")
    if grid.candidate_context not in CANDIDATE_CONTEXTS:
        raise GridError(f"{where}: candidate_context {grid.candidate_context!r}: expected one of {CANDIDATE_CONTEXTS}")
    for section in ("train", "evaluate", "bias", "report"):
        clash = sorted(set(getattr(grid, section)) & (RESERVED[section] - ({"run"} if section == "report" else set())))
        if clash:
            raise GridError(f"{where}: {section} sets {clash}, which the grid sets per cell; remove them")
    for seeds in [grid.seeds, *grid.seeds_by_sampler.values()]:
        if not seeds or any(not isinstance(s, int) for s in seeds):
            raise GridError(f"{where}: seeds must be non-empty lists of integers, got {seeds!r}")
    for job in plan_jobs(grid):
        if not RUN_NAME.match(job.run):
            raise GridError(f"{where}: run name {job.run!r} is not a valid folder name; check tag and datasets")


# --------------------------------------------------------------------------------------------
# cells and jobs


def _alpha_text(alpha: float) -> str:
    return f"{float(alpha):g}"


def system_name(sampler: str, alpha: float | None = None) -> str:
    """How a configuration is named in tables: ``mono``, ``hybrid a=0.5``, ``zero-shot``."""
    return f"hybrid a={_alpha_text(alpha)}" if sampler == "hybrid" and alpha is not None else sampler


def train_run_name(backbone: str, sampler: str, alpha: float | None, sources: str, seed: int, tag: str = "") -> str:
    """``train-me5-small-q4-hybrid-a0.5-mlqa-r-s0``: alpha only for hybrid, sources joined by ``+``."""
    parts = ["train", backbone, sampler]
    if sampler == "hybrid":
        parts.append(f"a{_alpha_text(alpha)}")
    parts += ["+".join(s.strip() for s in sources.split(",") if s.strip()), f"s{seed}"]
    if tag:
        parts.append(tag)
    return "-".join(parts)


def eval_run_name(train_run: str, dataset: str, candidate_context: str = "sentence") -> str:
    """``eval-<train run>-<dataset>``, ``-paragraph`` appended for paragraph candidates."""
    return f"eval-{train_run}-{dataset}" + ("" if candidate_context == "sentence" else f"-{candidate_context}")


def zero_shot_run_name(backbone: str, dataset: str, candidate_context: str = "sentence") -> str:
    """``zeroshot-me5-small-q4-xquad-r-sentence`` (the name params/main.yaml gives the same run)."""
    return f"zeroshot-{backbone}-{dataset}-{candidate_context}"


def bias_run_name(eval_run: str) -> str:
    return f"bias-{eval_run}"


@dataclass(frozen=True)
class Cell:
    """One configuration: a backbone trained with one sampler, alpha, seed and training mixture
    (``sampler == "zero-shot"``: the untrained backbone, no training run)."""

    backbone: str
    sampler: str
    alpha: float | None
    seed: int | None
    train_sources: str | None
    train_run: str | None
    eval_runs: tuple[tuple[str, str], ...]      # (dataset, run)

    @property
    def system(self) -> str:
        return system_name(self.sampler, self.alpha)


@dataclass(frozen=True)
class Job:
    """One notebook execution: ``kind`` in train | evaluate | bias | report."""

    kind: str
    notebook: str
    run: str
    parameters: dict[str, Any]
    cell: Cell | None = None
    dataset: str | None = None
    needs: tuple[str, ...] = ()                 # runs that must be complete first


def expand_cells(grid: Grid) -> list[Cell]:
    """Zero-shot cells first (one per backbone), then backbone x mixture x seed x sampler x alpha."""
    cells = []
    context = grid.candidate_context
    evaluated = list(dict.fromkeys([*grid.eval_datasets, *(d for m in grid.train_datasets for d in m["evaluate"])]))
    for backbone in grid.backbones:
        if grid.zero_shot:
            cells.append(Cell(backbone, ZERO_SHOT, None, None, None, None, tuple(
                (d, zero_shot_run_name(backbone, d, context)) for d in evaluated)))
    for backbone in grid.backbones:
        for mixture in grid.train_datasets:
            sources = mixture["train"]
            # seed-major: every sampler's first seed, then every sampler's second, ... so that a grid
            # stopped early still compares the samplers on equal footing
            seeds = sorted({seed for sampler in grid.samplers for seed in grid.seeds_for(sampler)})
            for seed in seeds:
                for sampler in grid.samplers:
                    if seed not in grid.seeds_for(sampler):
                        continue
                    alphas = [float(a) for a in grid.alphas] if sampler == "hybrid" else [None]
                    for alpha in alphas:
                        train = train_run_name(backbone, sampler, alpha, sources, seed, grid.tag)
                        cells.append(Cell(backbone, sampler, alpha, seed, sources, train, tuple(
                            (d, eval_run_name(train, d, context)) for d in mixture["evaluate"])))
    return cells


def plan_jobs(grid: Grid) -> list[Job]:
    """Every notebook execution of the grid, in order: per cell train, evaluations, bias; then report."""
    jobs = []
    for cell in expand_cells(grid):
        if cell.train_run:
            parameters = {"backbone": cell.backbone, "sampler": cell.sampler, "train_sources": cell.train_sources,
                          "seed": cell.seed, **grid.train}
            if cell.alpha is not None:
                parameters["alpha"] = cell.alpha
            jobs.append(Job("train", NOTEBOOKS["train"], cell.train_run, parameters, cell))
        for dataset, eval_run in cell.eval_runs:
            backbone = (str(outputs_dir() / cell.train_run / grid.model_folder) if cell.train_run else cell.backbone)
            jobs.append(Job("evaluate", NOTEBOOKS["evaluate"], eval_run,
                            {"backbone": backbone, "dataset": dataset, "candidate_context": grid.candidate_context,
                             **grid.evaluate}, cell, dataset, needs=(cell.train_run,) if cell.train_run else ()))
            jobs.append(Job("bias", NOTEBOOKS["bias"], bias_run_name(eval_run), {"runs": eval_run, **grid.bias},
                            cell, dataset, needs=(eval_run,)))
    jobs += comparison_jobs(grid)
    report = {k: v for k, v in grid.report.items() if k != "run"}
    jobs.append(Job("report", NOTEBOOKS["report"], grid.report_run, {"grid": _grid_reference(grid), **report}))
    return jobs


def comparison_run_name(grid_name: str, backbone: str, sources: str, dataset: str, tag: str = "") -> str:
    return f"bias-{grid_name}-{backbone}-{sources.replace(',', '+')}-{dataset}" + (f"-{tag}" if tag else "")


def comparison_jobs(grid: Grid) -> list[Job]:
    """One ``05_bias`` comparison per (backbone, training mixture, dataset): the zero-shot run and
    the first seed of every sampler side by side (figures of the samplers against each other)."""
    jobs = []
    cells = expand_cells(grid)
    for backbone in grid.backbones:
        zero_shot = {d: r for c in cells if c.backbone == backbone and not c.train_run for d, r in c.eval_runs}
        for mixture in grid.train_datasets:
            trained = [c for c in cells if c.backbone == backbone and c.train_sources == mixture["train"]]
            for dataset in mixture["evaluate"]:
                runs, systems = [zero_shot[dataset]] if dataset in zero_shot else [], set()
                for cell in sorted(trained, key=lambda c: c.seed):    # each system's first seed
                    if cell.system not in systems:
                        systems.add(cell.system)
                        runs += [r for d, r in cell.eval_runs if d == dataset]
                if len(runs) > 1:
                    jobs.append(Job("bias", NOTEBOOKS["bias"],
                                    comparison_run_name(grid.name, backbone, mixture["train"], dataset, grid.tag),
                                    {"runs": ",".join(runs), **grid.bias}, None, dataset, needs=tuple(runs)))
    return jobs


def _grid_reference(grid: Grid) -> str:
    """How 06_report finds the grid: the file's name under params/, else its path."""
    if grid.source:
        source = Path(grid.source).resolve()
        if source.parent == (PROJECT_ROOT / "params").resolve():
            return source.stem
        return str(source)
    return grid.name


def cell_table(grid: Grid) -> pd.DataFrame:
    """One row per (cell, evaluation dataset): the configuration and its run names."""
    rows = []
    for cell in expand_cells(grid):
        for dataset, eval_run in cell.eval_runs:
            rows.append({"backbone": cell.backbone, "system": cell.system, "sampler": cell.sampler,
                         "alpha": cell.alpha, "seed": cell.seed, "train_sources": cell.train_sources,
                         "dataset": dataset, "train_run": cell.train_run, "eval_run": eval_run,
                         "bias_run": bias_run_name(eval_run)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# running


def notebook_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in a notebook's ``parameters`` cell (read with ``ast``, as papermill can't
    parse conditional defaults)."""
    import nbformat

    path = Path(notebook)
    if not path.is_absolute():
        path = PROJECT_ROOT / "notebooks" / path
    names: set[str] = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def check_notebook_parameters(grid: Grid, notebooks_dir: Path | None = None) -> None:
    """Every parameter the grid passes is a parameter of its notebook (typos fail before hours of work)."""
    notebooks_dir = notebooks_dir or PROJECT_ROOT / "notebooks"
    expected: dict[str, set[str]] = {}
    for job in plan_jobs(grid):
        expected.setdefault(job.notebook, set()).update(job.parameters)
    for notebook, names in expected.items():
        path = notebooks_dir / notebook
        if not path.is_file():
            raise GridError(f"notebook {notebook} not found in {notebooks_dir.name}/: the grid needs "
                            f"{sorted(NOTEBOOKS.values())}")
        unknown = sorted(names - notebook_parameters(path) - {"run"})
        if unknown:
            raise GridError(f"{grid.source or grid.name}: {notebook} has no parameter(s) {unknown}; "
                            "fix the grid file's train/evaluate/bias/report section")


def executed_parameters(run: str, notebook: str) -> dict[str, Any] | None:
    """The parameters papermill recorded in ``outputs/<run>/<notebook>`` (None if absent)."""
    import nbformat

    path = outputs_dir() / run / notebook
    if not path.is_file():
        return None
    metadata = nbformat.read(path, as_version=4).metadata
    return dict(metadata.get("papermill", {}).get("parameters", {}) or {})


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
    return {k: (v, recorded[k]) for k, v in job.parameters.items()
            if k in recorded and not _same(k, v, recorded[k])}


def is_complete(run: str) -> bool:
    return (outputs_dir() / run / "metrics.json").is_file()


def run_grid(grid: Grid | str | Path, force: bool = False, keep_going: bool = False,
             execute: Callable | None = None, kinds: Sequence[str] = ("train", "evaluate", "bias", "report"),
             check_parameters: bool = True, workers: int = 1, devices: Sequence[str] | None = None) -> pd.DataFrame:
    """Execute the grid's jobs (complete ones are skipped) and return the job table.

    ``execute(notebook, run, parameters, force=...)`` defaults to :func:`lib.runner.execute`;
    ``keep_going`` continues after a failed job (its dependants are skipped) and raises at the
    end; the report always runs again (it summarises whatever exists).

    ``workers > 1`` runs that many jobs at once, each as soon as the runs it needs are complete
    (:func:`run_parallel`); ``execute`` then also receives ``env`` (the worker's environment:
    one GPU of ``devices`` each, or its share of the CPU threads) and defaults to
    :func:`lib.runner.execute_subprocess`.
    """
    from lib import runner

    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    if workers < 1:
        raise GridError(f"workers={workers}: expected 1 or more")
    execute = execute or (runner.execute if workers == 1 else runner.execute_subprocess)
    jobs = [job for job in plan_jobs(grid) if job.kind in kinds]
    if check_parameters and execute in (runner.execute, runner.execute_subprocess):
        check_notebook_parameters(grid, runner.NOTEBOOKS)
    if not force:
        for job in jobs:
            if job.kind != "report" and is_complete(job.run):
                conflicts = parameter_conflicts(job)
                if conflicts:
                    detail = ", ".join(f"{k}: grid {ours!r} vs run {theirs!r}"
                                       for k, (ours, theirs) in conflicts.items())
                    raise GridError(
                        f"run {job.run} is complete but was made with other parameters ({detail}); set a "
                        f"different `tag` in {grid.source or grid.name}, delete outputs/{job.run}/, or use --force")
    manifest = run_dir(grid.name)
    write_json(manifest / "grid.json", {"grid": asdict(grid), "jobs": [
        {"kind": j.kind, "notebook": j.notebook, "run": j.run, "parameters": j.parameters} for j in jobs]})
    write_text(manifest / "cells.csv", cell_table(grid).to_csv(index=False))

    if workers > 1:
        return run_parallel(grid, jobs, execute, manifest, workers=workers, devices=devices, force=force,
                            keep_going=keep_going)
    status: dict[str, str] = {}
    records = []
    started_grid = time.perf_counter()
    for number, job in enumerate(jobs, 1):
        blocked = [n for n in job.needs if status.get(n) == "failed" or status.get(n) == "blocked"]
        started = time.perf_counter()
        if blocked:
            state = "blocked"
            print(f"[{number}/{len(jobs)}] [blocked] {job.run}: needs {blocked}", flush=True)
        else:
            was_complete = is_complete(job.run) and job.kind != "report"
            print(f"[{number}/{len(jobs)}] {job.kind} {job.run}", flush=True)
            try:
                execute(job.notebook, job.run, job.parameters, force=force or job.kind == "report")
                state = "skipped" if was_complete and not force else "done"
            except Exception as error:                      # noqa: BLE001 - reported, re-raised below
                state = "failed"
                print(f"[failed] {job.run}: {type(error).__name__}: {str(error)[:500]}", file=sys.stderr, flush=True)
                if not keep_going:
                    records.append({"kind": job.kind, "run": job.run, "status": state,
                                    "seconds": time.perf_counter() - started})
                    _write_status(manifest, records)
                    raise
        status[job.run] = state
        records.append({"kind": job.kind, "run": job.run, "status": state, "seconds": time.perf_counter() - started})
        _write_status(manifest, records)
    return _finish(grid, records, started_grid)


def _finish(grid: Grid, records: list[dict], started: float) -> pd.DataFrame:
    table = pd.DataFrame(records)
    print(f"grid {grid.name}: {len(table)} jobs in {time.perf_counter() - started:.0f} s; "
          + ", ".join(f"{k} {v}" for k, v in table.status.value_counts().items()), flush=True)
    failed = table[table.status.isin(["failed", "blocked", "not run"])]
    if len(failed):
        raise GridError(f"{len(failed)} job(s) failed, were blocked or not run: {failed.run.tolist()} "
                        f"(see outputs/<run>/ and outputs/{grid.name}/status.csv)")
    return table


def _write_status(manifest: Path, records: list[dict]) -> None:
    write_text(manifest / "status.csv", pd.DataFrame(records).to_csv(index=False))


def worker_environments(workers: int, devices: Sequence[str] | None = None,
                        cpu_count: int | None = None) -> list[dict[str, str]]:
    """The environment of each worker: one GPU each (round-robin over ``devices``: ids as in
    ``CUDA_VISIBLE_DEVICES``; ``None`` = every visible GPU), or, without GPUs, an equal share of the
    CPU cores as torch / OpenMP threads (unless ``OMP_NUM_THREADS`` is set already)."""
    import os

    if devices is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            devices = [d.strip() for d in visible.split(",") if d.strip()]
        else:
            try:
                import torch

                devices = [str(i) for i in range(torch.cuda.device_count())]
            except ImportError:                                 # pragma: no cover - torch is a dependency
                devices = []
    devices = [str(d) for d in devices]
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (cpu_count or os.cpu_count() or 1) // workers))
    environments = []
    for worker in range(workers):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[worker % len(devices)]
        environments.append(env)
    return environments


ENDED = ("done", "skipped", "failed", "blocked", "not run")


def run_parallel(grid: Grid, jobs: list[Job], execute: Callable, manifest: Path, workers: int = 2,
                 devices: Sequence[str] | None = None, force: bool = False, keep_going: bool = False) -> pd.DataFrame:
    """Run ``jobs`` on ``workers`` slots: a job starts once every run it needs (that is part of
    ``jobs``) is complete, the report once everything else has ended; complete runs are skipped
    without a worker. Each slot keeps its environment (:func:`worker_environments`). A failure
    blocks the jobs that need it; without ``keep_going`` nothing new starts after it, the running
    jobs finish, and the rest is recorded as ``not run``."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    environments = worker_environments(workers, devices)
    planned = {job.run for job in jobs}
    status: dict[str, str] = {}
    records: list[dict] = []
    pending = list(jobs)
    running: dict = {}                                          # future -> (job, slot, started)
    free = list(range(workers))
    stopping = False
    started_grid = time.perf_counter()

    def record(job: Job, state: str, started: float) -> None:
        status[job.run] = state
        records.append({"kind": job.kind, "run": job.run, "status": state, "seconds": time.perf_counter() - started})
        _write_status(manifest, records)

    def needs_of(job: Job) -> list[str]:
        if job.kind == "report":                                # after everything else
            return [j.run for j in jobs if j.kind != "report"]
        return [n for n in job.needs if n in planned]

    def step(pool) -> bool:
        """Start, skip or block the first job that can be; False when none can."""
        for job in pending:
            needs = needs_of(job)
            if stopping:
                state = "not run"
            elif job.kind != "report" and any(status.get(n) in ("failed", "blocked", "not run") for n in needs):
                print(f"[blocked] {job.run}: needs {[n for n in needs if status.get(n) not in ('done', 'skipped')]}",
                      flush=True)
                state = "blocked"
            elif not all(status.get(n) in (("done", "skipped") if job.kind != "report" else ENDED) for n in needs):
                continue                                        # the report summarises whatever exists
            elif job.kind != "report" and not force and is_complete(job.run):
                print(f"[skip] {job.run}: complete", flush=True)
                state = "skipped"
            elif free:
                slot = free.pop(0)
                env = environments[slot]
                print(f"[start] {job.kind} {job.run} (worker {slot}: "
                      + " ".join(f"{k}={v}" for k, v in env.items()) + ")", flush=True)
                future = pool.submit(execute, job.notebook, job.run, job.parameters,
                                     force=force or job.kind == "report", env=env)
                running[future] = (job, slot, time.perf_counter())
                pending.remove(job)
                return True
            else:
                continue
            pending.remove(job)
            record(job, state, time.perf_counter())
            return True
        return False

    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending or running:
            while step(pool):
                pass
            if not running:                                     # what is left can never start
                for job in list(pending):
                    pending.remove(job)
                    record(job, "blocked", time.perf_counter())
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job, slot, started = running.pop(future)
                free.append(slot)
                free.sort()
                error = future.exception()
                if error is None:
                    print(f"[done] {job.run}: {time.perf_counter() - started:.0f} s", flush=True)
                    record(job, "done", started)
                else:
                    print(f"[failed] {job.run}: {type(error).__name__}: {str(error)[:500]}", file=sys.stderr,
                          flush=True)
                    record(job, "failed", started)
                    stopping = stopping or not keep_going
    return _finish(grid, records, started_grid)


def estimate_seconds(grid: Grid) -> pd.DataFrame:
    """Expected duration of each job from the grid's ``estimate`` section (seconds_per_step,
    train_overhead_s, evaluation_minutes per dataset, bias_s, report_s); complete runs cost 0."""
    estimate = grid.estimate
    per_step = float(estimate.get("seconds_per_step", 0))
    rows = []
    for job in plan_jobs(grid):
        if job.kind == "train":
            seconds = per_step * float(job.parameters.get("steps", 0)) + float(estimate.get("train_overhead_s", 0))
        elif job.kind == "evaluate":
            seconds = 60 * float((estimate.get("evaluation_minutes") or {}).get(job.dataset, 0))
        else:
            runs = len(str(job.parameters.get("runs", "")).split(",")) if job.kind == "bias" else 1
            seconds = float(estimate.get(f"{job.kind}_s", 0)) * runs
        rows.append({"kind": job.kind, "run": job.run, "complete": is_complete(job.run), "estimate_s": seconds})
    table = pd.DataFrame(rows)
    table["remaining_s"] = np.where(table.complete & (table.kind != "report"), 0.0, table.estimate_s)
    return table


# --------------------------------------------------------------------------------------------
# results: what 06_report gathers


SUMMARY_METRICS = ["mono map", "cross map", "multi map", "mono map@20", "cross map@20", "multi map@20",
                   "mono recall@1", "cross recall@1", "multi recall@10", "multi rank_distance"]
BIAS_METRICS = ["same_language_first", "chance", "strong_alignment", "same_language_distractor",
                "top_k_same_language", "top_k_hits_same_language", "pool_same_language"]


def describe_eval_run(run: str) -> dict[str, Any]:
    """The configuration of an evaluation run made outside a grid (from its config.json files)."""
    from lib.bias import run_label

    config = read_json(outputs_dir() / run / "config.json")
    settings = config.get("backbone_settings") or {}
    row = {"backbone": settings.get("name", config.get("backbone")), "system": run_label(run),
           "sampler": None, "alpha": None, "seed": None, "train_sources": None,
           "dataset": config.get("dataset"), "train_run": None, "eval_run": run, "bias_run": None}
    if settings.get("source") not in (None, "path"):
        row.update(sampler=ZERO_SHOT)           # system stays "zero-shot <backbone>": not a grid cell
    train_dir = Path(str(config.get("backbone", ""))).parent
    if not (train_dir / "config.json").is_file():          # the outputs folder was moved: look in today's
        train_dir = outputs_dir() / train_dir.name
    if settings.get("source") == "path" and (train_dir / "config.json").is_file():
        train = read_json(train_dir / "config.json")
        row.update(backbone=Path(str(train.get("backbone", row["backbone"]))).name, sampler=train.get("sampler"),
                   alpha=train.get("alpha") if train.get("sampler") == "hybrid" else None,
                   seed=train.get("seed"), train_sources=train.get("train_sources"), train_run=train_dir.name)
        row["system"] = system_name(row["sampler"], row["alpha"]) if row["sampler"] else row["system"]
    return row


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def grid_results(grid: Grid | None, extra_runs: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (cell, evaluation dataset) with its summary metrics, bias rates and status.

    ``extra_runs`` adds evaluation runs made outside the grid (described from their configs);
    their bias run is looked up as ``bias-<run>``. ``status`` is complete | missing.
    """
    cells = cell_table(grid) if grid is not None else pd.DataFrame()
    extra = [describe_eval_run(r) for r in extra_runs if r and (outputs_dir() / r / "config.json").is_file()
             and (cells.empty or r not in set(cells.eval_run))]
    table = pd.concat([cells, pd.DataFrame(extra)], ignore_index=True) if extra else cells
    rows = []
    for row in table.to_dict(orient="records"):
        path = outputs_dir() / row["eval_run"] / "metrics.json"
        row["status"] = "complete" if path.is_file() else "missing"
        config_path = outputs_dir() / row["eval_run"] / "config.json"
        if config_path.is_file():
            config = read_json(config_path)
            row.update(n_questions=config.get("n_questions"), n_candidates=config.get("n_candidates"))
        if path.is_file():
            metrics = read_json(path)
            row.update({k: metrics.get("summary", {}).get(k) for k in SUMMARY_METRICS})
            row["eval_s"] = (metrics.get("timings") or {}).get("total_s")
        bias_run = row["bias_run"] if _given(row.get("bias_run")) else bias_run_name(row["eval_run"])
        bias_path = outputs_dir() / bias_run / "metrics.json"
        if bias_path.is_file():
            bias = read_json(bias_path).get("runs", {}).get(row["eval_run"], {})
            row.update({f"bias {k}": bias.get(k) for k in BIAS_METRICS})
            row["bias_run"] = bias_run
        if _given(row.get("train_run")):
            train_metrics = outputs_dir() / row["train_run"] / "metrics.json"
            if train_metrics.is_file():
                train = read_json(train_metrics)          # lib.train: a flat dict
                row.update(train_steps=train.get("steps"), train_s=train.get("wall_time_s"),
                           best_val_loss=train.get("best_val_loss"), stopped_early=train.get("stopped_early"))
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation and number of seeds per (backbone, train_sources, dataset, system).

    Columns are a two-level index ``(metric, mean|std|n)``; std is NaN with a single seed.
    """
    complete = results[results.status == "complete"].copy()
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in complete.columns]
    complete["train_sources"] = complete["train_sources"].fillna("-")
    keys = ["backbone", "train_sources", "dataset", "system"]
    if complete.empty:
        return pd.DataFrame(columns=pd.MultiIndex.from_product([metrics, ["mean", "std", "n"]]))
    grouped = complete.groupby(keys, sort=False)[metrics]
    table = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}, axis=1)
    return table.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)[metrics]


def format_mean_std(summary: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """``0.612 ± 0.004 (3)`` cells: mean ± std over seeds (number of seeds), for a paper-style table."""
    out = pd.DataFrame(index=summary.index)
    for metric in metrics:
        if metric not in summary.columns.get_level_values(0):
            continue
        mean, std, n = summary[(metric, "mean")], summary[(metric, "std")], summary[(metric, "n")]
        out[metric] = [("-" if pd.isna(m) else f"{m:.{digits}f}" + ("" if pd.isna(s) else f" ± {s:.{digits}f}")
                        + (f" ({int(c)})" if c and c > 1 else ""))
                       for m, s, c in zip(mean, std, n)]
    return out


def load_reference(name: str = "paper") -> pd.DataFrame:
    """Published numbers shipped with the package (``lib/reference``): ``paper`` (arXiv
    2408.10536: model, dataset, setting, metric, lang, sampler, value) or ``lareqa`` (mBERT baselines)."""
    files = {"paper": "paper_2408.10536.csv", "lareqa": "lareqa_baselines.csv"}
    if name not in files:
        raise ValueError(f"reference {name!r}: expected one of {sorted(files)}")
    resource = importlib.resources.files("lib") / "reference" / files[name]
    with importlib.resources.as_file(resource) as path:
        return pd.read_csv(path)


def paper_side_by_side(summary: pd.DataFrame, metrics: Sequence[str] = ("mono map", "cross map", "multi map"),
                       digits: int = 3) -> pd.DataFrame:
    """Our mean over seeds next to the paper's number for the same backbone, dataset and sampler.

    Rows exist only where the backbone is one of the paper's (``PAPER_MODELS``); columns
    ``<metric> ours``, ``<metric> paper``, ``<metric> diff``.
    """
    reference = load_reference("paper")
    reference = reference[reference.lang == "mean"]
    rows = []
    for key in summary.index:
        backbone, _, dataset, system = key
        model, sampler = PAPER_MODELS.get(backbone), PAPER_SAMPLERS.get(system)
        if model is None or sampler is None:
            continue
        row = dict(zip(["backbone", "train_sources", "dataset", "system"], key))
        for metric in metrics:
            setting, name = metric.split(" ", 1)
            found = reference[(reference.model == model) & (reference.dataset == dataset) & (reference.setting == setting)
                              & (reference.metric == name) & (reference.sampler == sampler)]
            ours = summary.loc[key, (metric, "mean")] if (metric, "mean") in summary.columns else np.nan
            paper = float(found.value.iloc[0]) if len(found) else np.nan
            row.update({f"{metric} ours": round(ours, digits), f"{metric} paper": paper,
                        f"{metric} diff": round(ours - paper, digits)})
        rows.append(row)
    return pd.DataFrame(rows)


def significance_table(results: pd.DataFrame, metric: str = "map", settings=("mono", "cross", "multi"),
                       resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Paired tests of every pair of systems, per (backbone, train_sources, dataset) and setting.

    Each system's per-query metric is first averaged over its seeds (queries common to all
    seeds); then :func:`lib.significance.pairwise_comparisons` (sign-flip permutation p-value,
    bootstrap interval, Cohen's d_z, clusters = question ids, Holm over the whole table).
    Untrained systems (zero-shot) are compared with the samplers of every training mixture; only
    runs over the same candidate pool (``n_candidates``) are compared.
    """
    from lib.significance import holm, mean_over_seeds, pairwise_comparisons

    complete = results[results.status == "complete"]
    tables = []
    # only runs over the same pool are comparable (same dataset, languages and max_questions)
    for (backbone, dataset, _), group in complete.groupby(["backbone", "dataset", "n_candidates"], sort=False):
        untrained = group[group.train_sources.isna()]
        trained = group[group.train_sources.notna()]
        mixtures = trained.train_sources.unique().tolist() or [None]
        for mixture in mixtures:
            members = pd.concat([untrained, trained[trained.train_sources == mixture]]) if mixture else untrained
            systems = {}
            for system, runs in members.groupby("system", sort=False):
                frames = [pd.read_parquet(outputs_dir() / r / "per_query.parquet") for r in runs.eval_run]
                systems[system] = mean_over_seeds(frames)
            if len(systems) < 2:
                continue
            table = pairwise_comparisons(systems, metric=metric, settings=settings, resamples=resamples, seed=seed)
            tables.append(table.assign(backbone=backbone, dataset=dataset, train_sources=mixture or "-"))
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = holm(table.p_value.to_numpy())
    front = ["backbone", "train_sources", "dataset", "setting", "metric", "a", "b"]
    return table[front + [c for c in table.columns if c not in front]]


LANGUAGE_SPLIT_TITLE = "Languages seen and unseen in training (mAP)"
LANGUAGE_SPLIT_METRICS = ["mono map seen", "mono map unseen", "cross map seen", "cross map unseen",
                          "multi map seen", "multi map unseen"]


def training_languages(sources: str) -> list[str]:
    """The languages of a training mixture (comma-separated LAReQA datasets), e.g. mlqa-r -> 7."""
    from lib.data import lareqa_languages

    return sorted({lang for source in str(sources).split(",") if source.strip()
                   for lang in lareqa_languages(source.strip())})


def language_split(per_pair: pd.DataFrame, seen: Sequence[str], metric: str = "map") -> dict[str, float]:
    """``metric`` over the languages of the training data (seen) and the others (unseen), per setting.

    ``per_pair``: an evaluation's ``per_pair`` table (metrics.json). mono and multi split by the
    query language; cross by the language pair: ``seen`` = both languages seen, ``unseen`` = at
    least one unseen. Each value is the mean over its languages (pairs for cross), NaN when none.
    """
    seen = set(seen)
    out = {}
    for setting in SETTINGS:
        rows = per_pair[per_pair.setting == setting]
        if setting == "cross":
            inside = rows.query_lang.isin(seen) & rows.target_lang.isin(seen)
        else:
            inside = rows.query_lang.isin(seen)
        for name, mask in (("seen", inside), ("unseen", ~inside)):
            values = rows.loc[mask, metric]
            out[f"{setting} {metric} {name}"] = float(values.mean()) if len(values) else np.nan
    return out


def add_language_split(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with the columns of ``LANGUAGE_SPLIT_METRICS`` for every complete evaluation.

    Seen languages are those of the training data: the row's ``train_sources``, or, for a zero-shot
    row, the one training mixture of the other rows with its backbone and dataset (so that it is
    split the same way as the models it is compared with; left empty when there are several).
    Note that the ``en`` sampler trains on English only although its data has more languages.
    """
    results = results.copy()
    for column in LANGUAGE_SPLIT_METRICS:
        results[column] = np.nan
    if results.empty or "eval_run" not in results:
        return results
    trained = results[results.train_sources.map(_given)] if "train_sources" in results else results.iloc[:0]
    for index, row in results[results.status == "complete"].iterrows():
        sources = row.get("train_sources")
        if not _given(sources):
            mixtures = set(trained.loc[(trained.backbone == row.backbone) & (trained.dataset == row.dataset),
                                       "train_sources"])
            if len(mixtures) != 1:
                continue
            sources = mixtures.pop()
        per_pair = pd.DataFrame(read_json(outputs_dir() / row.eval_run / "metrics.json").get("per_pair") or [])
        if per_pair.empty or "target_lang" not in per_pair:
            continue
        for column, value in language_split(per_pair, training_languages(sources)).items():
            results.loc[index, column] = value
    return results


@dataclass
class Report:
    """What 06_report shows and writes: the results table and the paper-style tables built from it."""

    grid: str
    results: pd.DataFrame                     # one row per (cell, dataset): see grid_results
    summary: pd.DataFrame                     # seed_summary(results)
    tables: dict[str, pd.DataFrame]           # title -> formatted table
    significance: pd.DataFrame                # significance_table(results)
    missing: list[str] = field(default_factory=list)


SETTINGS = ("mono", "cross", "multi")
SETTINGS_OF = {"rank_distance": ("multi",)}       # rank distance exists in the multilingual setting only
MAP_METRICS = ["mono map", "cross map", "multi map"]
RECALL_METRICS = ["mono recall@1", "cross recall@1", "multi recall@10", "mono map@20", "cross map@20", "multi map@20"]
BIAS_TABLE_METRICS = ["multi rank_distance", "bias same_language_first", "bias chance", "bias strong_alignment",
                      "bias same_language_distractor", "bias top_k_same_language", "bias pool_same_language"]


VERDICT_TITLE = "The research question: hybrid against the better of mono and cross"
# the metrics of the question, and which direction is better (+1: higher, -1: lower)
VERDICT_METRICS = {"mono map": 1, "cross map": 1, "multi map": 1, "multi rank_distance": -1}


def hybrid_verdict(summary: pd.DataFrame, significance: pd.DataFrame, level: float = 0.05,
                   digits: int = 3) -> pd.DataFrame:
    """Does hybrid match or beat the better of mono and cross in every setting, and is it less biased?

    For each (backbone, training mixture, dataset) that has mono, cross and a hybrid system, and
    each metric of ``VERDICT_METRICS``: the better of mono and cross by its mean over seeds, the
    hybrid mean, ``delta`` = hybrid - better (positive = hybrid higher), and the Holm-adjusted
    p-value of their paired test from ``significance`` (:func:`significance_table`). ``verdict``:
    ``better`` or ``worse`` when p_holm < ``level`` (in the metric's good direction: lower rank
    distance is better), ``no significant difference`` otherwise, ``not tested`` without a test.
    """
    columns = ["backbone", "train_sources", "dataset", "hybrid", "metric", "better of mono/cross",
               "hybrid mean ± std", "better mean ± std", "delta", "p_holm", "effect_size", "verdict"]
    if summary is None or summary.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (backbone, sources, dataset), group in summary.groupby(level=[0, 1, 2], sort=False):
        systems = group.index.get_level_values(3).tolist()
        hybrids = [s for s in systems if s.startswith("hybrid")]
        if not hybrids or not {"mono", "cross"} <= set(systems):
            continue
        for hybrid in hybrids:
            for metric, direction in VERDICT_METRICS.items():
                if (metric, "mean") not in summary.columns:
                    continue
                value = {s: summary.loc[(backbone, sources, dataset, s)] for s in ("mono", "cross", hybrid)}
                mean = {s: v[(metric, "mean")] for s, v in value.items()}
                if any(pd.isna(m) for m in mean.values()):
                    continue
                best = max(("mono", "cross"), key=lambda s: direction * mean[s])
                setting, name = metric.split(" ", 1)
                test = significance
                if len(test):
                    test = test[(test.backbone == backbone) & (test.train_sources == sources)
                                & (test.dataset == dataset) & (test.setting == setting) & (test.metric == name)
                                & (((test.a == hybrid) & (test.b == best)) | ((test.a == best) & (test.b == hybrid)))]
                p_holm = float(test.p_holm.iloc[0]) if len(test) else np.nan
                effect = float(test.effect_size.iloc[0]) * (1 if test.a.iloc[0] == hybrid else -1) if len(test) else np.nan
                delta = mean[hybrid] - mean[best]
                if np.isnan(p_holm):
                    verdict = "not tested"
                elif p_holm < level:
                    verdict = "better" if direction * delta > 0 else "worse"
                else:
                    verdict = "no significant difference"

                def cell(system):
                    std, n = value[system][(metric, "std")], value[system][(metric, "n")]
                    return (f"{mean[system]:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")
                            + (f" ({int(n)})" if n and n > 1 else ""))

                rows.append(dict(zip(columns, [backbone, sources, dataset, hybrid, metric, best, cell(hybrid), cell(best),
                                               round(float(delta), digits + 1), p_holm, effect, verdict])))
    return pd.DataFrame(rows, columns=columns)


def verdict_sentences(verdict: pd.DataFrame, level: float = 0.05) -> list[str]:
    """One plain sentence per (backbone, mixture, dataset, hybrid) of :func:`hybrid_verdict`."""
    sentences = []
    if verdict is None or verdict.empty:
        return sentences
    for (backbone, sources, dataset, hybrid), group in verdict.groupby(
            ["backbone", "train_sources", "dataset", "hybrid"], sort=False):
        maps = group[group.metric.str.endswith(" map")]
        worse = maps[maps.verdict == "worse"]
        better = maps[maps.verdict == "better"]
        where = f"{backbone} trained on {sources}, evaluated on {dataset}: {hybrid}"
        if worse.empty:
            text = f"{where} matches or beats the better of mono and cross on mAP in every setting"
        else:
            text = f"{where} is significantly worse than the better of mono and cross on " + ", ".join(
                f"{r.metric} ({r['better of mono/cross']}, delta {r.delta:+.3f}, p_holm {r.p_holm:.2g})"
                for _, r in worse.iterrows())
        if len(better):
            text += "; significantly better on " + ", ".join(
                f"{r.metric} (than {r['better of mono/cross']}, {r.delta:+.3f})" for _, r in better.iterrows())
        bias = group[group.metric == "multi rank_distance"]
        if len(bias):
            row = bias.iloc[0]
            text += (f". Language bias (rank distance, lower is better): {row['hybrid mean ± std']} against "
                     f"{row['better of mono/cross']}'s {row['better mean ± std']}, {row.verdict}"
                     + ("" if np.isnan(row.p_holm) else f" (p_holm {row.p_holm:.2g})"))
        sentences.append(text + f" (Holm-adjusted paired tests over questions, level {level}).")
    return sentences


def _wide(formatted: pd.DataFrame) -> pd.DataFrame:
    """Rows (backbone, train_sources, system), columns (dataset, metric): the paper's layout."""
    if formatted.empty:
        return formatted
    wide = formatted.unstack("dataset")
    wide.columns = wide.columns.swaplevel(0, 1)
    return wide.sort_index(axis=1, level=0, sort_remaining=False)


def build_report(grid: Grid | str | None, extra_runs: Sequence[str] | str = (), resamples: int = 10_000,
                 seed: int = 0, significance_metrics: Sequence[str] = ("map", "rank_distance")) -> Report:
    """Gather every run of a grid (plus ``extra_runs``) into the paper's tables and the tests.

        report = build_report("grid-smoke", resamples=1000)
        report.tables["mAP"], report.significance
    """
    if isinstance(grid, (str, Path)):
        grid = load_grid(grid) if str(grid) else None  # "": only the extra runs
    if isinstance(extra_runs, str):
        extra_runs = [r.strip() for r in extra_runs.split(",") if r.strip()]
    results = grid_results(grid, extra_runs)
    if results.empty:
        results = pd.DataFrame(columns=["backbone", "system", "dataset", "eval_run", "status", "train_sources"])
    results = add_language_split(results)
    summary = seed_summary(results, [*SUMMARY_METRICS, *(f"bias {m}" for m in BIAS_METRICS),
                                     *LANGUAGE_SPLIT_METRICS])
    tables = {
        "mAP (mean ± std over seeds, number of seeds)": _wide(format_mean_std(summary, MAP_METRICS)),
        "Recall and XTREME-R mAP@20": _wide(format_mean_std(summary, RECALL_METRICS)),
        "Language bias (multilingual setting)": _wide(format_mean_std(summary, BIAS_TABLE_METRICS)),
    }
    if results[[m for m in LANGUAGE_SPLIT_METRICS if m.endswith("unseen")]].notna().to_numpy().any():
        tables[LANGUAGE_SPLIT_TITLE] = _wide(format_mean_std(summary, LANGUAGE_SPLIT_METRICS))
    if len(summary):
        side = paper_side_by_side(summary)
        if len(side):
            tables["Ours next to the paper (same backbone and sampler)"] = side
    lareqa = load_reference("lareqa")
    tables["LAReQA mBERT baselines (multi mAP, context only)"] = lareqa.pivot_table(
        index="sampler", columns="dataset", values="value")
    significance = [significance_table(results, metric=m, resamples=resamples, seed=seed,
                                       settings=SETTINGS_OF.get(m, SETTINGS)) for m in significance_metrics]
    significance = pd.concat([t for t in significance if len(t)], ignore_index=True) if any(
        len(t) for t in significance) else pd.DataFrame()
    if len(significance):
        from lib.significance import holm

        significance["p_holm"] = holm(significance.p_value.to_numpy())
        verdict = hybrid_verdict(summary, significance)
        if len(verdict):
            tables = {VERDICT_TITLE: verdict, **tables}
    missing = results.loc[results.status == "missing", "eval_run"].tolist()
    return Report(grid.name if grid else "-", results, summary, tables, significance, missing)


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame is None or frame.empty:
        return "(nothing yet)\n"
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(c) for c in column if c) for column in frame.columns]
    if isinstance(frame.index, pd.MultiIndex) or frame.index.name:
        frame = frame.reset_index()
        return frame.to_markdown(index=False, floatfmt=f".{digits}f") + "\n"
    return frame.to_markdown(index=isinstance(frame.index, pd.RangeIndex) is False, floatfmt=f".{digits}f") + "\n"


SIGNIFICANCE_COLUMNS = ["backbone", "train_sources", "dataset", "setting", "metric", "a", "b", "mean_a", "mean_b",
                        "delta", "ci_low", "ci_high", "p_value", "p_holm", "effect_size", "wins", "ties", "losses",
                        "n_queries", "n_clusters"]


def write_report(run_path: str | Path, report: Report, figures: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None) -> Path:
    """``report.md``, ``results.csv``, ``summary.csv``, ``significance.csv``, ``verdict.csv`` (when the
    grid answers the research question), figures (png) and ``metrics.json`` (written last) in
    ``run_path``; every file is written atomically."""
    from lib.io import write_provenance
    from lib.report import save_figure

    run_path = Path(run_path)
    write_provenance(run_path, {"task": "report", "grid": report.grid, **(config or {})})
    write_text(run_path / "results.csv", report.results.to_csv(index=False))
    flat = report.summary.copy()
    flat.columns = [" ".join(c) for c in flat.columns]
    write_text(run_path / "summary.csv", flat.to_csv())
    significance = report.significance
    if len(significance):
        significance = significance[[c for c in SIGNIFICANCE_COLUMNS if c in significance.columns]]
    write_text(run_path / "significance.csv", significance.to_csv(index=False))
    if VERDICT_TITLE in report.tables:
        write_text(run_path / "verdict.csv", report.tables[VERDICT_TITLE].to_csv(index=False))
    names = []
    for name, figure in (figures or {}).items():
        save_figure(figure, run_path / f"{name}.png")
        names.append(name)
    complete = int((report.results.status == "complete").sum()) if len(report.results) else 0
    lines = [f"# Report: grid `{report.grid}`", "",
             f"{complete} evaluation run(s) complete, {len(report.missing)} missing"
             + (f": {', '.join(report.missing)}" if report.missing else "") + ".", "",
             "Each cell: mean ± std over seeds (number of seeds when more than one). mAP is macro-averaged "
             "over query languages (lib/metrics.py); rank distance: lower is less language-biased.", ""]
    for title, table in report.tables.items():
        lines += [f"## {title}", "", _markdown(table)]
        if title == VERDICT_TITLE:
            lines += ["delta = hybrid - the better of mono and cross (by mean over seeds); p_holm and effect size "
                      "(Cohen's d_z, positive = hybrid higher) from the paired tests below.", ""]
            lines += [f"- {sentence}" for sentence in verdict_sentences(table)] + [""]
    lines += ["## Paired significance (per-query AP and rank distance, clustered by question id)", "",
              "delta = A - B of the macro metric; 95% bootstrap interval; two-sided sign-flip permutation "
              "p-value; p_holm: Holm-adjusted over every row; effect size: Cohen's d_z over question ids "
              "(lib/significance.py). Seeds are averaged per query before testing.", "",
              _markdown(significance.round(4) if len(significance) else significance, digits=4)]
    lines += [f"![{name}]({name}.png)\n" for name in names]
    write_text(run_path / "report.md", "\n".join(lines))
    metrics = {"summary": {"complete_runs": complete, "missing_runs": len(report.missing),
                           "comparisons": int(len(report.significance)),
                           "significant_holm_0.05": int((report.significance.get("p_holm", pd.Series(dtype=float))
                                                         < 0.05).sum())}}
    write_json(run_path / "metrics.json", metrics)
    return run_path


# --------------------------------------------------------------------------------------------
# figures


def metric_figure(results: pd.DataFrame, metrics: Sequence[str] = ("mono map", "cross map", "multi map"),
                  title: str = "mAP per sampler (points: seeds)", ylim: tuple[float, float] | None = (0, 1)):
    """One panel per dataset: bars of the mean over seeds per system and setting, seeds as points."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    complete = results[results.status == "complete"]
    present = [m for m in metrics if m in complete.columns]
    long = complete.melt(id_vars=["dataset", "system"], value_vars=present, var_name="metric", value_name="value")
    datasets = long.dataset.unique().tolist() or ["-"]
    figure, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        frame = long[long.dataset == dataset]
        sns.barplot(data=frame, x="metric", y="value", hue="system", errorbar=None, ax=axis, alpha=0.8)
        sns.stripplot(data=frame, x="metric", y="value", hue="system", dodge=True, ax=axis, legend=False,
                      color="black", size=3)
        axis.set_title(f"{dataset}")
        axis.set_xlabel("")
        if ylim is not None:
            axis.set_ylim(*ylim)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def significance_figure(table: pd.DataFrame, title: str = "A - B with 95% bootstrap interval"):
    """Forest plot of the paired differences (one row per comparison, one panel per setting)."""
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(zip(table.setting, table.metric)))     # (setting, metric), in table order
    height = max(2.5, 0.35 * table.groupby(["setting", "metric"]).size().max() + 1.2)
    columns = min(len(panels), 2)
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.5 * columns, height * lines), squeeze=False, sharey=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (setting, metric) in zip(axes.flat, panels):
        frame = table[(table.setting == setting) & (table.metric == metric)].reset_index(drop=True)
        labels = [f"{a} - {b} ({d})" for a, b, d in zip(frame.a, frame.b, frame.dataset)]
        y = np.arange(len(frame))
        for position, row in zip(y, frame.itertuples()):
            color = "tab:red" if row.p_holm < 0.05 else "tab:gray"
            axis.errorbar([row.delta], [position], xerr=[[row.delta - row.ci_low], [row.ci_high - row.delta]],
                          fmt="o", color=color, capsize=3)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.xaxis.set_major_locator(plt.MaxNLocator(4))
        axis.set_yticks(y, labels, fontsize=8)
        axis.set_title(f"{setting} {frame.metric.iloc[0]}")
        axis.invert_yaxis()
    figure.suptitle(title + " (red: Holm-adjusted p < 0.05)")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file, e.g. params/grid.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and the time estimate, run nothing")
    parser.add_argument("--force", action="store_true", help="re-run complete runs too")
    parser.add_argument("--keep-going", action="store_true", help="continue after a failed job")
    parser.add_argument("--only", default="train,evaluate,bias,report",
                        help="comma-separated job kinds to run (default: all)")
    parser.add_argument("--workers", type=int, default=1,
                        help="jobs at once, each in its own process: one per GPU, or a share of the CPU cores")
    parser.add_argument("--devices", default=None,
                        help="comma-separated GPU ids for the workers (default: every visible GPU)")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    if args.dry_run:
        table = estimate_seconds(grid)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False))
        print(f"{len(table)} jobs, {len(expand_cells(grid))} cells; estimate {table.estimate_s.sum() / 3600:.2f} h "
              f"in all, {table.remaining_s.sum() / 3600:.2f} h remaining")
        return
    devices = [d for d in args.devices.split(",") if d] if args.devices is not None else None
    run_grid(grid, force=args.force, keep_going=args.keep_going, kinds=tuple(args.only.split(",")),
             workers=args.workers, devices=devices)


if __name__ == "__main__":
    main()
