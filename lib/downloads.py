"""What a grid downloads on a first run, from the registries' declared sizes (``download_gb``).

Backbones (``params/backbones/*.yaml``), training sources (``params/sources/*.yaml``), the
translation model of every hub-qa source that is translated (``lib.translation.MT_DOWNLOAD_GB``)
and the evaluation datasets (LAReQA ones are registered sources too). A size nobody declared is
shown as unknown (NaN), never guessed: MIRACL's corpus is one (the paper's 15 languages hold about
57 million passages, ``lib.miracl.PASSAGES``; the hub lists no total).

    table = download_table(["xlmr-base"], ["mmarco", "wikiqa"], ["xquad-r", "miracl"])
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from lib.backbones import get_backbone
from lib.sources import available_sources, get_source
from lib.translation import MT_DOWNLOAD_GB


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
