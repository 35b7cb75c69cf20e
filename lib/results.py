"""What an evaluation produces, how a run folder stores it, and which evaluator serves a dataset.

The lowest layer of evaluation: ``lib.tatoeba``, ``lib.miracl`` and ``lib.evaluate`` (LAReQA)
import it, never the reverse. Each dataset module registers its evaluator here
(``register_evaluator``); ``lib.evaluate.run_evaluation`` looks the dataset up instead of
branching on its name.

    @register_evaluator("tatoeba")
    def _evaluate_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict]: ...

    evaluation, config_fields = evaluator_for("tatoeba").evaluate(model, request)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from lib.io import atomic_path, write_json, write_provenance


@dataclass
class Evaluation:
    """What an evaluation produced: a flat ``summary`` of named metrics (sentence-transformers
    evaluator style), tables per language and per pair, per-query ranks, and timings.
    ``tables`` holds further per-run tables, written as parquet under their file name (LAReQA:
    ``lib.bias``'s neighbours and alignment of every multilingual query)."""

    summary: dict[str, float]
    per_language: pd.DataFrame
    per_pair: pd.DataFrame | None = None
    per_query: pd.DataFrame | None = None
    ranks: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _records(frame: pd.DataFrame | None):
    return None if frame is None else frame.reset_index().to_dict(orient="records")


def write_evaluation(run_path: str | Path, evaluation: Evaluation, config: dict[str, Any]) -> Path:
    """``config.json``, ``versions.json``, ``metrics.json`` and per-query tables in a run folder."""
    run_path = Path(run_path)
    write_provenance(run_path, config)
    write_json(run_path / "metrics.json", {
        "summary": evaluation.summary, "timings": evaluation.timings,
        "per_language": _records(evaluation.per_language), "per_pair": _records(evaluation.per_pair),
    })
    frames = {"ranks.parquet": evaluation.ranks, "per_query.parquet": evaluation.per_query, **evaluation.tables}
    for name, frame in frames.items():
        if frame is not None:
            with atomic_path(run_path / name) as tmp:
                frame.to_parquet(tmp, index=False)
    return run_path


# --------------------------------------------------------------------------------------------
# Evaluator registry: dataset name -> evaluator


@dataclass(frozen=True)
class EvaluationRequest:
    """The settings of one ``run_evaluation`` call that an evaluator may use (each ignores what
    does not apply to its dataset: Tatoeba has no candidate context, LAReQA no index)."""

    dataset: str
    candidate_context: str = "sentence"   # LAReQA: sentence | paragraph
    batch_size: int = 64
    max_questions: int | None = None      # LAReQA: questions kept per language; None = all
    languages: list[str] | None = None    # None = every language of the dataset
    data_dir: str | None = None
    index: str = "flat"                   # MIRACL: flat | ivf | hnsw | ivfpq
    precision: str = "auto"               # LAReQA encoding: auto | fp32 | bf16 (lib.hardware)


# evaluate(model, request) -> (evaluation, the dataset's entries of config.json in order, "index" among them)
EvaluateFn = Callable[[Any, EvaluationRequest], "tuple[Evaluation, dict[str, Any]]"]


@dataclass(frozen=True)
class DatasetEvaluator:
    """How ``run_evaluation`` serves one dataset: ``evaluate`` and the suffix of the default
    run name ``eval-<backbone>-<dataset><suffix>`` (LAReQA: ``-paragraph`` for paragraph context)."""

    name: str
    evaluate: EvaluateFn
    run_suffix: Callable[[EvaluationRequest], str] = lambda request: ""


EVALUATORS: dict[str, DatasetEvaluator] = {}


def register_evaluator(*names: str, run_suffix: Callable[[EvaluationRequest], str] | None = None):
    """Decorator: serve the datasets ``names`` with the decorated ``evaluate(model, request)``."""
    def register(evaluate: EvaluateFn) -> EvaluateFn:
        for name in names:
            # the same function again (a module reloaded, or run with python -m) replaces the entry
            if name in EVALUATORS and EVALUATORS[name].evaluate.__qualname__ != evaluate.__qualname__:
                raise ValueError(f"dataset {name!r} already has an evaluator "
                                 f"({EVALUATORS[name].evaluate.__qualname__}): register another name")
            EVALUATORS[name] = DatasetEvaluator(name, evaluate, run_suffix or (lambda request: ""))
        return evaluate
    return register


def evaluator_for(dataset: str) -> DatasetEvaluator:
    if dataset not in EVALUATORS:
        raise ValueError(f"dataset {dataset!r}: expected one of {tuple(EVALUATORS)} "
                         "(a dataset module registers its evaluator with lib.results.register_evaluator)")
    return EVALUATORS[dataset]
