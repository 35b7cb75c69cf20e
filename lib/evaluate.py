"""Zero-shot or trained-model evaluation, from a backbone to ``outputs/<run>/``.

``evaluate_lareqa(model, dataset)`` encodes questions and candidates (cached), ranks every
relevant candidate in the mono, cross and multi settings with exact faiss search, and turns
the ranks into per-query metrics and the paper's averages (``lib.metrics``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lib.data import RetrievalDataset
from lib.encode import encode
from lib.io import atomic_path, write_json, write_provenance
from lib.metrics import per_query_metrics, summarise, summary_table
from lib.retrieval import SETTINGS, lareqa_ranks


@dataclass
class Evaluation:
    """What an evaluation produced: a flat ``summary`` of named metrics (sentence-transformers
    evaluator style), tables per language and per pair, per-query ranks, and timings."""

    summary: dict[str, float]
    per_language: pd.DataFrame
    per_pair: pd.DataFrame | None = None
    per_query: pd.DataFrame | None = None
    ranks: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    neighbours: Any = None  # lib.bias.Neighbours: top-k of every multilingual query, distractor ranks


def evaluate_lareqa(model, dataset: RetrievalDataset, batch_size: int = 64,
                    settings=SETTINGS, top_k: int = 10) -> Evaluation:
    timings = {}
    start = time.perf_counter()
    questions = encode(model, dataset.questions.text, "query", batch_size=batch_size)
    timings["encode_questions_s"] = time.perf_counter() - start
    start = time.perf_counter()
    candidates = encode(model, dataset.candidates.text, "passage", batch_size=batch_size)
    timings["encode_candidates_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ranks = lareqa_ranks(dataset, questions, candidates, settings)
    timings["search_s"] = time.perf_counter() - start
    neighbours = None
    if "multi" in settings:  # what 05_bias needs beyond the relevant ranks, while embeddings are at hand
        from lib.bias import multilingual_neighbours

        start = time.perf_counter()
        neighbours = multilingual_neighbours(dataset, questions, candidates, k=top_k)
        timings["neighbours_s"] = time.perf_counter() - start
    per_query = per_query_metrics(ranks)
    tables = summarise(per_query)
    summary = summary_table(tables["macro"]).iloc[0].to_dict()
    return Evaluation(summary, tables["per_language"], tables["per_pair"], per_query, ranks, timings, neighbours)


def write_evaluation(run_path: str | Path, evaluation: Evaluation, config: dict[str, Any]) -> Path:
    """``config.json``, ``versions.json``, ``metrics.json`` and per-query tables in a run folder."""
    run_path = Path(run_path)
    write_provenance(run_path, config)

    def records(frame):
        return None if frame is None else frame.reset_index().to_dict(orient="records")

    write_json(run_path / "metrics.json", {
        "summary": evaluation.summary, "timings": evaluation.timings,
        "per_language": records(evaluation.per_language), "per_pair": records(evaluation.per_pair),
    })
    frames = {"ranks.parquet": evaluation.ranks, "per_query.parquet": evaluation.per_query}
    if evaluation.neighbours is not None:
        from lib.bias import ALIGNMENT_FILE, NEIGHBOURS_FILE

        frames[NEIGHBOURS_FILE] = evaluation.neighbours.top_k
        frames[ALIGNMENT_FILE] = evaluation.neighbours.alignment
    for name, frame in frames.items():
        if frame is not None:
            with atomic_path(run_path / name) as tmp:
                frame.to_parquet(tmp, index=False)
    return run_path


LAREQA_DATASETS = ("xquad-r", "mlqa-r")
DATASETS = (*LAREQA_DATASETS, "tatoeba", "miracl")


def run_evaluation(backbone: str, dataset: str = "xquad-r", candidate_context: str = "sentence",
                   batch_size: int = 64, device: str = "auto", run: str = "",
                   max_questions: int | None = None, languages: list[str] | None = None,
                   data_dir: str | None = None, index: str = "flat") -> tuple[Evaluation, Path]:
    """Everything 04_evaluate does, in one call: load, encode, search, score, write ``outputs/<run>/``.

    ``backbone`` is a registry name (``params/backbones``) or a trained model folder; ``dataset``
    is xquad-r or mlqa-r (LAReQA), tatoeba (``lib.tatoeba``) or miracl (``lib.miracl``, with
    ``index`` = flat | ivf | hnsw | ivfpq). ``languages``: None = every language of the dataset
    (MIRACL: the paper's 15).
    """
    from lib.backbones import default_device, load_model
    from lib.data import load_lareqa
    from lib.io import run_dir

    if dataset not in DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {DATASETS}")
    device = default_device() if device == "auto" else device
    started = time.perf_counter()
    model = load_model(backbone, device=device)
    if dataset not in LAREQA_DATASETS:
        run = run or f"eval-{model.backbone.name}-{dataset}"
        config = {"task": "evaluate", "backbone": backbone, "backbone_settings": model.backbone.as_dict(),
                  "dataset": dataset, "languages": languages, "batch_size": batch_size, "device": device,
                  "run": run, "index": index if dataset == "miracl" else "exact (lib.tatoeba)"}
        if dataset == "tatoeba":
            from lib.tatoeba import evaluate_tatoeba

            evaluation = evaluate_tatoeba(model, languages=languages, data_dir=data_dir, batch_size=batch_size)
        else:
            from lib.miracl import PAPER_LANGUAGES, evaluate_miracl

            evaluation = evaluate_miracl(model, languages or PAPER_LANGUAGES, data_dir=data_dir, index=index,
                                         batch_size=batch_size)
        evaluation.timings["total_s"] = time.perf_counter() - started
        return evaluation, write_evaluation(run_dir(run), evaluation, config)
    data = load_lareqa(dataset, languages=languages, candidate_context=candidate_context,
                       data_dir=data_dir, max_questions=max_questions)
    name = model.backbone.name
    run = run or f"eval-{name}-{dataset}" + ("" if candidate_context == "sentence" else f"-{candidate_context}")
    config = {
        "task": "evaluate", "backbone": backbone, "backbone_settings": model.backbone.as_dict(),
        "dataset": dataset, "candidate_context": candidate_context, "languages": data.languages,
        "max_questions": max_questions, "n_questions": len(data.questions),
        "n_candidates": len(data.candidates), "batch_size": batch_size, "device": device,
        "run": run, "index": "faiss IndexFlatIP (exact inner product on L2-normalised embeddings)",
    }
    evaluation = evaluate_lareqa(model, data, batch_size=batch_size)
    evaluation.timings["total_s"] = time.perf_counter() - started
    path = write_evaluation(run_dir(run), evaluation, config)
    return evaluation, path
