"""Model cards of trained models (sentence-transformers' own), their metrics, and the hub upload.

A trained model folder (``outputs/<run>/model``) is saved with sentence-transformers' model card
(``SentenceTransformerModelCardData`` rendered by its template into ``README.md``): base model,
languages, training sources with the loss, and the training hyperparameters (sampler, alpha,
steps, batch, temperature, ...). Each evaluation of that folder adds its summary metrics
(``update_card_metrics``: ``eval_results.json`` beside the card, the card's ``model-index``
metadata and an "Evaluation" section), under a file lock and written atomically, so two
evaluations of one model at once both land. ``push_to_hub`` uploads the folder as it is, card
included; ``--dry-run`` lists what it would upload:

    python -m lib.model_card outputs/<run>/model --repo-id user/me5-small-hybrid --dry-run
"""

from __future__ import annotations

import argparse
import sys
import contextlib
import fcntl
from pathlib import Path
from typing import Any, Iterator, Sequence

from huggingface_hub import EvalResult, HfApi, ModelCard
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from lib.cli import run_cli
from lib.sources import source_languages
from lib.io import read_json, write_json, write_text

METRICS_FILE = "eval_results.json"
SOURCE_NAMES = {"mlqa-r": "MLQA-R", "xquad-r": "XQuAD-R"}
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


def attach_card_data(encoder, data: SentenceTransformerModelCardData, config, base_hub_id: str | None) -> None:
    """Give ``encoder`` the card ``data``; its next ``save(create_model_card=True)`` renders it."""
    encoder.model_card_data = data
    data.register_model(encoder)
    if base_hub_id:
        data.base_model = base_hub_id
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
             "Macro averages over query languages, from `outputs/<run>/metrics.json` of each evaluation.", "",
             "| evaluation run | dataset | metric | value |", "| --- | --- | --- | --- |"]
    for run, entry in sorted(results.items()):
        lines += [f"| {run} | {entry['dataset']} | {name} | {value:.4f} |" for name, value in entry["summary"].items()
                  if isinstance(value, (int, float))]
    return "\n".join(lines + ["", SECTION_END])


def update_card_metrics(model_dir: str | Path, dataset: str, run: str, summary: dict[str, float]) -> Path | None:
    """Add one evaluation's ``summary`` to the card of ``model_dir`` (None: the folder has no card)."""
    model_dir = Path(model_dir)
    card_path = model_dir / "README.md"
    if not card_path.is_file():
        return None
    with _locked(model_dir):
        results = read_json(model_dir / METRICS_FILE) if (model_dir / METRICS_FILE).is_file() else {}
        results[run] = {"dataset": dataset, "summary": summary}
        write_json(model_dir / METRICS_FILE, results)
        card = ModelCard.load(card_path)
        card.data.model_name = card.data.model_name or model_dir.parent.name
        card.data.eval_results = [
            EvalResult(task_type="retrieval", dataset_type=entry["dataset"], dataset_name=entry["dataset"],
                       metric_type=name.replace(" ", "_"), metric_name=name, metric_value=float(value),
                       metric_config=name_of_run)  # the evaluation run, outputs/<run>/
            for name_of_run, entry in sorted(results.items()) for name, value in entry["summary"].items()
            if isinstance(value, (int, float))]
        text = card.text.split(SECTION_START)[0].rstrip() + "\n\n" + _section(results) + "\n"
        if SECTION_END in card.text:
            text += card.text.split(SECTION_END, 1)[1].lstrip("\n")
        card.text = text
        write_text(card_path, str(card))
    return card_path


def push_to_hub(model_dir: str | Path, repo_id: str, dry_run: bool = False, private: bool = True,
                api: HfApi | None = None) -> list[str]:
    """Upload ``model_dir`` (weights, configuration, card) to the model repository ``repo_id``;
    ``dry_run``: upload nothing, return the files it would upload."""
    model_dir = Path(model_dir)
    if not (model_dir / "README.md").is_file() or not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir}: expected a trained model folder with model.safetensors and "
                                "README.md (outputs/<run>/model of lib.train)")
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    if dry_run:
        return files
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model", ignore_patterns=[".*"],
                      commit_message=f"Upload {model_dir.parent.name}/{model_dir.name} (hybrid-batch)")
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
        print(ModelCard.load(Path(args.model_dir) / "README.md").content[:2000])
    return files


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.model_card"))
