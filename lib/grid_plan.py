"""A grid file and its plan: the file's schema and checks, its cells, and every job in order.

``lib.grid`` runs what this module plans (``python -m lib.grid params/grid.yaml``); ``lib.gather``,
``lib.report`` and ``lib.slurm`` read the same plan.

A grid file (``params/grid*.yaml``) lists::

    backbones: [me5-small-q4]                 # params/backbones/<name>.yaml
    samplers: [en, mono, cross, hybrid]       # lib.sampling.SAMPLERS
    seeds: [0, 1, 2]                          # default for every sampler ...
    seeds_by_sampler: {en: [0]}               # ... unless overridden here
    alphas: [0.5]                             # hybrid's alpha values (the grid key its option declares)
    sampler_options: {hybrid: {alpha: [0.4, 0.6]}}   # any sampler's declared options, values to cross
    budgets: [40, 160, 640]                   # training steps: one training per budget, each with
                                              # its own warm-up and decay (run tag b<steps>, system
                                              # "hybrid a=0.5 @160"); empty: train.steps
    train_datasets: [mlqa-r]                  # each entry one training mixture ("mlqa-r,xquad-r") ...
    eval_datasets: [xquad-r, miracl]          # ... evaluated on these, unless the entry says
                                              # {train: xquad-r, evaluate: [mlqa-r]}
    candidate_context: sentence               # candidates of every evaluation: sentence | paragraph
    zero_shot: true                           # add the untrained backbone (one cell per backbone), or
    zero_shot: {eval_datasets: [xquad-r, mlqa-r], candidate_contexts: [sentence, paragraph]}
                                              # ... on these datasets x candidate contexts
    train: {steps: 60, batch_size: 32, ...}   # fixed fields of lib.train.TrainConfig (03_train)
    evaluate: {batch_size: 64, ...}           # fixed parameters of 04_evaluate, for every dataset: each
                                              # evaluator ignores what is not its own (index: MIRACL's;
                                              # max_questions, run_depth: LAReQA's); languages limits all
    bias: {top_k: 10}                         # fixed parameters of 05_bias
    report: {run: report, resamples: 10000}   # 06_report's output folder and parameters
    debias: [none, center-pool]               # lib.debias variants of every LAReQA evaluation (same embeddings)
    wise_ft: {lambdas: [0.5]}                 # WiSE-FT of each trained model (lib.grid_systems) ...
    soups: [[mono, cross]]                    # ... and uniform soups per seed, each evaluated
    distill: [{objective: contrastive+distill}]  # distillation systems, trained per seed (lib.grid_systems)
    analysis: {questions: [...]}              # the primary analysis, fixed before the run (lib.analysis_plan)

Cells = backbones x training mixtures x (sampler, its option values, seed); run names come from
:mod:`lib.naming` (``train-me5-small-q4-hybrid-a0.5-mlqa-r-s0``, ``eval-<training run>-<dataset>``,
``zeroshot-<backbone>-<dataset>-<candidate context>``, ``bias-<evaluation run>``, and the samplers
side by side ``bias-<grid>-<backbone>-<sources>-<dataset>``). Candidate contexts are LAReQA's; a
zero-shot MIRACL or Tatoeba run is made once, under the first context.

    grid = load_grid("params/grid-smoke.yaml")
    jobs = plan_jobs(grid)                    # in execution order
    cell_table(grid)                          # one row per cell, dataset and debias variant
    estimate_seconds(grid)                    # each job's expected duration (the --dry-run table)

A grid file's schema, its checks and the plan of every job kind (train, merge, evaluate, bias,
report) are one format read in one place; the weight-space and debias systems are
``lib.grid_systems``, the execution ``lib.grid`` (with ``lib.scheduler`` and ``lib.notebooks``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lib.analysis_plan import AnalysisPlan, AnalysisPlanError, check_plan_seeds, parse_analysis
from lib.backbones import available_backbones
from lib.data import CANDIDATE_CONTEXTS
from lib.evaluate import DATASETS, LAREQA_DATASETS
from lib.grid_systems import (MERGE_JOB, GridSystemsError, check_weight_space, debias_variants, distill_systems,
                              weight_systems)
from lib.io import PROJECT_ROOT, outputs_dir, read_yaml_mapping
from lib.naming import (bias_run_name, budget_system_name, budget_tag, comparison_run_name, debias_run_name,
                        debias_system_name, eval_run_name, join_tags, system_name, train_run_name, zero_shot_run_name)
from lib.notebooks import NOTEBOOKS_DIR, is_complete, notebook_parameters
from lib.sampling import SAMPLERS, SamplingError, check_sampler_options, option_labels, sampler_class
from lib.scheduler import Job
from lib.downloads import PlanNeeds
from lib.sources import TRANSLATE_JOB, get_source, translated_sources, translation_run_name
from lib.train import TrainConfig, TrainError
from lib.translation import DEFAULT_MT_MODEL, DEFAULT_TRANSLATION_BATCH

NOTEBOOKS = {"train": "03_train.ipynb", "evaluate": "04_evaluate.ipynb", "bias": "05_bias.ipynb",
             "report": "06_report.ipynb"}
ZERO_SHOT = "zero-shot"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


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
    alphas: list[float] = field(default_factory=lambda: [0.5])   # hybrid's alpha (its grid_key)
    sampler_options: dict[str, dict[str, list[float]]] = field(default_factory=dict)   # {sampler: {option: [values]}}
    zero_shot: bool | dict[str, Any] = True     # or {eval_datasets: [...], candidate_contexts: [...]}
    candidate_context: str = "sentence"
    model_folder: str = "model"             # which folder of a training run is evaluated
    tag: str = ""                           # appended to training run names
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)
    bias: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    translation: dict[str, Any] = field(default_factory=dict)    # the translation job: {batch_size: 64}
    debias: list[str] = field(default_factory=lambda: ["none"])   # lib.debias variants of every evaluation
    wise_ft: dict[str, Any] = field(default_factory=dict)         # {lambdas: [0.5], samplers: [...]}
    soups: list[list[str]] = field(default_factory=list)          # [[mono, cross]]: one soup per seed
    budgets: list[int] = field(default_factory=list)              # training steps per budget (a curve)
    distill: list[dict[str, Any]] = field(default_factory=list)   # distillation systems (lib.grid_systems)
    analysis: AnalysisPlan | None = None    # the primary analysis (lib.analysis_plan), fixed before the run
    source: str = ""                        # the file it came from (params/<name>.yaml)

    @property
    def report_run(self) -> str:
        return str(self.report.get("run", f"report-{self.name}"))

    def seeds_for(self, sampler: str) -> list[int]:
        return [int(s) for s in self.seeds_by_sampler.get(sampler, self.seeds)]

    def option_values(self, sampler: str) -> list[dict[str, float]]:
        """Every combination of the values the grid gives the options ``sampler`` declares
        (``sampler_options``, else the top-level key an option names as its ``grid_key``, e.g.
        ``alphas``, else its default): ``[{"alpha": 0.4}, {"alpha": 0.6}]``; ``[{}]`` for none."""
        given = self.sampler_options.get(sampler) or {}
        combinations: list[dict[str, float]] = [{}]
        for name, declared in sampler_class(sampler).params.items():
            values = given.get(name)
            if values is None and declared.grid_key:
                values = getattr(self, declared.grid_key, None)
            values = values if values is not None else [declared.default]
            combinations = [{**c, name: value} for c in combinations for value in _as_list(values, name, self.name)]
        return combinations

    @property
    def evaluated_datasets(self) -> list[str]:
        """Every dataset some cell is evaluated on, in first-mention order."""
        return list(dict.fromkeys([*self.eval_datasets, *(d for m in self.train_datasets for d in m["evaluate"])]))

    def zero_shot_evaluations(self) -> list[tuple[str, list[str]]]:
        """``[(candidate context, [datasets])]`` of the untrained backbone: ``zero_shot: true`` means
        every evaluated dataset with the grid's ``candidate_context``; a mapping names its own
        ``eval_datasets`` and ``candidate_contexts``. Candidate contexts are LAReQA's: another
        dataset (MIRACL, Tatoeba) is evaluated once, with the first context."""
        if not self.zero_shot:
            return []
        block = self.zero_shot if isinstance(self.zero_shot, dict) else {}
        datasets = [str(d) for d in block.get("eval_datasets") or self.evaluated_datasets]
        contexts = [str(c) for c in block.get("candidate_contexts") or [self.candidate_context]]
        return [(context, [d for d in datasets if d in LAREQA_DATASETS or context == contexts[0]])
                for context in contexts]


# parameters a grid sets itself, per notebook: the fixed sections may not override them
ZERO_SHOT_KEYS = ("eval_datasets", "candidate_contexts")
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))     # what a grid's train section may set
RESERVED = {"train": {"backbone", "sampler", "sampler_options", "train_sources", "seed", "run"},
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
    try:
        raw = read_yaml_mapping(path, "grid keys")
    except ValueError as error:
        raise GridError(str(error)) from None
    known = {f.name for f in fields(Grid)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GridError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    values = dict(raw)
    values.setdefault("name", path.stem)
    samplers = raw.get("samplers", [])
    if "alphas" in raw and "hybrid" not in (samplers if isinstance(samplers, list) else [samplers]):
        raise GridError(f"{path}: alphas {raw['alphas']!r} apply to no cell (only the hybrid sampler has an alpha; "
                        f"samplers: {samplers!r}); remove alphas or add hybrid to samplers")
    for key in ("backbones", "samplers", "train_datasets", "eval_datasets", "seeds", "alphas", "budgets"):
        if key in values:
            values[key] = _as_list(values[key], key, str(path))
    for key in ("train", "evaluate", "bias", "report", "estimate", "translation", "seeds_by_sampler", "sampler_options"):
        values[key] = values.get(key) or {}
        if not isinstance(values[key], dict):
            raise GridError(f"{path}: {key} must be a mapping")
    if isinstance(values.get("zero_shot"), dict):
        block = values["zero_shot"]
        unknown = sorted(set(block) - set(ZERO_SHOT_KEYS))
        if unknown:
            raise GridError(f"{path}: zero_shot has unknown keys {unknown}; expected some of {list(ZERO_SHOT_KEYS)}")
        values["zero_shot"] = {k: _as_list(v, f"zero_shot.{k}", str(path)) for k, v in block.items()}
    values["seeds_by_sampler"] = {k: _as_list(v, f"seeds_by_sampler.{k}", str(path))
                                  for k, v in values["seeds_by_sampler"].items()}
    values["wise_ft"] = values.get("wise_ft") or {}
    values["soups"] = _as_list(values.get("soups"), "soups", str(path))
    values["distill"] = _as_list(values.get("distill"), "distill", str(path))
    try:
        distill_systems(values["distill"], str(path))
        values["debias"] = debias_variants(values.get("debias"), str(path))
        check_weight_space(values["wise_ft"], values["soups"], values.get("samplers") or [], str(path))
    except GridSystemsError as error:
        raise GridError(str(error)) from error
    try:
        values["analysis"] = parse_analysis(values.get("analysis"), f"{path}: analysis")
        check_plan_seeds(values["analysis"], values.get("seeds") or [0], str(path))
    except AnalysisPlanError as error:
        raise GridError(str(error)) from None
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
    if not grid.samplers and not grid.distill and not grid.zero_shot:
        raise GridError(f"{where}: no sampler and zero_shot false: the grid has no cell")
    if (grid.samplers or grid.distill) and not grid.train_datasets:
        raise GridError(f"{where}: samplers or distill given but train_datasets is empty")
    _check_sampler_options(grid, where)
    if not grid.eval_datasets:
        raise GridError(f"{where}: eval_datasets is empty; expected some of {DATASETS}")
    _check_datasets(where, "evaluation", grid.eval_datasets)
    for mixture in grid.train_datasets:
        sources = [s for s in mixture["train"].split(",") if s]
        if not sources:
            raise GridError(f"{where}: empty training mixture in train_datasets")
        _check_datasets(where, "evaluation", mixture["evaluate"])
        overlap = sorted(set(sources) & set(mixture["evaluate"]))
        if overlap:
            raise GridError(f"{where}: training mixture {mixture['train']!r} is evaluated on {overlap}, which it "
                            "trains on: train on mlqa-r and evaluate on xquad-r, or the reverse")
    zero_shot_contexts = [c for c, _ in grid.zero_shot_evaluations()]
    for context in [grid.candidate_context, *zero_shot_contexts]:
        if context not in CANDIDATE_CONTEXTS:
            raise GridError(f"{where}: candidate context {context!r}: expected one of {CANDIDATE_CONTEXTS}")
    _check_datasets(where, "zero-shot evaluation", [d for _, datasets in grid.zero_shot_evaluations() for d in datasets])
    unknown = sorted(set(grid.train) - set(TRAIN_FIELDS))
    if unknown:
        raise GridError(f"{where}: train sets {unknown}, which are not fields of lib.train.TrainConfig; "
                        f"expected some of {sorted(set(TRAIN_FIELDS) - RESERVED['train'])}")
    for section in ("train", "evaluate", "bias", "report"):
        clash = sorted(set(getattr(grid, section)) & (RESERVED[section] - ({"run"} if section == "report" else set())))
        if clash:
            raise GridError(f"{where}: {section} sets {clash}, which the grid sets per cell; remove them")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in grid.budgets) \
            or len(set(grid.budgets)) != len(grid.budgets):
        raise GridError(f"{where}: budgets must be distinct positive step counts, got {grid.budgets!r}")
    if grid.budgets and "steps" in grid.train:
        raise GridError(f"{where}: train.steps and budgets both set the steps; keep budgets (one training "
                        "per budget) and remove train.steps")
    for seeds in [grid.seeds, *grid.seeds_by_sampler.values()]:
        if not seeds or any(not isinstance(s, int) for s in seeds):
            raise GridError(f"{where}: seeds must be non-empty lists of integers, got {seeds!r}")
    try:  # types as TrainConfig declares them ("1e-4" -> 0.0001), so papermill passes numbers
        typed = TrainConfig(**grid.train)
    except TrainError as error:
        raise GridError(f"{where}: train: {error}") from None
    grid.train = {key: getattr(typed, key) for key in grid.train}
    for job in plan_jobs(grid):
        if not RUN_NAME.match(job.run):
            raise GridError(f"{where}: run name {job.run!r} is not a valid folder name; check tag and datasets")
        if job.kind == "train":  # ranges and settings that do nothing, before any run starts
            try:
                TrainConfig(**job.parameters).check()
            except TrainError as error:
                raise GridError(f"{where}: training run {job.run}: {error}") from None


def _check_sampler_options(grid: Grid, where: str) -> None:
    """``sampler_options`` names samplers of the grid and options they declare; every value in range."""
    for sampler, options in grid.sampler_options.items():
        if sampler not in grid.samplers or not isinstance(options, dict):
            raise GridError(f"{where}: sampler_options.{sampler} must be a mapping of options of one of the "
                            f"grid's samplers {grid.samplers}, e.g. {{hybrid: {{alpha: [0.5]}}}}")
    for sampler in grid.samplers:
        try:
            undeclared = set(grid.sampler_options.get(sampler) or {}) - set(sampler_class(sampler).params)
            check_sampler_options(sampler, dict.fromkeys(undeclared, 0.0))
            for options in grid.option_values(sampler):
                for name, value in options.items():
                    try:
                        check_sampler_options(sampler, {name: value})
                    except SamplingError as error:
                        raise GridError(f"{where}: {name} {value!r} of sampler {sampler!r}: {error}") from None
        except SamplingError as error:
            raise GridError(f"{where}: sampler_options: {error}") from None


def _train_options(cell: "Cell") -> dict[str, Any]:
    """A cell's sampler options as parameters of 03_train: an option with a ``TrainConfig`` field of
    its name (hybrid's ``alpha``) as that field, the others as ``sampler_options`` (``beta=0.2``)."""
    own = {name: value for name, value in cell.options if name in TRAIN_FIELDS}
    rest = ",".join(f"{name}={value:g}" for name, value in cell.options if name not in TRAIN_FIELDS)
    return {**own, **({"sampler_options": rest} if rest else {})}


def _check_datasets(where: str, what: str, datasets: Sequence[str]) -> None:
    """Every dataset has a registered evaluator (``lib.results``; ``lib.evaluate.DATASETS``)."""
    for dataset in datasets:
        if dataset not in DATASETS:
            raise GridError(f"{where}: unknown {what} dataset {dataset!r}; expected one of {DATASETS} "
                            "(evaluators registered in lib.results)")


# --------------------------------------------------------------------------------------------
# cells and jobs


def analyses_bias(dataset: str) -> bool:
    """05_bias (``lib.bias``) and the ``lib.debias`` variants need LAReQA's multilingual pool of
    parallel candidates: other datasets (MIRACL, Tatoeba) are evaluated, not analysed for bias."""
    return dataset in LAREQA_DATASETS


def debias_variants_of(grid: Grid, dataset: str) -> list[str]:
    """The grid's ``debias`` variants on a LAReQA dataset; ``["none"]`` elsewhere (lib.evaluate refuses them)."""
    return list(grid.debias) if analyses_bias(dataset) else ["none"]


@dataclass(frozen=True)
class Cell:
    """One configuration: a backbone trained with one sampler, its option values, seed and training mixture
    (``sampler == "zero-shot"``: the untrained backbone, no training run; ``method`` wise-ft | soup:
    a model merged from the training runs ``merged``, ``train_run`` then names the merge run; ``method``
    distill: trained with the objective fields ``train`` of a ``lib.grid_systems.DistillSystem``)."""

    backbone: str
    sampler: str
    options: tuple[tuple[str, float], ...] | None     # the sampler's declared options and their values
    seed: int | None
    train_sources: str | None
    train_run: str | None
    eval_runs: tuple[tuple[str, str], ...]      # (dataset, run)
    candidate_context: str = "sentence"
    method: str = "sampler"                     # sampler | wise-ft | soup | distill
    merged: tuple[str, ...] = ()                # wise-ft, soup: the training runs merged
    label: str = ""                             # wise-ft, soup, distill: the system's name (lib.naming)
    lam: float | None = None                    # wise-ft: the weight of the fine-tuned model
    budget: int | None = None                   # budget grids: the training steps of this cell
    train: tuple[tuple[str, Any], ...] = ()     # distill: the TrainConfig fields of its objective

    @property
    def system(self) -> str:
        """:func:`lib.naming.system_name` (`` @<steps>`` in a budget grid); zero-shot on paragraphs is
        its own system, ``zero-shot paragraph``."""
        if self.label:
            return self.label
        if self.sampler == ZERO_SHOT and self.candidate_context != "sentence":
            return f"{ZERO_SHOT} {self.candidate_context}"
        return budget_system_name(system_name(self.sampler, option_labels(self.sampler, dict(self.options))
                                              if self.options else None), self.budget)


def expand_cells(grid: Grid) -> list[Cell]:
    """Zero-shot cells first (one per backbone and candidate context), then backbone x mixture x
    seed x sampler x the sampler's option values."""
    cells = []
    context = grid.candidate_context
    for backbone in grid.backbones:
        for zero_shot_context, datasets in grid.zero_shot_evaluations():
            cells.append(Cell(backbone, ZERO_SHOT, None, None, None, None, tuple(
                (d, zero_shot_run_name(backbone, d, zero_shot_context)) for d in datasets), zero_shot_context))
    for backbone in grid.backbones:
        for mixture in grid.train_datasets:
            sources = mixture["train"]
            # seed-major: every sampler's first seed, then every sampler's second, ... so that a grid
            # stopped early still compares the samplers on equal footing
            distill = distill_systems(grid.distill, grid.source or grid.name)
            seeds = sorted({seed for sampler in grid.samplers for seed in grid.seeds_for(sampler)}
                           | {seed for system in distill for seed in system.seeds or grid.seeds})
            for budget in grid.budgets or [None]:       # smallest budget first: its curve point comes early
                for seed in seeds:
                    cells += _sampler_cells(grid, backbone, mixture, seed, budget)
                    cells += _distill_cells(grid, backbone, mixture, seed, budget, distill)
    evaluated = {c.train_run: c.eval_runs for c in cells}
    samplers = [c for c in cells if c.train_run and c.method == "sampler"]
    for merged in weight_systems(samplers, grid.wise_ft, grid.soups, grid.tag):
        datasets = [d for d, _ in evaluated[merged.inputs[0]]]
        sampler = "+".join(c.sampler for c in cells if c.train_run in merged.inputs)
        cells.append(Cell(merged.backbone, sampler, None, merged.seed, merged.sources, merged.run, tuple(
            (d, eval_run_name(merged.run, d, context)) for d in datasets), context, merged.method, merged.inputs,
            merged.system, merged.lam, merged.budget))
    return cells


def _sampler_cells(grid: Grid, backbone: str, mixture: dict[str, Any], seed: int, budget: int | None) -> list[Cell]:
    """The trained cells of one backbone, mixture, seed and budget: every sampler x its option values."""
    cells, context, sources = [], grid.candidate_context, mixture["train"]
    for sampler in grid.samplers:
        if seed not in grid.seeds_for(sampler):
            continue
        for options in grid.option_values(sampler):
            options = {name: float(value) for name, value in options.items()}
            train = train_run_name(backbone, sampler, option_labels(sampler, options), sources, seed,
                                   join_tags(grid.tag, budget_tag(budget)))
            cells.append(Cell(backbone, sampler, tuple(options.items()), seed, sources, train, tuple(
                (d, eval_run_name(train, d, context)) for d in mixture["evaluate"]), context, budget=budget))
    return cells


def _distill_cells(grid: Grid, backbone: str, mixture: dict[str, Any], seed: int, budget: int | None,
                   distill) -> list[Cell]:
    """The distillation systems' cells of one backbone, mixture, seed and budget (``lib.grid_systems.DistillSystem``)."""
    cells, context, sources = [], grid.candidate_context, mixture["train"]
    for system in (s for s in distill if seed in (s.seeds or grid.seeds)):
        train = train_run_name(backbone, system.sampler, system.labels, sources, seed,
                               join_tags(grid.tag, budget_tag(budget)), objective=system.run_part)
        cells.append(Cell(backbone, system.sampler, tuple(system.options.items()), seed, sources, train, tuple(
            (d, eval_run_name(train, d, context)) for d in mixture["evaluate"]), context, "distill",
            label=budget_system_name(system.system, budget), train=system.train, budget=budget))
    return cells


def grid_sources(grid: Grid) -> list[str]:
    """Every registered source the grid's trainings read: the mixtures' and ``train.validation_source``."""
    sources = [s for mixture in grid.train_datasets for s in mixture["train"].split(",") if s]
    if grid.samplers and grid.train.get("validation_source"):
        sources.append(str(grid.train["validation_source"]))
    return list(dict.fromkeys(sources))


def translation_job(grid: Grid) -> Job | None:
    """The one machine-translation job of the grid (``lib.sources.translate_sources_job``), or None
    when no training source is translated: every translated source, the grid's ``translation_model``
    and ``translation.batch_size``; every training needs it, so translation runs once, first, and the
    trainings (any number of workers) read its cache."""
    sources = translated_sources(grid_sources(grid)) if grid.samplers else []
    if not sources:
        return None
    unknown = sorted(set(grid.translation) - {"batch_size"})
    if unknown:
        raise GridError(f"{grid.source or grid.name}: translation has unknown keys {unknown}; expected batch_size")
    model = str(grid.train.get("translation_model") or "")
    parameters = {"sources": sources, "translation_model": model, "max_negatives": int(grid.train.get("max_negatives", 3)),
                  "batch_size": int(grid.translation.get("batch_size", DEFAULT_TRANSLATION_BATCH))}
    return Job("translate", TRANSLATE_JOB, translation_run_name(sources, model or DEFAULT_MT_MODEL), parameters)


def plan_jobs(grid: Grid) -> list[Job]:
    """Every notebook execution of the grid, in order: the translation job (if a source is
    translated), then per cell train, evaluations, bias (LAReQA datasets only, :func:`analyses_bias`);
    then the samplers' comparisons and the report."""
    translate = translation_job(grid)
    jobs = [translate] if translate else []
    for cell in expand_cells(grid):
        if cell.merged:
            parameters = {"method": cell.method, "models": [str(outputs_dir() / r / grid.model_folder) for r in cell.merged],
                          "model_folder": grid.model_folder}
            if cell.method == "wise-ft":
                parameters.update(zero_shot=cell.backbone, lam=cell.lam)
            jobs.append(Job("merge", MERGE_JOB, cell.train_run, parameters, cell, needs=cell.merged))
        elif cell.train_run:
            parameters = {"backbone": cell.backbone, "sampler": cell.sampler, "train_sources": cell.train_sources,
                          "seed": cell.seed, **grid.train, **_train_options(cell), **dict(cell.train),
                          **({"steps": cell.budget} if cell.budget else {})}
            jobs.append(Job("train", NOTEBOOKS["train"], cell.train_run, parameters, cell,
                            needs=(translate.run,) if translate else ()))
        for dataset, eval_run in cell.eval_runs:
            backbone = (str(outputs_dir() / cell.train_run / grid.model_folder) if cell.train_run else cell.backbone)
            variants = debias_variants_of(grid, dataset)
            debias = {"debias": ",".join(variants)} if len(variants) > 1 else {}
            jobs.append(Job("evaluate", NOTEBOOKS["evaluate"], eval_run,
                            {"backbone": backbone, "dataset": dataset, "candidate_context": cell.candidate_context,
                             **grid.evaluate, **debias}, cell, dataset, needs=(cell.train_run,) if cell.train_run else ()))
            if analyses_bias(dataset):
                jobs.append(Job("bias", NOTEBOOKS["bias"], bias_run_name(eval_run), {"runs": eval_run, **grid.bias},
                                cell, dataset, needs=(eval_run,)))
    jobs += comparison_jobs(grid)
    report = {k: v for k, v in grid.report.items() if k != "run"}
    jobs.append(Job("report", NOTEBOOKS["report"], grid.report_run, {"grid": _grid_reference(grid), **report}))
    return jobs


def comparison_jobs(grid: Grid) -> list[Job]:
    """One ``05_bias`` comparison per (backbone, training mixture, LAReQA dataset): the zero-shot run
    and the first seed of every sampler side by side (figures of the samplers against each other)."""
    jobs = []
    cells = expand_cells(grid)
    for backbone in grid.backbones:
        zero_shot = {d: r for c in cells if c.backbone == backbone and not c.train_run
                     and c.candidate_context == grid.candidate_context for d, r in c.eval_runs}
        for mixture in grid.train_datasets:
            trained = [c for c in cells if c.backbone == backbone and c.train_sources == mixture["train"]
                       and c.method == "sampler"]
            for dataset in filter(analyses_bias, mixture["evaluate"]):
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
    """One row per (cell, evaluation dataset, debias variant): the configuration and its run names.

    ``base_system`` is the system before debiasing (``system`` adds `` + <variant>``), ``method``
    sampler | wise-ft | soup | distill; a variant's bias run is the evaluation's (05_bias runs on ``none``);
    datasets other than LAReQA's have neither variants nor a bias run.
    """
    rows = []
    for cell in expand_cells(grid):
        for dataset, eval_run in cell.eval_runs:
            for variant in debias_variants_of(grid, dataset):
                rows.append({"backbone": cell.backbone, "system": debias_system_name(cell.system, variant),
                             "sampler": cell.sampler, **dict(cell.options or ()), "seed": cell.seed,
                             "train_sources": cell.train_sources, "dataset": dataset, "train_run": cell.train_run,
                             "eval_run": debias_run_name(eval_run, variant), "bias_run": bias_run_name(eval_run)
                             if variant == "none" and analyses_bias(dataset) else None,
                             "base_system": cell.system, "method": cell.method, "budget": cell.budget,
                             "debias": variant, "transductive": variant.endswith("-transductive")})
    return pd.DataFrame(rows)


def check_notebook_parameters(grid: Grid, notebooks_dir: Path | None = None) -> None:
    """Every parameter the grid passes is a parameter of its notebook (typos fail before hours of work)."""
    notebooks_dir = notebooks_dir or NOTEBOOKS_DIR
    expected: dict[str, set[str]] = {}
    for job in plan_jobs(grid):
        if job.kind not in ("merge", "translate"):
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


def translation_texts(grid: Grid) -> dict[str, int]:
    """English texts the translation job translates, per source and target language summed: per
    question its query, its positive and up to ``max_negatives`` negatives (where the source has
    any), questions = ``max_queries`` or the declared ``size``; times the target languages. An upper
    bound: repeated texts (shared plots, articles) are translated once."""
    job = translation_job(grid)
    texts = {}
    for name in (job.parameters["sources"] if job else []):
        source = get_source(name)
        questions = min(q for q in (source.max_queries, source.size) if q) if (source.max_queries or source.size) else 0
        negatives = job.parameters["max_negatives"] if (source.negative_when or "negatives" in source.columns) else 0
        texts[name] = int(questions) * (2 + negatives) * len(source.translate_to)
    return texts


def estimate_seconds(grid: Grid) -> pd.DataFrame:
    """Expected duration of each job from the grid's ``estimate`` section (seconds_per_step,
    train_overhead_s, evaluation_minutes per dataset, bias_s, report_s, translation_texts_per_s,
    job_overhead_s: process start and model load, added to every job); complete runs cost 0."""
    estimate = grid.estimate
    per_step = float(estimate.get("seconds_per_step", 0))
    overhead = float(estimate.get("job_overhead_s", 0))
    rows = []
    for job in plan_jobs(grid):
        if job.kind == "translate":
            rate = float(estimate.get("translation_texts_per_s", 0))
            seconds = sum(translation_texts(grid).values()) / rate if rate else 0.0
        elif job.kind == "train":
            seconds = per_step * float(job.parameters.get("steps", 0)) + float(estimate.get("train_overhead_s", 0))
        elif job.kind == "merge":
            seconds = float(estimate.get("merge_s", 0))
        elif job.kind == "evaluate":
            seconds = 60 * float((estimate.get("evaluation_minutes") or {}).get(job.dataset, 0))
        else:
            runs = len(str(job.parameters.get("runs", "")).split(",")) if job.kind == "bias" else 1
            seconds = float(estimate.get(f"{job.kind}_s", 0)) * runs
        seconds += overhead
        rows.append({"kind": job.kind, "run": job.run, "complete": is_complete(job.run), "estimate_s": seconds})
    table = pd.DataFrame(rows)
    table["remaining_s"] = np.where(table.complete & (table.kind != "report"), 0.0, table.estimate_s)
    return table


def estimate_arithmetic(grid: Grid) -> list[str]:
    """How ``estimate_seconds`` adds up, one line per job kind (printed by ``--dry-run``)."""
    estimate, table = grid.estimate, estimate_seconds(grid)
    overhead = float(estimate.get("job_overhead_s", 0))
    lines = []
    texts = translation_texts(grid)
    if texts:
        rate = float(estimate.get("translation_texts_per_s", 0))
        total = sum(texts.values())
        lines.append(f"translate: {' + '.join(f'{n} {t:,}' for n, t in texts.items())} = {total:,} texts "
                     + (f"/ {rate:g} texts/s = {total / rate / 3600:.2f} h" if rate else "(no translation_texts_per_s: 0)"))
    for kind, rows in table.groupby("kind", sort=False):
        if kind == "train":
            steps = sorted({int(j.parameters.get("steps", 0)) for j in plan_jobs(grid) if j.kind == "train"})
            lines.append(f"train: {len(rows)} runs x ({'/'.join(map(str, steps))} steps x "
                         f"{float(estimate.get('seconds_per_step', 0)):g} s + {float(estimate.get('train_overhead_s', 0)):g} s"
                         f" + {overhead:g} s per job) = {rows.estimate_s.sum() / 3600:.2f} h")
        elif kind == "evaluate":
            per = (estimate.get("evaluation_minutes") or {})
            datasets = pd.Series([j.dataset for j in plan_jobs(grid) if j.kind == "evaluate"]).value_counts()
            detail = " + ".join(f"{n} {d} x {float(per.get(d, 0)):g} min" for d, n in datasets.items())
            lines.append(f"evaluate: {detail} (+ {overhead:g} s per job) = {rows.estimate_s.sum() / 3600:.2f} h")
        elif kind != "translate":
            lines.append(f"{kind}: {len(rows)} jobs = {rows.estimate_s.sum() / 3600:.2f} h (incl. {overhead:g} s per job)")
    lines.append(f"total: {table.estimate_s.sum() / 3600:.2f} h for one worker (guesses from the grid's `estimate` "
                 "section, not measurements)")
    return lines


def plan_needs(grid: Grid, workers: int = 1) -> PlanNeeds:
    """What the plan downloads and writes, for ``lib.downloads.preflight``."""
    jobs = plan_jobs(grid)
    trained, merged = {}, {}
    for job in jobs:
        if job.kind == "train":
            trained[job.cell.backbone] = trained.get(job.cell.backbone, 0) + 1
        elif job.kind == "merge":
            merged[job.cell.backbone] = merged.get(job.cell.backbone, 0) + 1
    miracl = list(dict.fromkeys(j.cell.backbone for j in jobs if j.kind == "evaluate" and j.dataset == "miracl"))
    evaluated = list(dict.fromkeys(j.dataset for j in jobs if j.kind == "evaluate"))
    data_dir = str(grid.evaluate.get("data_dir") or os.environ.get("MIRACL_DIR", ""))
    return PlanNeeds(list(grid.backbones), grid_sources(grid), evaluated, grid.train.get("translation_model") or None,
                     trained, merged, miracl, bool(grid.evaluate.get("keep_embeddings", False)), workers,
                     {"miracl": data_dir} if data_dir else {})
