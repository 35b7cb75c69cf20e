"""What a grid downloads on a first run, from the registries' declared sizes (``download_gb``).

Backbones (``params/backbones/*.yaml``), training sources (``params/sources/*.yaml``), the
translation model of every hub-qa source that is translated (``lib.translation.MT_DOWNLOAD_GB``)
and the evaluation datasets (LAReQA ones are registered sources too). A size nobody declared is
shown as unknown (NaN), never guessed: MIRACL's corpus is one (the paper's 15 languages hold about
57 million passages, ``lib.miracl.PASSAGES``; the hub lists no total).

    table = download_table(["xlmr-base"], ["mmarco", "wikiqa"], ["xquad-r", "miracl"])
    checks = preflight(PlanNeeds(["xlmr-base"], ["mmarco", "wikiqa"], ["xquad-r", "miracl"]))

``preflight`` is what a grid checks before any download or job: every download pinned, a hub token
for gated datasets, and free disk against the declared sizes (the arithmetic in each check's lines).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from lib.backbones import get_backbone
from lib.io import cache_dir, outputs_dir
from lib.sources import available_sources, get_source, sources_dir
from lib.translation import MT_DOWNLOAD_GB, MT_REVISIONS, TINY_MT_MODEL


def download_table(backbones: Sequence[str], train_sources: Sequence[str], eval_datasets: Sequence[str],
                   translation_model: str | None = None) -> pd.DataFrame:
    """One row per thing downloaded (kind, name, gb; gb NaN where no size is declared); local
    backbones (tiny, folders) and ``translation_model="tiny-mt"`` download nothing and are left out.
    ``translation_model`` replaces every hub-qa source's own, as ``TrainConfig.translation_model``."""
    rows = []
    for name in dict.fromkeys(backbones):
        backbone = get_backbone(name)
        if backbone.source == "hub":
            rows.append({"kind": "backbone", "name": f"{backbone.hub_id}@{(backbone.revision or '')[:7]}",
                         "gb": backbone.extra.get("download_gb", float("nan"))})
    models = []
    for name in dict.fromkeys([*train_sources, *(d for d in eval_datasets if d in available_sources())]):
        source = get_source(name)
        name_shown = f"{name} (UNPINNED: set revision in params/sources/{name}.yaml)" if (
            source.kind == "hub-qa" and not source.revision) else name
        rows.append({"kind": "source", "name": name_shown,
                     "gb": source.download_gb if source.download_gb is not None else float("nan")})
        if source.kind == "hub-qa" and source.translate_to:
            models.append(translation_model or source.translation_model)
    for model in dict.fromkeys(models):
        if model != "tiny-mt":
            rows.append({"kind": "translation model", "name": model, "gb": MT_DOWNLOAD_GB.get(model, float("nan"))})
    for dataset in dict.fromkeys(d for d in eval_datasets if d not in available_sources()):
        rows.append({"kind": "evaluation", "name": dataset, "gb": float("nan")})
    return pd.DataFrame(rows, columns=["kind", "name", "gb"])


# --------------------------------------------------------------------------------------------
# Plan-time checks: before any download or job (``python -m lib.grid <file> --dry-run`` prints them)

GATED_DATASETS = {"miracl": "miracl/miracl and miracl/miracl-corpus"}   # evaluation datasets behind terms
MIRACL_BYTES_PER_DIM = 4        # float32 corpus embeddings (lib.corpus)


@dataclass
class PreflightCheck:
    """One plan-time check: ``ok`` and the lines that explain it (the arithmetic for disk)."""

    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"[{'ok' if self.ok else 'REFUSED'}] {self.name}"
        return "\n".join([head, *(f"    {line}" for line in self.lines)])


@dataclass
class PlanNeeds:
    """What a plan needs, from the grid (lib.grid_plan builds it): names and counts, no data."""

    backbones: list[str]
    train_sources: list[str]                  # every source of every mixture, and validation sources
    eval_datasets: list[str]
    translation_model: str | None = None
    trained_runs: dict[str, int] = field(default_factory=dict)   # backbone -> training runs (model + model-best)
    merged_runs: dict[str, int] = field(default_factory=dict)    # backbone -> merge runs (one model folder)
    miracl_backbones: list[str] = field(default_factory=list)    # backbones some MIRACL evaluation encodes with
    keep_embeddings: bool = False
    workers: int = 1
    data_dirs: dict[str, str] = field(default_factory=dict)      # dataset -> local folder (no download)


def unpinned_check(needs: PlanNeeds) -> PreflightCheck:
    """Every hub backbone, hub-qa source (unless mirrored: ``HBT_SOURCES_DIR``) and translation model
    the plan downloads names a commit."""
    problems = []
    for name in dict.fromkeys(needs.backbones):
        backbone = get_backbone(name)
        if backbone.source == "hub" and not backbone.revision:
            problems.append(f"backbone {name}: no `revision:` in params/backbones/{name}.yaml (a commit of {backbone.hub_id})")
    mirrored = sources_dir() is not None
    models = []
    for name in dict.fromkeys(needs.train_sources):
        source = get_source(name)
        if source.kind == "hub-qa" and not source.revision and not mirrored:
            problems.append(f"source {name}: `revision: null` in params/sources/{name}.yaml; set a commit of "
                            f"{source.hub_id}, or drop {name} from the grid")
        if source.kind == "hub-qa" and source.translate_to:
            models.append(needs.translation_model or source.translation_model)
    for model in dict.fromkeys(models):
        if model != TINY_MT_MODEL and not MT_REVISIONS.get(model):
            problems.append(f"translation model {model}: no commit in lib.translation.MT_REVISIONS")
    return PreflightCheck("pinned: every download names a commit", not problems,
                          problems or ["backbones, sources and translation models are pinned (or read from local mirrors)"])


def gated_check(needs: PlanNeeds, token: str | None = None) -> PreflightCheck:
    """Gated datasets (MIRACL; sources with ``gated: true``) need a hub token (``HF_TOKEN`` or
    ``hf auth login``) and accepted terms, unless read from a local folder."""
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    gated = [f"{name} ({GATED_DATASETS[name]})" for name in dict.fromkeys(needs.eval_datasets)
             if name in GATED_DATASETS and not needs.data_dirs.get(name)]
    if sources_dir() is None:
        gated += [f"{name} ({get_source(name).hub_id})" for name in dict.fromkeys(needs.train_sources)
                  if get_source(name).gated]
    if not gated:
        return PreflightCheck("gated datasets: token", True, ["no gated dataset is downloaded"])
    if token:
        return PreflightCheck("gated datasets: token", True, [f"a hub token is set for {', '.join(gated)} "
                                                              "(the terms must be accepted on the website)"])
    return PreflightCheck("gated datasets: token", False, [
        f"{', '.join(gated)} need a hub token: accept the terms on the dataset pages, then `hf auth login` "
        "(or set HF_TOKEN); or evaluate from a local copy (MIRACL_DIR / evaluate.data_dir), or drop them"])


def disk_check(needs: PlanNeeds, free_outputs_gb: float | None = None, free_cache_gb: float | None = None) -> PreflightCheck:
    """Free space against the plan's declared sizes: downloads (cache), trained models (outputs:
    model/ and model-best/ per training run, weights only) and MIRACL's corpus embeddings (one
    model's per worker at a time, deleted after each complete evaluation unless ``keep_embeddings``).
    Sizes nobody declared count as 0 and are listed."""
    local = [name for name in dict.fromkeys([*needs.train_sources, *needs.eval_datasets]) if _read_locally(name)]
    downloads = download_table(needs.backbones, [s for s in needs.train_sources if s not in local],
                               [d for d in needs.eval_datasets if d not in local], needs.translation_model)
    download_gb = float(downloads.gb.sum())
    unknown = downloads[downloads.gb.isna()].name.tolist()
    lines = [f"downloads: {download_gb:.1f} GB declared" + (f" (+ unknown: {', '.join(unknown)})" if unknown else "")]
    model_gb = 0.0
    for backbone, runs in {**needs.trained_runs}.items():
        size = float(get_backbone(backbone).extra.get("download_gb", 0) or 0)
        merged = needs.merged_runs.get(backbone, 0)
        model_gb += size * (2 * runs + merged)
        lines.append(f"models of {backbone}: {size:g} GB x (2 x {runs} training runs + {merged} merges) "
                     f"= {size * (2 * runs + merged):.1f} GB")
    embedding_gb = 0.0
    if needs.miracl_backbones:
        from lib.miracl import PAPER_LANGUAGES, PASSAGES

        passages = sum(PASSAGES.get(lang, 0) for lang in PAPER_LANGUAGES)
        dim = max(int(get_backbone(b).extra.get("embedding_dim", 768)) for b in needs.miracl_backbones)
        one = passages * dim * MIRACL_BYTES_PER_DIM / 1e9
        copies = len(needs.miracl_backbones) if needs.keep_embeddings else min(needs.workers, len(needs.miracl_backbones))
        embedding_gb = one * copies
        lines.append(f"MIRACL corpus embeddings: {passages:,} passages x {dim} dims x {MIRACL_BYTES_PER_DIM} bytes "
                     f"= {one:.0f} GB per model x {copies} ({'kept' if needs.keep_embeddings else 'at once: deleted after each evaluation'})"
                     f" = {embedding_gb:.0f} GB")
    outputs_gb, cache_gb = model_gb + embedding_gb, download_gb
    free_outputs_gb = _free_gb(outputs_dir()) if free_outputs_gb is None else free_outputs_gb
    free_cache_gb = _free_gb(cache_dir()) if free_cache_gb is None else free_cache_gb
    lines.append(f"outputs/ needs {outputs_gb:.1f} GB, {free_outputs_gb:.1f} GB free; "
                 f"cache needs {cache_gb:.1f} GB, {free_cache_gb:.1f} GB free")
    same_disk = _same_filesystem(outputs_dir(), cache_dir())
    ok = (outputs_gb + cache_gb <= free_outputs_gb) if same_disk else (
        outputs_gb <= free_outputs_gb and cache_gb <= free_cache_gb)
    if not ok:
        lines.append("free space (HBT_OUTPUTS, HBT_CACHE on a larger disk) or shrink the grid")
    return PreflightCheck("free disk against the declared sizes", ok, lines)


def _read_locally(name: str) -> bool:
    """A source or dataset read from a local folder (HBT_SOURCES_DIR, LAREQA_DIR, MIRACL_DIR): no download."""
    if name in available_sources():
        kind = get_source(name).kind
        return bool(os.environ.get("LAREQA_DIR")) if kind == "lareqa" else sources_dir() is not None
    return bool(os.environ.get(f"{name.upper().replace('-', '_')}_DIR"))


def _free_gb(path: Path) -> float:
    for candidate in (Path(path), *Path(path).resolve().parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free / 1e9
    return float("inf")


def _same_filesystem(first: Path, second: Path) -> bool:
    def device(path: Path) -> int | None:
        for candidate in (Path(path), *Path(path).resolve().parents):
            if candidate.exists():
                return os.stat(candidate).st_dev
        return None
    return device(first) == device(second)


def preflight(needs: PlanNeeds) -> list[PreflightCheck]:
    """The three plan-time checks, in order: pinned, gated (token), disk."""
    return [unpinned_check(needs), gated_check(needs), disk_check(needs)]
