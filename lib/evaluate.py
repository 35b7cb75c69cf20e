"""Zero-shot or trained-model evaluation, from a backbone to ``outputs/<run>/``.

``evaluate_lareqa(model, dataset)`` encodes questions and candidates (cached), ranks every
relevant candidate in the mono, cross and multi settings with exact faiss search, and turns
the ranks into per-query metrics and the paper's averages (``lib.metrics``). It is registered
for xquad-r and mlqa-r; ``lib.tatoeba`` and ``lib.miracl`` register theirs (``lib.results``),
and ``run_evaluation`` serves any registered dataset.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lib.miracl  # noqa: F401  registers the miracl evaluator
import lib.tatoeba  # noqa: F401  registers the tatoeba evaluator
from lib.backbones import default_device, load_model
from lib.bias import ALIGNMENT_FILE, NEIGHBOURS_FILE, multilingual_neighbours
from lib.data import RetrievalDataset, load_lareqa
from lib.debias_evaluation import debias_statistics, debiased_embeddings, parse_variants
from lib.encode import encode
from lib.io import run_dir
from lib.naming import debias_run_name
from lib.metrics import per_query_metrics, summarise, summary_table
from lib.results import EVALUATORS, Evaluation, EvaluationRequest, evaluator_for, register_evaluator, write_evaluation
from lib.retrieval import SETTINGS, lareqa_ranks

LAREQA_DATASETS = ("xquad-r", "mlqa-r")


def evaluate_lareqa(model, dataset: RetrievalDataset, batch_size: int = 64,
                    settings=SETTINGS, top_k: int = 10, debias: str = "none") -> Evaluation:
    """Ranks of every relevant candidate per setting -> per-query metrics and the paper's macro
    averages; with ``multi``, also the ``top_k`` neighbours of each multilingual query (``lib.bias``).

    ``debias``: a comma-separated list of ``lib.debias`` variants (``"none,center-pool"``); the
    returned evaluation is ``none``'s, each other variant's is in ``evaluation.variants[name]``,
    ranked from the same (cached) embeddings (``lib.debias_evaluation``).
    """
    timings = {}
    start = time.perf_counter()
    questions = encode(model, dataset.questions.text, "query", batch_size=batch_size)
    timings["encode_questions_s"] = time.perf_counter() - start
    start = time.perf_counter()
    candidates = encode(model, dataset.candidates.text, "passage", batch_size=batch_size)
    timings["encode_candidates_s"] = time.perf_counter() - start
    variants = parse_variants(debias)
    start = time.perf_counter()
    statistics = debias_statistics(model, dataset, variants, batch_size=batch_size)
    if len(variants) > 1:
        timings["encode_debias_statistics_s"] = time.perf_counter() - start
    evaluations = {}
    for spec in variants:
        variant_questions, variant_candidates = debiased_embeddings(spec, dataset, questions, candidates, statistics)
        evaluations[spec.name] = _score(dataset, variant_questions, variant_candidates, settings, top_k,
                                        dict(timings) if spec.method == "none" else {})
        evaluations[spec.name].debias = {**spec.as_dict(), "transductive": spec.transductive,
                                         "statistics": statistics.description.get(spec.source, "none")
                                         if spec.method != "none" else "none"}
    evaluation = evaluations.pop("none")
    evaluation.variants = evaluations
    return evaluation


def _score(dataset: RetrievalDataset, questions, candidates, settings, top_k: int, timings: dict) -> Evaluation:
    """Rank, score and (multi) find the neighbours with one pair of embedding matrices."""
    start = time.perf_counter()
    ranks = lareqa_ranks(dataset, questions, candidates, settings)
    timings["search_s"] = time.perf_counter() - start
    tables = {}
    if "multi" in settings:  # what 05_bias needs beyond the relevant ranks, while embeddings are at hand
        start = time.perf_counter()
        neighbours = multilingual_neighbours(dataset, questions, candidates, k=top_k)
        timings["neighbours_s"] = time.perf_counter() - start
        tables = {NEIGHBOURS_FILE: neighbours.top_k, ALIGNMENT_FILE: neighbours.alignment}
    per_query = per_query_metrics(ranks)
    means = summarise(per_query)
    summary = summary_table(means["macro"]).iloc[0].to_dict()
    return Evaluation(summary, means["per_language"], means["per_pair"], per_query, ranks, timings, tables)


def _lareqa_run_suffix(request: EvaluationRequest) -> str:
    return "" if request.candidate_context == "sentence" else f"-{request.candidate_context}"


@register_evaluator(*LAREQA_DATASETS, run_suffix=_lareqa_run_suffix)
def _evaluate_lareqa_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict[str, Any]]:
    data = load_lareqa(request.dataset, languages=request.languages, candidate_context=request.candidate_context,
                       data_dir=request.data_dir, max_questions=request.max_questions)
    config = {"candidate_context": request.candidate_context, "languages": data.languages,
              "max_questions": request.max_questions, "n_questions": len(data.questions),
              "n_candidates": len(data.candidates),
              "index": "faiss IndexFlatIP (exact inner product on L2-normalised embeddings)"}
    return evaluate_lareqa(model, data, batch_size=request.batch_size, debias=request.debias), config


DATASETS = tuple(EVALUATORS)


def run_evaluation(backbone: str, dataset: str = "xquad-r", candidate_context: str = "sentence",
                   batch_size: int = 64, device: str = "auto", run: str = "",
                   max_questions: int | None = None, languages: list[str] | None = None,
                   data_dir: str | None = None, index: str = "flat", debias: str = "none") -> tuple[Evaluation, Path]:
    """Everything 04_evaluate does, in one call: load, encode, search, score, write ``outputs/<run>/``.

    ``backbone`` is a registry name (``params/backbones``) or a trained model folder; ``dataset``
    is any registered one: xquad-r or mlqa-r (LAReQA), tatoeba (``lib.tatoeba``) or miracl
    (``lib.miracl``, with ``index`` = flat | ivf | hnsw | ivfpq). ``languages``: None = every
    language of the dataset (MIRACL: the paper's 15). ``debias`` (LAReQA only): comma-separated
    ``lib.debias`` variants; each one other than ``none`` is written to its own run folder,
    ``<run>-<variant>`` (``lib.naming.debias_run_name``), from the same embeddings.
    """
    evaluator = evaluator_for(dataset)
    variants = [spec.name for spec in parse_variants(debias)]
    if len(variants) > 1 and dataset not in LAREQA_DATASETS:
        raise ValueError(f"debias={debias!r} applies to the LAReQA datasets {LAREQA_DATASETS}, not {dataset!r}; "
                         "leave it at 'none'")
    request = EvaluationRequest(dataset, candidate_context, batch_size, max_questions, languages, data_dir, index,
                                debias=",".join(variants))
    device = default_device() if device == "auto" else device
    started = time.perf_counter()
    model = load_model(backbone, device=device)
    evaluation, dataset_config = evaluator.evaluate(model, request)
    run = run or f"eval-{model.backbone.name}-{dataset}{evaluator.run_suffix(request)}"
    index_description = dataset_config.pop("index")  # last in config.json, as before the registry
    config = {"task": "evaluate", "backbone": backbone, "backbone_settings": model.backbone.as_dict(),
              "dataset": dataset, **dataset_config, "batch_size": batch_size, "device": device,
              "run": run, "index": index_description}
    if len(variants) > 1:
        config["debias"] = variants
        config["debias_runs"] = {name: debias_run_name(run, name) for name in variants}
    evaluation.timings["total_s"] = time.perf_counter() - started
    return evaluation, write_evaluation(run_dir(run), evaluation, config)
