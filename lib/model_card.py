"""Model cards of trained models (sentence-transformers' own), their metrics, and the hub upload.

A trained model folder (``outputs/<run>/model``) is saved with sentence-transformers' model card
(``SentenceTransformerModelCardData`` rendered by its template into ``README.md``): base model,
languages, training sources with the loss, and the training hyperparameters (sampler, alpha,
steps, batch, temperature, ...). Each evaluation of that folder adds its summary metrics
(``update_card_metrics``: ``eval_results.json`` beside the card, the card's ``model-index``
metadata and an "Evaluation" section), under a file lock and written atomically, so two
evaluations of one model at once both land. The card cites the paper, LAReQA and the backbone
(``citation`` of its ``params/backbones/*.yaml``) and inherits the backbone's licence; an
evaluation of a subset (fewer questions or languages) is listed in the Evaluation section with its
subset and left out of the ``model-index`` metadata. ``push_to_hub`` writes the repository id into
the card's usage example and uploads the folder, card included (a failed upload: ``PushError``,
one line with the login hint); ``--dry-run`` lists what it would upload:

    python -m lib.model_card outputs/<run>/model --repo-id user/me5-small-hybrid --dry-run
"""

from __future__ import annotations

import argparse
import sys
import contextlib
import fcntl
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from huggingface_hub import EvalResult, HfApi, ModelCard
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from lib.cli import run_cli
from lib.sources import source_languages
from lib.io import read_json, write_json, write_text

METRICS_FILE = "eval_results.json"
SOURCE_NAMES = {"mlqa-r": "MLQA-R", "xquad-r": "XQuAD-R"}
# evaluation dataset -> (name shown, split evaluated) in the card's model-index
EVAL_DATASETS = {"xquad-r": ("XQuAD-R (LAReQA)", "test"), "mlqa-r": ("MLQA-R (LAReQA)", "test"),
                 "tatoeba": ("Tatoeba (LASER, XTREME)", "test"), "miracl": ("MIRACL", "dev")}
FULL = "full"
PAPER_CITATION = """@article{elmahdy2024synergistic,
  title = {Synergistic Approach for Simultaneous Optimization of Monolingual, Cross-lingual, and Multilingual Information Retrieval},
  author = {Elmahdy, Adel and Lin, Sheng-Chieh and Ahmad, Amin},
  journal = {arXiv preprint arXiv:2408.10536},
  year = {2024}
}"""
LAREQA_CITATION = """@inproceedings{roy2020lareqa,
  title = {LAReQA: Language-Agnostic Answer Retrieval from a Multilingual Pool},
  author = {Roy, Uma and Constant, Noah and Al-Rfou, Rami and Barua, Aditya and Phillips, Aaron and Yang, Yinfei},
  booktitle = {Proceedings of the 2020 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2020},
  url = {https://arxiv.org/abs/2004.05484}
}"""
USAGE_MODEL_ID = re.compile(r'SentenceTransformer\("[^"\n]*"\)')
LOGIN_HINT = ("log in with `hf auth login` (older clients: `huggingface-cli login`) or set HF_TOKEN to a token "
              "with write access to {namespace}, then run the same command again")


class PushError(RuntimeError):
    """An upload to the hub failed; the message names the repository, the cause and the login hint."""
SECTION_START, SECTION_END = "<!-- hybrid-batch evaluation: start -->", "<!-- hybrid-batch evaluation: end -->"
# TrainConfig fields shown as the card's hyperparameters
CARD_HYPERPARAMETERS = ("sampler", "alpha", "source_temperature", "steps", "batch_size", "hard_negatives",
                        "negative_language", "temperature", "symmetric", "learning_rate", "weight_decay",
                        "warmup_ratio", "max_grad_norm", "grad_accumulation", "precision", "seed",
                        "candidate_context", "max_negatives", "freeze_embeddings", "validation_fraction")


def training_card_data(config, backbone, n_train_groups: int, kind: str, step: int) -> SentenceTransformerModelCardData:
    """The card of a model trained as ``config`` (a resolved ``lib.train.TrainConfig``) says, from
    ``backbone`` (``lib.backbones.Backbone``) on ``n_train_groups`` parallel groups (the size shown)."""
    sources = config.source_list()
    languages = config.language_list() or sorted({lang for source in sources for lang in source_languages(source)})
    loss = {"fullname": "lib.losses.InfoNCELoss",
            "config_code": "```json\n" + f'{{"temperature": {config.temperature}, "scale": {1 / config.temperature:g}, '
                           f'"symmetric": {str(config.symmetric).lower()}, "hard_negatives": '
                           f'{str(config.hard_negatives).lower()}}}\n```'}
    objective = getattr(config, "objective", "contrastive")
    if objective != "contrastive":            # distillation (lib.distill): the loss the run really used
        loss = {"fullname": "lib.losses.TrainingObjective", "config_code": "```json\n" + json.dumps(
            {"objective": objective, "distill_weight": config.distill_weight, "distill_target": config.distill_target,
             "distill_target_centering": config.distill_target_centering,
             "distill_teacher": config.distill_teacher or backbone.name, "temperature": config.temperature}) + "\n```"}
    return SentenceTransformerModelCardData(
        language=languages, model_name=f"{backbone.name} fine-tuned with {config.sampler} batches "
        f"(alpha {config.alpha}, {kind} model, step {step})",
        train_datasets=[{"name": SOURCE_NAMES.get(source, source), "size": n_train_groups,
                         "columns": ["question", "answer sentence", "hard negative"], "loss": loss}
                        for source in sources],
        task_name="multilingual passage retrieval (LAReQA: mono, cross and multilingual pools)",
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "dense", "hybrid-batch",
              "multilingual", "retrieval"],
        local_files_only=True, generate_widget_examples=False)


def card_citations(backbone) -> dict[str, str]:
    """The card's BibTeX entries: the paper, LAReQA, the backbone (its YAML's ``citation``)."""
    citations = {"Hybrid batch training (arXiv 2408.10536)": PAPER_CITATION,
                 "LAReQA (XQuAD-R, MLQA-R)": LAREQA_CITATION}
    if getattr(backbone, "citation", ""):
        citations[f"Backbone: {backbone.name}"] = backbone.citation.strip()
    return citations


def attach_card_data(encoder, data: SentenceTransformerModelCardData, config, base_hub_id: str | None) -> None:
    """Give ``encoder`` the card ``data``; its next ``save(create_model_card=True)`` renders it, with
    the citations of :func:`card_citations` and the backbone's licence."""
    encoder.model_card_data = data
    data.register_model(encoder)
    if base_hub_id:
        data.base_model = base_hub_id
    backbone = getattr(encoder, "backbone", None)
    data.citations = card_citations(backbone) if backbone is not None else {}
    if backbone is not None and backbone.license:
        data.license = backbone.license
    data.all_hyperparameters = {name: getattr(config, name) for name in CARD_HYPERPARAMETERS}
    data.non_default_hyperparameters = {"sampler": config.sampler, "alpha": config.alpha, "steps": config.steps,
                                        "batch_size": config.batch_size, "temperature": config.temperature}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / ".model_card.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _section(results: dict[str, dict[str, Any]]) -> str:
    lines = [SECTION_START, "## Evaluation (hybrid-batch)", "",
             "Summary metrics of each evaluation (`outputs/<run>/metrics.json`; LAReQA: macro averages over query "
             "languages). An evaluation of a subset (fewer questions or languages than the dataset has) says so "
             "in the subset column and is left out of the model-index metadata above: its numbers are not the "
             "dataset's.", "",
             "| evaluation run | dataset | subset | metric | value |", "| --- | --- | --- | --- | --- |"]
    for run, entry in sorted(results.items()):
        subset = entry.get("subset") or FULL
        lines += [f"| {run} | {entry['dataset']} | {subset} | {name} | {value:.4f} |"
                  for name, value in entry["summary"].items() if _is_metric(value)]
    return "\n".join(lines + ["", SECTION_END])


def _is_metric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_type(key: str) -> str:
    """The metric of a summary key (``xquad-r_multi_map@20`` -> ``map@20``, lib.results' scheme)."""
    return key.split("_", 2)[2] if key.count("_") >= 2 and " " not in key else key.replace(" ", "_")


def _eval_results(results: dict[str, dict[str, Any]]) -> list[EvalResult]:
    """The model-index entries: every metric of every full evaluation, tagged with its dataset."""
    entries = []
    for run, entry in sorted(results.items()):
        if (entry.get("subset") or FULL) != FULL:
            continue
        name, split = EVAL_DATASETS.get(entry["dataset"], (entry["dataset"], "test"))
        entries += [EvalResult(task_type="retrieval", dataset_type=entry["dataset"], dataset_name=name,
                               dataset_split=split, metric_type=_metric_type(metric), metric_name=metric,
                               metric_value=float(value), metric_config=run)  # the evaluation run, outputs/<run>/
                    for metric, value in entry["summary"].items()
                    if _is_metric(value) and not metric.endswith("n_languages")]   # counts are not scores
    return entries


def update_card_metrics(model_dir: str | Path, dataset: str, run: str, summary: dict[str, float],
                        subset: str = FULL) -> Path | None:
    """Add one evaluation's ``summary`` to the card of ``model_dir`` (None: the folder has no card).
    ``subset``: ``"full"``, or what was evaluated of the dataset ("40 questions per language"):
    listed in the card's Evaluation section, left out of its model-index."""
    model_dir = Path(model_dir)
    card_path = model_dir / "README.md"
    if not card_path.is_file():
        return None
    with _locked(model_dir):
        results = read_json(model_dir / METRICS_FILE) if (model_dir / METRICS_FILE).is_file() else {}
        results[run] = {"dataset": dataset, "subset": subset or FULL, "summary": summary}
        write_json(model_dir / METRICS_FILE, results)
        card = ModelCard.load(card_path)
        card.data.model_name = card.data.model_name or model_dir.parent.name
        card.data.eval_results = _eval_results(results) or None
        text = card.text.split(SECTION_START)[0].rstrip() + "\n\n" + _section(results) + "\n"
        if SECTION_END in card.text:
            text += card.text.split(SECTION_END, 1)[1].lstrip("\n")
        card.text = text
        write_text(card_path, str(card))
    return card_path


def card_for_repo(text: str, repo_id: str) -> str:
    """The card ``text`` with ``repo_id`` in its usage example (``SentenceTransformer("<repo_id>")``,
    in place of sentence-transformers' placeholder or an earlier repository id)."""
    return USAGE_MODEL_ID.sub(f'SentenceTransformer("{repo_id}")', text)


def _check_repo_id(repo_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id {repo_id!r}: expected <user or organisation>/<model name>, e.g. "
                         "someone/me5-small-hybrid")


def push_to_hub(model_dir: str | Path, repo_id: str, dry_run: bool = False, private: bool = True,
                api: HfApi | None = None) -> list[str]:
    """Upload ``model_dir`` (weights, configuration, card) to the model repository ``repo_id``, the
    card's usage example naming ``repo_id`` (:func:`card_for_repo`, written into the folder's card);
    ``dry_run``: change and upload nothing, return the files it would upload. A failed upload raises
    ``PushError`` (one line: the repository, the cause, how to log in)."""
    model_dir = Path(model_dir)
    _check_repo_id(repo_id)
    if not (model_dir / "README.md").is_file() or not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir}: expected a trained model folder with model.safetensors and "
                                "README.md (outputs/<run>/model of lib.train)")
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    if dry_run:
        return files
    with _locked(model_dir):
        card_path = model_dir / "README.md"
        write_text(card_path, card_for_repo(card_path.read_text(encoding="utf-8"), repo_id))
    api = api or HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model", ignore_patterns=[".*"],
                          commit_message=f"Upload {model_dir.parent.name}/{model_dir.name} (hybrid-batch)")
    except Exception as error:  # 401/403/404 from the hub, no token, no network: one line, not a traceback
        cause = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise PushError(f"upload of {model_dir} to {repo_id} failed ({type(error).__name__}: {cause}); "
                        + LOGIN_HINT.format(namespace=repo_id.split("/")[0])) from None
    return files


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m lib.model_card",
                                     description="Upload a trained model folder, with its model card, to the hub.")
    parser.add_argument("model_dir", help="a trained model folder, e.g. outputs/<run>/model")
    parser.add_argument("--repo-id", required=True, help="the model repository, user/name")
    parser.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    parser.add_argument("--dry-run", action="store_true", help="list the files and show the card, upload nothing")
    args = parser.parse_args(argv)
    files = push_to_hub(args.model_dir, args.repo_id, dry_run=args.dry_run, private=not args.public)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} to {args.repo_id}: " + ", ".join(files))
    if args.dry_run:
        print(card_for_repo(ModelCard.load(Path(args.model_dir) / "README.md").content, args.repo_id)[:2000])
    return files


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.model_card", (PushError,)))
