"""What an evaluation produces, how a run folder stores it, and which evaluator serves a dataset.

The lowest layer of evaluation: ``lib.tatoeba``, ``lib.miracl`` and ``lib.evaluate`` (LAReQA)
import it, never the reverse. Each dataset module registers its evaluator here
(``register_evaluator``); ``lib.evaluate.run_evaluation`` looks the dataset up instead of
branching on its name.

    @register_evaluator("tatoeba", report_metrics=("{dataset}_xtreme-r-xx2eng_accuracy", ...), ...)
    def _evaluate_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict]: ...

    evaluation, config_fields = evaluator_for("tatoeba").evaluate(model, request)

One metric key scheme for every evaluator, after sentence-transformers' ``{name}_{score}_{metric}@{k}``:

    {dataset}_{setting}_{metric}[@k]      xquad-r_mono_map@20, tatoeba_xtreme-r-xx2eng_accuracy,
                                           miracl_mean_ndcg@10, xquad-r_multi_rank_distance

``dataset`` and ``setting`` hold no underscore (``parse_metric_key`` splits on the first two);
``setting`` is LAReQA's pool (mono, cross, multi), Tatoeba's language set and direction, MIRACL's
aggregate over languages (mean, median). Each evaluator declares its ``primary_metric`` and every
metric its direction (``greater_is_better``: rank distance lower, counts such as
``miracl_all_n_languages`` none). ``metrics.json`` files written before the scheme are read through
``read_summary`` (each evaluator's ``legacy_key`` maps a key to the name it had); a grid's report
keeps those names as its column labels (``report_columns``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from lib.io import atomic_path, write_json, write_provenance
from lib.mteb_results import write_mteb_result
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
    """``config.json``, ``versions.json``, per-query tables, TREC run files (tagged with the run's
    name), the MTEB result file (``lib.mteb_results``) and, last, ``metrics.json``
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
    write_run_files(run_path, evaluation.run_files, tag=config.get("run", run_path.name))
    write_mteb_result(run_path, evaluation, config)
    frames = {"ranks.parquet": evaluation.ranks, "per_query.parquet": evaluation.per_query, **evaluation.tables}
    for name, frame in frames.items():
        if frame is not None:
            with atomic_path(run_path / name) as tmp:
                frame.to_parquet(tmp, index=False)
    evaluator = EVALUATORS.get(str(config.get("dataset")))
    write_json(run_path / "metrics.json", {
        "summary": evaluation.summary, "primary_metric": evaluator.primary() if evaluator else None,
        "greater_is_better": metric_directions(evaluation.summary), "timings": evaluation.timings,
        "per_language": _records(evaluation.per_language), "per_pair": _records(evaluation.per_pair),
    })
    return run_path


# --------------------------------------------------------------------------------------------
# Metric keys: {dataset}_{setting}_{metric}

LOWER_IS_BETTER = ("rank_distance",)
COUNTS = ("n_languages",)


def metric_key(dataset: str, setting: str, metric: str) -> str:
    """``{dataset}_{setting}_{metric}``; ``dataset`` and ``setting`` without underscores."""
    if "_" in dataset or "_" in setting:
        raise ValueError(f"metric key parts {dataset!r}, {setting!r}: no underscore allowed (use '-')")
    return f"{dataset}_{setting}_{metric}"


def parse_metric_key(key: str) -> tuple[str, str, str]:
    """``(dataset, setting, metric)`` of a key written by ``metric_key``."""
    parts = key.split("_", 2)
    if len(parts) != 3:
        raise ValueError(f"metric key {key!r}: expected {{dataset}}_{{setting}}_{{metric}}")
    return parts[0], parts[1], parts[2]


def greater_is_better(key: str) -> bool | None:
    """The direction of a metric (sentence-transformers' ``greater_is_better``); None for a count."""
    metric = parse_metric_key(key)[2]
    if metric in COUNTS:
        return None
    return metric.split("@")[0] not in LOWER_IS_BETTER


def metric_directions(summary: dict[str, Any]) -> dict[str, bool | None]:
    """``greater_is_better`` of every key of a summary (None also for a key outside the scheme)."""
    return {key: greater_is_better(key) if key.count("_") >= 2 else None for key in summary}


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


def request_subset(request: EvaluationRequest) -> str:
    """``"full"``, or what of the dataset a request evaluates ("40 questions per language; languages
    de,en"): model cards list a subset's metrics apart (``lib.model_card``)."""
    parts = []
    if request.max_questions is not None:
        parts.append(f"{request.max_questions} questions per language")
    if request.languages:
        parts.append("languages " + ",".join(request.languages))
    return "; ".join(parts) or "full"


# evaluate(model, request) -> (evaluation, the dataset's entries of config.json in order, "index" among them)
EvaluateFn = Callable[[Any, EvaluationRequest], "tuple[Evaluation, dict[str, Any]]"]


@dataclass(frozen=True)
class DatasetEvaluator:
    """How ``run_evaluation`` serves one dataset: ``evaluate``, the suffix of the default run name
    ``eval-<backbone>-<dataset><suffix>`` (LAReQA: ``-paragraph`` for paragraph context), and the
    keys of its ``summary`` that a grid's report tabulates (``report_metrics``, ``{dataset}``
    templates: ``lib.gather`` reads them from every run, ``lib.report`` shows their mean ± std
    over seeds), its ``primary_metric`` (a template too), ``summary_keys(dataset)`` (every key its
    summary can hold) and ``legacy_key(key)`` (the key's name in metrics.json files written before
    the scheme, and its report column label)."""

    name: str
    evaluate: EvaluateFn
    run_suffix: Callable[[EvaluationRequest], str] = lambda request: ""
    report_metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    summary_keys: Callable[[str], Sequence[str]] = lambda dataset: ()
    legacy_key: Callable[[str], str] = lambda key: key

    def primary(self) -> str:
        """The primary metric's key for this dataset (``xquad-r_multi_map``)."""
        return self.primary_metric.format(dataset=self.name)

    def report_keys(self) -> list[str]:
        return [template.format(dataset=self.name) for template in self.report_metrics]

    def legacy_keys(self) -> dict[str, str]:
        """Pre-scheme key -> key, for every key this dataset's summary can hold."""
        return {self.legacy_key(key): key for key in self.summary_keys(self.name)}


EVALUATORS: dict[str, DatasetEvaluator] = {}


def register_evaluator(*names: str, run_suffix: Callable[[EvaluationRequest], str] | None = None,
                       report_metrics: Sequence[str] = (), primary_metric: str = "",
                       summary_keys: Callable[[str], Sequence[str]] | None = None,
                       legacy_key: Callable[[str], str] | None = None):
    """Decorator: serve the datasets ``names`` with the decorated ``evaluate(model, request)``;
    ``report_metrics``: the summary keys a grid report shows (``{dataset}`` templates);
    ``primary_metric``: its primary one; ``summary_keys`` / ``legacy_key``: see ``DatasetEvaluator``."""
    def register(evaluate: EvaluateFn) -> EvaluateFn:
        for name in names:
            # the same function again (a module reloaded, or run with python -m) replaces the entry
            if name in EVALUATORS and EVALUATORS[name].evaluate.__qualname__ != evaluate.__qualname__:
                raise ValueError(f"dataset {name!r} already has an evaluator "
                                 f"({EVALUATORS[name].evaluate.__qualname__}): register another name")
            EVALUATORS[name] = DatasetEvaluator(name, evaluate, run_suffix or (lambda request: ""),
                                                tuple(report_metrics), primary_metric or next(iter(report_metrics), ""),
                                                summary_keys or (lambda dataset: ()), legacy_key or (lambda key: key))
        return evaluate
    return register


def read_summary(metrics: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """The ``summary`` of a ``metrics.json`` (its parsed dict) in today's keys: a file written before
    the key scheme has its keys mapped through the dataset's evaluator (``legacy_keys``)."""
    summary = dict(metrics.get("summary") or {})
    evaluator = EVALUATORS.get(str(dataset))
    if evaluator is None:
        return summary
    legacy = evaluator.legacy_keys()
    return {legacy.get(key, key): value for key, value in summary.items()}


def report_columns(dataset: str | None) -> dict[str, str]:
    """Key -> report column label of the metrics a grid report shows of ``dataset`` (the labels are
    the pre-scheme names: "mono map", "tatoeba_xtreme_r_xx_to_eng", "ndcg@10_mean")."""
    evaluator = EVALUATORS.get(str(dataset))
    if evaluator is None:
        return {}
    return {key: evaluator.legacy_key(key) for key in evaluator.report_keys()}


def evaluator_for(dataset: str) -> DatasetEvaluator:
    if dataset not in EVALUATORS:
        raise ValueError(f"dataset {dataset!r}: expected one of {tuple(EVALUATORS)} "
                         "(a dataset module registers its evaluator with lib.results.register_evaluator)")
    return EVALUATORS[dataset]
