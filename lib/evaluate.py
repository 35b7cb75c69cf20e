"""Zero-shot or trained-model evaluation, from a backbone to ``outputs/<run>/``.

``evaluate_lareqa(model, dataset)`` encodes questions and candidates (cached), ranks every
relevant candidate in the mono, cross and multi settings by exact counting (``lib.retrieval``), and turns
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
from lib.encode import encode
from lib.hardware import resolve_precision
from lib.io import run_dir
from lib.metrics import per_query_metrics, summarise, summary_table
from lib.results import EVALUATORS, Evaluation, EvaluationRequest, evaluator_for, register_evaluator, write_evaluation
from lib.retrieval import SETTINGS, lareqa_ranks, score_lareqa

LAREQA_DATASETS = ("xquad-r", "mlqa-r")


def evaluate_lareqa(model, dataset: RetrievalDataset, batch_size: int = 64,
                    settings=SETTINGS, top_k: int = 10, precision: str = "auto") -> Evaluation:
    """Ranks of every relevant candidate per setting -> per-query metrics and the paper's macro
    averages; with ``multi``, also the ``top_k`` neighbours of each multilingual query (``lib.bias``).
    ``precision`` (auto | fp32 | bf16) is the encoding's (``lib.encode``); scores are fp32. The
    pool is scored once (``score_lareqa``): ranks and neighbours both come from that pass."""
    timings = {}
    start = time.perf_counter()
    questions = encode(model, dataset.questions.text, "query", batch_size=batch_size, precision=precision)
    timings["encode_questions_s"] = time.perf_counter() - start
    start = time.perf_counter()
    candidates = encode(model, dataset.candidates.text, "passage", batch_size=batch_size, precision=precision)
    timings["encode_candidates_s"] = time.perf_counter() - start
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
              "precision": resolve_precision(request.precision, model.device),
              "index": "exact inner product on L2-normalised embeddings, ranks by counting (lib.retrieval)"}
    return evaluate_lareqa(model, data, batch_size=request.batch_size, precision=request.precision), config


DATASETS = tuple(EVALUATORS)


def run_evaluation(backbone: str, dataset: str = "xquad-r", candidate_context: str = "sentence",
                   batch_size: int = 64, device: str = "auto", run: str = "",
                   max_questions: int | None = None, languages: list[str] | None = None,
                   data_dir: str | None = None, index: str = "flat",
                   precision: str = "auto") -> tuple[Evaluation, Path]:
    """Everything 04_evaluate does, in one call: load, encode, search, score, write ``outputs/<run>/``.

    ``backbone`` is a registry name (``params/backbones``) or a trained model folder; ``dataset``
    is any registered one: xquad-r or mlqa-r (LAReQA), tatoeba (``lib.tatoeba``) or miracl
    (``lib.miracl``, with ``index`` = flat | ivf | hnsw | ivfpq). ``languages``: None = every
    language of the dataset (MIRACL: the paper's 15). ``precision``: LAReQA's encoding precision
    (auto | fp32 | bf16, ``lib.hardware.resolve_precision``; recorded resolved in config.json).
    """
    evaluator = evaluator_for(dataset)
    request = EvaluationRequest(dataset, candidate_context, batch_size, max_questions, languages, data_dir, index,
                                precision)
    device = default_device() if device == "auto" else device
    started = time.perf_counter()
    model = load_model(backbone, device=device)
    evaluation, dataset_config = evaluator.evaluate(model, request)
    run = run or f"eval-{model.backbone.name}-{dataset}{evaluator.run_suffix(request)}"
    index_description = dataset_config.pop("index")  # last in config.json, as before the registry
    config = {"task": "evaluate", "backbone": backbone, "backbone_settings": model.backbone.as_dict(),
              "dataset": dataset, **dataset_config, "batch_size": batch_size, "device": device,
              "run": run, "index": index_description}
    evaluation.timings["total_s"] = time.perf_counter() - started
    return evaluation, write_evaluation(run_dir(run), evaluation, config)
