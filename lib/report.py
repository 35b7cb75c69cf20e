"""Tables and figures shared by the notebooks (seaborn), saved under a run folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.io import atomic_path


def language_pair_matrix(per_pair: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """Query language x candidate language matrix of a metric: mono on the diagonal, cross elsewhere."""
    frame = per_pair.reset_index()
    frame = frame[frame.setting.isin(["mono", "cross"])]
    return frame.pivot(index="query_lang", columns="target_lang", values=metric)


def pair_heatmap(per_pair: pd.DataFrame, metric: str = "map", title: str = ""):
    matrix = language_pair_matrix(per_pair, metric)
    size = max(4.0, 0.55 * len(matrix) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(matrix, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, square=True,
                cbar_kws={"label": metric}, ax=axes, annot_kws={"size": 7})
    axes.set_xlabel("candidate language")
    axes.set_ylabel("query language")
    axes.set_title(title or f"{metric} per language pair (diagonal: monolingual)")
    figure.tight_layout()
    return figure


def save_figure(figure, path: str | Path, dpi: int = 150) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    return path
