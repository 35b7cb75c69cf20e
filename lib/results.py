"""What an evaluation produces, how a run folder stores it, and which evaluator serves a dataset.

The lowest layer of evaluation: ``lib.tatoeba``, ``lib.miracl`` and ``lib.evaluate`` (LAReQA)
import it, never the reverse. Each dataset module registers its evaluator here
(``register_evaluator``); ``lib.evaluate.run_evaluation`` looks the dataset up instead of
branching on its name.

    @register_evaluator("tatoeba", report_metrics=("tatoeba_xtreme_r_xx_to_eng", ...))
    def _evaluate_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict]: ...

    evaluation, config_fields = evaluator_for("tatoeba").evaluate(model, request)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from lib.io import atomic_path, write_json, write_provenance
from lib.run_files import TrecRun, write_run_files


@dataclass
class Evaluation:
    """What an evaluation produced: a flat ``summary`` of named metrics (sentence-transformers
    evaluator style), tables per language and per pair, per-query ranks, and timings.
    ``tables`` holds further per-run tables, written as parquet under their file name (LAReQA:
    ``lib.bias``'s neighbours and alignment of every multilingual query). ``run_files``: TREC
    run files and qrels per setting (``lib.run_files``), written under ``trec/``. ``variants``: the
    same evaluation after each ``lib.debias`` method (by name), each written to its own run folder;
    ``debias``: how this one was debiased (empty: not at all)."""

    summary: dict[str, float]
    per_language: pd.DataFrame
    per_pair: pd.DataFrame | None = None
    per_query: pd.DataFrame | None = None
    ranks: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    run_files: list[TrecRun] = field(default_factory=list)
    variants: dict[str, "Evaluation"] = field(default_factory=dict)
    debias: dict[str, Any] = field(default_factory=dict)


def _records(frame: pd.DataFrame | None):
    return None if frame is None else frame.reset_index().to_dict(orient="records")


def write_evaluation(run_path: str | Path, evaluation: Evaluation, config: dict[str, Any]) -> Path:
    """``config.json``, ``versions.json``, per-query tables, TREC run files and, last, ``metrics.json``
    in a run folder (the run counts as complete only once its runner writes ``COMPLETE.json``,
    lib.completion).

    Each debiasing variant goes first to its own folder beside it, ``config["debias_runs"][name]``,
    with the same files and ``debias`` / ``debias_of`` in its config, so the run's own files, and
    its completion marker after them, come after every variant's.
    """
    run_path = Path(run_path)
    for name, variant in evaluation.variants.items():
        variant_run = config["debias_runs"][name]
        write_evaluation(run_path.parent / variant_run, variant, {
            **{k: v for k, v in config.items() if k not in ("debias", "debias_runs")},
            "run": variant_run, "debias": variant.debias, "debias_of": config.get("run", run_path.name)})
    write_provenance(run_path, config)
    write_run_files(run_path, evaluation.run_files)
    frames = {"ranks.parquet": evaluation.ranks, "per_query.parquet": evaluation.per_query, **evaluation.tables}
    for name, frame in frames.items():
        if frame is not None:
            with atomic_path(run_path / name) as tmp:
                frame.to_parquet(tmp, index=False)
    write_json(run_path / "metrics.json", {
        "summary": evaluation.summary, "timings": evaluation.timings,
        "per_language": _records(evaluation.per_language), "per_pair": _records(evaluation.per_pair),
    })
    return run_path


# --------------------------------------------------------------------------------------------
# Evaluator registry: dataset name -> evaluator


@dataclass(frozen=True)
class EvaluationRequest:
    """The settings of one ``run_evaluation`` call that an evaluator may use (each ignores what
    does not apply to its dataset: Tatoeba has no candidate context, LAReQA no index; only
    LAReQA debiases)."""

    dataset: str
    candidate_context: str = "sentence"   # LAReQA: sentence | paragraph
    batch_size: int = 64
    max_questions: int | None = None      # LAReQA: questions kept per language; None = all
    languages: list[str] | None = None    # None = every language of the dataset
    data_dir: str | None = None
    index: str = "flat"                   # MIRACL: flat | ivf | hnsw | ivfpq
    debias: str = "none"                  # LAReQA: comma-separated lib.debias variants, "none" first
    precision: str = "auto"               # LAReQA encoding: auto | fp32 | bf16 (lib.hardware)
    run_depth: int = 100                  # LAReQA: TREC run files with the top run_depth (0 = none)
    keep_embeddings: bool = False         # MIRACL: keep the corpus embeddings after a complete evaluation


# evaluate(model, request) -> (evaluation, the dataset's entries of config.json in order, "index" among them)
EvaluateFn = Callable[[Any, EvaluationRequest], "tuple[Evaluation, dict[str, Any]]"]


@dataclass(frozen=True)
class DatasetEvaluator:
    """How ``run_evaluation`` serves one dataset: ``evaluate``, the suffix of the default run name
    ``eval-<backbone>-<dataset><suffix>`` (LAReQA: ``-paragraph`` for paragraph context), and the
    keys of its ``summary`` that a grid's report tabulates (``report_metrics``, primary first:
    ``lib.gather`` reads them from every run, ``lib.report`` shows their mean ± std over seeds)."""

    name: str
    evaluate: EvaluateFn
    run_suffix: Callable[[EvaluationRequest], str] = lambda request: ""
    report_metrics: tuple[str, ...] = ()


EVALUATORS: dict[str, DatasetEvaluator] = {}


def register_evaluator(*names: str, run_suffix: Callable[[EvaluationRequest], str] | None = None,
                       report_metrics: Sequence[str] = ()):
    """Decorator: serve the datasets ``names`` with the decorated ``evaluate(model, request)``;
    ``report_metrics``: the summary keys a grid report shows, primary first."""
    def register(evaluate: EvaluateFn) -> EvaluateFn:
        for name in names:
            # the same function again (a module reloaded, or run with python -m) replaces the entry
            if name in EVALUATORS and EVALUATORS[name].evaluate.__qualname__ != evaluate.__qualname__:
                raise ValueError(f"dataset {name!r} already has an evaluator "
                                 f"({EVALUATORS[name].evaluate.__qualname__}): register another name")
            EVALUATORS[name] = DatasetEvaluator(name, evaluate, run_suffix or (lambda request: ""),
                                                tuple(report_metrics))
        return evaluate
    return register


def evaluator_for(dataset: str) -> DatasetEvaluator:
    if dataset not in EVALUATORS:
        raise ValueError(f"dataset {dataset!r}: expected one of {tuple(EVALUATORS)} "
                         "(a dataset module registers its evaluator with lib.results.register_evaluator)")
    return EVALUATORS[dataset]
