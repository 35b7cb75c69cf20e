"""Zero-shot or trained-model evaluation, from a backbone to ``outputs/<run>/``.

``evaluate_lareqa(model, dataset)`` encodes questions and candidates (cached), ranks every
relevant candidate in the mono, cross and multi settings by exact counting (``lib.retrieval``), and turns
the ranks into per-query metrics and the paper's averages (``lib.metrics``). It is registered
for xquad-r and mlqa-r; ``lib.tatoeba`` and ``lib.miracl`` register theirs (``lib.results``),
and ``run_evaluation`` serves any registered dataset. ``EvaluateConfig`` holds 04_evaluate's
parameters (its parameters cell is generated from it) and ``python -m lib.evaluate key=value ...``
runs the same evaluation from a shell; ``--help`` lists every parameter and its default.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lib.miracl  # noqa: F401  registers the miracl evaluator
import lib.tatoeba  # noqa: F401  registers the tatoeba evaluator
from safetensors import SafetensorError

from lib.backbones import BackboneError, default_device, get_backbone, load_model
from lib.cli import run_cli, without_flag
from lib.completion import check_run_claim, record_run
from lib.bias import ALIGNMENT_FILE, NEIGHBOURS_FILE, multilingual_neighbours
from lib.data import CANDIDATE_CONTEXTS, LAREQA_SOURCES, DataError, RetrievalDataset, load_lareqa
from lib.debias_evaluation import debias_statistics, debiased_embeddings, parse_variants
from lib.encode import encode
from lib.hardware import resolve_precision
from lib.io import outputs_dir, run_dir
from lib.naming import debias_run_name
from lib.metrics import METRICS_BY_SETTING, per_query_metrics, summarise, summary_table
from lib.model_card import update_card_metrics
from lib.parameters import param, parse_command_line
from lib.results import (EVALUATORS, Evaluation, EvaluationRequest, evaluator_for, metric_key, parse_metric_key,
                         register_evaluator, request_subset, write_evaluation)
from lib.retrieval import SETTINGS, lareqa_ranks, score_lareqa
from lib.run_files import RUN_DEPTH, TREC_FOLDER, lareqa_run_files
from lib.tracking import log_evaluation
from lib.validation import ParameterError, check_device, check_range, check_run_name, coerce, coerce_fields

LAREQA_DATASETS = ("xquad-r", "mlqa-r")
CLI_ERRORS = (BackboneError, DataError, SafetensorError)    # bad input beyond lib.cli's: one line, exit 2
# what a grid's report reads of each LAReQA run (lib.gather); its tables, tests and verdict are lib.report's
# (by their report labels, the pre-scheme keys "<setting> <metric>"; lib.results keys them {dataset}_<setting>_<metric>)
LAREQA_REPORT_METRICS = ("mono map", "cross map", "multi map", "mono map@20", "cross map@20", "multi map@20",
                         "mono recall@1", "cross recall@1", "multi recall@10", "multi rank_distance")
LAREQA_PRIMARY_METRIC = "{dataset}_multi_map"     # LAReQA's headline: mAP over the multilingual pool


def lareqa_key(dataset: str, label: str) -> str:
    """``"mono map@20"`` of ``dataset`` -> ``xquad-r_mono_map@20`` (``lib.results`` key scheme)."""
    setting, metric = label.split(" ", 1)
    return metric_key(dataset, setting, metric)


def lareqa_legacy_key(key: str) -> str:
    """``xquad-r_mono_map@20`` -> ``"mono map@20"``, its name before the key scheme (and report label)."""
    _, setting, metric = parse_metric_key(key)
    return f"{setting} {metric}"


def lareqa_summary_keys(dataset: str) -> list[str]:
    return [metric_key(dataset, setting, metric) for setting, metrics in METRICS_BY_SETTING.items()
            for metric in metrics]


def evaluate_lareqa(model, dataset: RetrievalDataset, batch_size: int = 64,
                    settings=SETTINGS, top_k: int = 10, run_depth: int = RUN_DEPTH,
                    debias: str = "none", precision: str = "auto") -> Evaluation:
    """Ranks of every relevant candidate per setting -> per-query metrics and the paper's macro
    averages; with ``multi``, also the ``top_k`` neighbours of each multilingual query (``lib.bias``);
    the top ``run_depth`` of every ranking as TREC run files and qrels (``lib.run_files``; 0 = none).
    ``precision`` (auto | fp32 | bf16) is the encoding's (``lib.encode``); scores are fp32. The
    pool is scored once (``score_lareqa``): ranks and neighbours both come from that pass.

    ``debias``: a comma-separated list of ``lib.debias`` variants (``"none,center-pool"``); the
    returned evaluation is ``none``'s, each other variant's is in ``evaluation.variants[name]``,
    ranked from the same (cached) embeddings (``lib.debias_evaluation``).

    Args:
        model: a loaded encoder (``lib.backbones.load_model``).
        dataset: XQuAD-R or MLQA-R as ``lib.data.load_lareqa`` returns it.
        batch_size: texts per encoding batch.
        settings: which of ``mono``, ``cross``, ``multi`` to score (``lib.retrieval.SETTINGS``).
        top_k: neighbours kept per multilingual query (``lib.bias``).
        run_depth: ranks per query written as TREC run files (0: none).
        debias: the variants, as above.
        precision: auto | fp32 | bf16 of the encoding.

    Returns:
        The ``Evaluation`` (summary in the key scheme ``xquad-r_mono_map``..., per-query ranks,
        per-pair tables, neighbours, timings), its debias variants in ``.variants``.

    References:
        Roy et al., "LAReQA: Language-Agnostic Answer Retrieval from a Multilingual Pool", EMNLP
        2020 (arXiv 2004.05484): the datasets and mAP; Elmahdy et al., arXiv 2408.10536: the
        macro-averaging and rank distance; XTREME-R (arXiv 2104.07412): mAP@20.

    Example:
        >>> evaluation = evaluate_lareqa(load_model("me5-small-q4"), load_lareqa("xquad-r"), debias="none,center-pool")
        >>> evaluation.summary["xquad-r_multi_map"]
    """
    timings = {}
    start = time.perf_counter()
    questions = encode(model, dataset.questions.text, "query", batch_size=batch_size, precision=precision)
    timings["encode_questions_s"] = time.perf_counter() - start
    start = time.perf_counter()
    candidates = encode(model, dataset.candidates.text, "passage", batch_size=batch_size, precision=precision)
    timings["encode_candidates_s"] = time.perf_counter() - start
    variants = parse_variants(debias)
    start = time.perf_counter()
    statistics = debias_statistics(model, dataset, variants, batch_size=batch_size, precision=precision)
    if len(variants) > 1:
        timings["encode_debias_statistics_s"] = time.perf_counter() - start
    evaluations = {}
    for spec in variants:
        variant_questions, variant_candidates = debiased_embeddings(spec, dataset, questions, candidates, statistics)
        evaluations[spec.name] = _score(dataset, variant_questions, variant_candidates, settings, top_k,
                                        dict(timings) if spec.method == "none" else {}, run_depth)
        evaluations[spec.name].debias = {**spec.as_dict(), "transductive": spec.transductive,
                                         "statistics": statistics.description.get(spec.source, "none")
                                         if spec.method != "none" else "none"}
    evaluation = evaluations.pop("none")
    evaluation.variants = evaluations
    return evaluation


def _score(dataset: RetrievalDataset, questions, candidates, settings, top_k: int, timings: dict,
           run_depth: int = RUN_DEPTH) -> Evaluation:
    """Rank, score and (multi) find the neighbours with one pair of embedding matrices; the top
    ``run_depth`` of every ranking as TREC run files (0 = none)."""
    start = time.perf_counter()
    scored = score_lareqa(dataset, questions, candidates, k=top_k if "multi" in settings else 1)
    ranks = lareqa_ranks(dataset, questions, candidates, settings, scored=scored)
    timings["search_s"] = time.perf_counter() - start
    tables = {}
    if "multi" in settings:  # what 05_bias needs beyond the relevant ranks, from the same pass
        start = time.perf_counter()
        neighbours = multilingual_neighbours(dataset, questions, candidates, k=top_k, scored=scored)
        timings["neighbours_s"] = time.perf_counter() - start
        tables = {NEIGHBOURS_FILE: neighbours.top_k, ALIGNMENT_FILE: neighbours.alignment}
    run_files = []
    if run_depth:
        start = time.perf_counter()
        run_files = lareqa_run_files(dataset, questions, candidates, ranks, depth=run_depth)
        timings["run_files_s"] = time.perf_counter() - start
    per_query = per_query_metrics(ranks)
    means = summarise(per_query)
    summary = {lareqa_key(dataset.name, label): value
               for label, value in summary_table(means["macro"]).iloc[0].to_dict().items()}
    return Evaluation(summary, means["per_language"], means["per_pair"], per_query, ranks, timings, tables,
                      run_files)


def _lareqa_run_suffix(request: EvaluationRequest) -> str:
    return "" if request.candidate_context == "sentence" else f"-{request.candidate_context}"


@register_evaluator(*LAREQA_DATASETS, run_suffix=_lareqa_run_suffix,
                    report_metrics=tuple("{dataset}_" + label.replace(" ", "_", 1) for label in LAREQA_REPORT_METRICS),
                    primary_metric=LAREQA_PRIMARY_METRIC, summary_keys=lareqa_summary_keys, legacy_key=lareqa_legacy_key)
def _evaluate_lareqa_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict[str, Any]]:
    data = load_lareqa(request.dataset, languages=request.languages, candidate_context=request.candidate_context,
                       data_dir=request.data_dir, max_questions=request.max_questions)
    config = {"candidate_context": request.candidate_context, "languages": data.languages,
              "dataset_revision": f"google-research-datasets/lareqa@{LAREQA_SOURCES[request.dataset]['commit']}",
              "max_questions": request.max_questions, "n_questions": len(data.questions),
              "n_candidates": len(data.candidates),
              "run_files": (f"{TREC_FOLDER}/<setting>.run.gz (top {request.run_depth} per query) and "
                            f"{TREC_FOLDER}/<setting>.qrels" if request.run_depth else "none (run_depth 0)"),
              "precision": resolve_precision(request.precision, model.device),
              "index": "exact inner product on L2-normalised embeddings, ranks by counting (lib.retrieval)"}
    return evaluate_lareqa(model, data, batch_size=request.batch_size, debias=request.debias,
                           precision=request.precision, run_depth=request.run_depth), config


DATASETS = tuple(EVALUATORS)


def check_evaluation_parameters(backbone: str, candidate_context: str, batch_size, max_questions,
                                run: str, run_depth=RUN_DEPTH) -> tuple[int, int | None, int]:
    """Refuse bad evaluation parameters before a model or data is loaded or a folder is created;
    returns ``batch_size``, ``max_questions`` and ``run_depth`` as integers (``"64"`` from a YAML file -> 64)."""
    batch_size = coerce("batch_size", batch_size, int)
    check_range("batch_size", batch_size, low=1)
    run_depth = coerce("run_depth", run_depth, int)
    check_range("run_depth", run_depth, low=0, fix="0 writes no run files")
    max_questions = coerce("max_questions", max_questions, int | None)
    if max_questions is not None:
        check_range("max_questions", max_questions, low=1, fix="None (or leave it out) evaluates every question")
    if candidate_context not in CANDIDATE_CONTEXTS:
        raise ParameterError(f"candidate_context {candidate_context!r}: expected one of {CANDIDATE_CONTEXTS}")
    if run:
        check_run_name(run)
    get_backbone(backbone)  # an unknown name or a folder without a model fails here, not after loading
    return batch_size, max_questions, run_depth


def run_evaluation(backbone: str, dataset: str = "xquad-r", candidate_context: str = "sentence",
                   batch_size: int = 64, device: str = "auto", run: str = "",
                   max_questions: int | None = None, languages: list[str] | None = None,
                   data_dir: str | None = None, index: str = "flat", debias: str = "none",
                   precision: str = "auto", run_depth: int = RUN_DEPTH, keep_embeddings: bool = False,
                   force: bool = False) -> tuple[Evaluation, Path]:
    """Everything 04_evaluate does, in one call: load, encode, search, score, write ``outputs/<run>/``.

    ``backbone`` is a registry name (``params/backbones``) or a trained model folder; ``dataset``
    is any registered one: xquad-r or mlqa-r (LAReQA), tatoeba (``lib.tatoeba``) or miracl
    (``lib.miracl``, with ``index`` = flat | ivf | hnsw | ivfpq). ``languages``: None = every
    language of the dataset (MIRACL: the paper's 15). ``debias`` (LAReQA only): comma-separated
    ``lib.debias`` variants; each one other than ``none`` is written to its own run folder,
    ``<run>-<variant>`` (``lib.naming.debias_run_name``), from the same embeddings. ``precision``:
    LAReQA's encoding precision (auto | fp32 | bf16, ``lib.hardware.resolve_precision``; recorded
    resolved in config.json). ``run_depth``: LAReQA's TREC run files keep the top ``run_depth`` of
    every ranking (0: none). ``keep_embeddings``: MIRACL's corpus embeddings stay on disk after a
    complete evaluation (default: deleted, about 177 GB per 768-dimensional model). A run folder
    that holds another kind of run, or an evaluation with other
    parameters, is refused unless ``force`` (``lib.completion.check_run_claim``); a failed
    evaluation leaves no run folder it created.

    Returns:
        ``(evaluation, path)``: the ``Evaluation`` and its run folder ``outputs/<run>/`` (metrics.json
        with the primary metric and each key's direction, config.json, per-query tables, MTEB and
        TREC files, COMPLETE.json last).

    Example:
        >>> evaluation, path = run_evaluation("outputs/my-hybrid/model", "xquad-r", debias="none,center-pool")
    """
    evaluator = evaluator_for(dataset)
    batch_size, max_questions, run_depth = check_evaluation_parameters(backbone, candidate_context, batch_size,
                                                                       max_questions, run, run_depth)
    check_device(device)
    variants = [spec.name for spec in parse_variants(debias)]
    if len(variants) > 1 and dataset not in LAREQA_DATASETS:
        raise ValueError(f"debias={debias!r} applies to the LAReQA datasets {LAREQA_DATASETS}, not {dataset!r}; "
                         "leave it at 'none'")
    request = EvaluationRequest(dataset, candidate_context, batch_size, max_questions, languages, data_dir, index,
                                debias=",".join(variants), precision=precision, run_depth=run_depth,
                                keep_embeddings=bool(keep_embeddings))
    run = run or f"eval-{get_backbone(backbone).name}-{dataset}{evaluator.run_suffix(request)}"
    claim = {"backbone": backbone, "dataset": dataset, "candidate_context": candidate_context,
             "max_questions": max_questions, "languages": languages, "index": index, "debias": request.debias,
             "precision": precision, "run_depth": run_depth}
    check_run_claim(outputs_dir() / run, "evaluate", claim, "lib.evaluate", force=force)
    device = default_device() if device == "auto" else device
    started = time.perf_counter()
    model = load_model(backbone, device=device)
    evaluation, dataset_config = evaluator.evaluate(model, request)
    index_description = dataset_config.pop("index")  # last in config.json, as before the registry
    config = {"task": "evaluate", "backbone": backbone, "backbone_settings": model.backbone.as_dict(),
              "dataset": dataset, **dataset_config, "batch_size": batch_size, "device": device,
              "run": run, "index": index_description}
    if len(variants) > 1:
        config["debias"] = variants
        config["debias_runs"] = {name: debias_run_name(run, name) for name in variants}
    evaluation.timings["total_s"] = time.perf_counter() - started
    path = _write_or_remove(run, evaluation, config)
    record_run(path, "evaluate", claim, "lib.evaluate", replace=force)
    if model.backbone.source == "path":  # a model folder (resolved from any working directory): its card
        folder = model.backbone.path        # gains this evaluation's metrics, its training's trackers too
        update_card_metrics(folder, dataset, run, evaluation.summary, subset=request_subset(request))
        log_evaluation(folder, evaluation.summary)
    return evaluation, path


def _write_or_remove(run: str, evaluation: Evaluation, config: dict[str, Any]) -> Path:
    """``write_evaluation`` into ``outputs/<run>/``; if it fails (a full or read-only disk), the run
    folders it created are removed, so no partial evaluation is left."""
    folders = [outputs_dir() / name for name in [run, *config.get("debias_runs", {}).values()]]
    new = [folder for folder in folders if not folder.exists()]
    try:
        return write_evaluation(run_dir(run), evaluation, config)
    except BaseException:
        for folder in new:
            shutil.rmtree(folder, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# The step's parameters: notebooks/04_evaluate.ipynb and ``python -m lib.evaluate``


@dataclass
class EvaluateConfig:
    """Every parameter of 04_evaluate (``python -m lib.evaluate --notebook-parameters`` prints its cell)."""

    backbone: str = param("me5-small-q4", "registry name (params/backbones/*.yaml) or trained model folder "
                          "(outputs/<run>/model)", smoke="tiny")
    dataset: str = param("xquad-r", "xquad-r | mlqa-r | tatoeba | miracl")
    candidate_context: str = param("sentence", "sentence | paragraph (XTREME-R's reference evaluation)")
    batch_size: int = param(64, "texts per encoder batch")
    device: str = param("auto", "auto | cpu | cuda | cuda:N")
    max_questions: int | None = param(None, "LAReQA questions kept per language; None (null): all", smoke=40)
    languages: str = param("", "comma-separated subset; empty: all (MIRACL: the paper's 15)")
    index: str = param("flat", "MIRACL: flat | ivf | hnsw | ivfpq")
    debias: str = param("none", "LAReQA: comma-separated lib.debias variants ranked from the same embeddings, "
                        "each written to outputs/<run>-<variant>/ (none, center-pool, center-reference, "
                        "center-transductive, lir-k1-pool ...)")
    precision: str = param("auto", "LAReQA encoding: auto | fp32 | bf16 (lib.hardware; auto: bf16 or fp16 on a GPU, "
                           "bf16 on a CPU with bf16 units, else fp32); scores and metrics stay fp32")
    run_depth: int = param(RUN_DEPTH, "LAReQA: TREC run files (outputs/<run>/trec/) with the top run_depth candidates "
                           "of every ranking; 0: none (full XQuAD-R: ~185 MB and ~60 s per run and variant)")
    keep_embeddings: bool = param(False, "MIRACL: keep the corpus embeddings (outputs/cache/miracl/) after a "
                                  "complete evaluation; false: deleted (about 177 GB per 768-dim model)")
    run: str = param("", "outputs/<run>; empty: eval-<backbone>-<dataset>[-paragraph]")

    def __post_init__(self) -> None:
        """Values as their fields declare (``"64"`` -> 64) and in range, or a ParameterError naming the field."""
        coerce_fields(self)
        check_range("batch_size", self.batch_size, low=1)
        check_range("run_depth", self.run_depth, low=0, fix="0 writes no run files")
        if self.max_questions is not None:
            check_range("max_questions", self.max_questions, low=1, fix="None (or leave it out) evaluates every question")


def evaluate_step(config: EvaluateConfig, force: bool = False) -> tuple[Evaluation, Path]:
    """``run_evaluation`` with a step configuration (the notebook's cell, or the command line)."""
    languages = [lang.strip() for lang in config.languages.split(",") if lang.strip()] or None
    return run_evaluation(config.backbone, dataset=config.dataset, candidate_context=config.candidate_context,
                          batch_size=config.batch_size, device=config.device, run=config.run,
                          max_questions=config.max_questions, languages=languages, index=config.index,
                          debias=config.debias, precision=config.precision, run_depth=config.run_depth,
                          keep_embeddings=config.keep_embeddings, force=force)


def main(argv=None) -> tuple[Evaluation, Path] | None:
    """``python -m lib.evaluate [--config file.yaml] [--force] [key=value ...]``: what 04_evaluate does;
    ``--force`` writes over a run folder that holds another run."""
    argv, force = without_flag(argv, "--force")
    config = parse_command_line(EvaluateConfig, "python -m lib.evaluate",
                                "Evaluate a backbone or trained model on a retrieval benchmark.", argv)
    if config is None:
        return None
    evaluation, path = evaluate_step(config, force=force)
    print(f"outputs: {path}\n" + "\n".join(f"{name}: {value:.4f}" for name, value in evaluation.summary.items()))
    return evaluation, path


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.evaluate", CLI_ERRORS))
