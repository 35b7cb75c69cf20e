"""Ranking metrics of LAReQA and XTREME-R, computed from the ranks of the relevant items.

A ranking is summarised by the 1-based ranks ``r_1 < ... < r_R`` of its ``R`` relevant items in
the full candidate ranking. Then, per query:

* average precision  AP      = (1/R) * sum_k k / r_k            (over the full ranking; as
  ``sklearn.metrics.average_precision_score``, which LAReQA's reference code uses)
* XTREME-R's AP@20           = sum_{k: r_k <= 20} (k / r_k) / min(R, 20)
* Recall@K                   = |{k: r_k <= K}| / R              (R@1 mono/cross, R@10 multi)
* rank distance (bias)       = r_R - r_1                        (multilingual ranking; 0 when R=1)

Averages: per query -> mean per (query language, candidate language) setting -> mean over the
candidate languages of a query language -> macro mean over query languages (paper.md). With one
relevant item (mono, cross) AP equals the reciprocal rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["setting", "query_lang", "target_lang", "qid"]
METRICS_BY_SETTING = {
    "mono": ["map", "map@20", "recall@1"],
    "cross": ["map", "map@20", "recall@1"],
    "multi": ["map", "map@20", "recall@10", "rank_distance"],
}


def per_query_metrics(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per-query AP, AP@20, R@1, R@10 and rank distance from a long table of relevant ranks.

    ``ranks`` has one row per (query, relevant item): columns ``setting, query_lang,
    target_lang, qid, rank`` (``target_lang`` is the candidate language, or ``all`` for the
    multilingual pool).
    """
    frame = ranks.sort_values(GROUP + ["rank"], kind="stable").reset_index(drop=True)
    grouped = frame.groupby(GROUP, sort=False)
    k = grouped.cumcount().to_numpy() + 1
    r = frame["rank"].to_numpy(dtype=float)
    frame["precision"] = k / r
    frame["precision@20"] = np.where(r <= 20, k / r, 0.0)
    frame["hit@1"] = r <= 1
    frame["hit@10"] = r <= 10
    grouped = frame.groupby(GROUP, sort=False)
    out = grouped.agg(
        n_relevant=("rank", "size"), min_rank=("rank", "min"), max_rank=("rank", "max"),
        map=("precision", "mean"), p20=("precision@20", "sum"),
        **{"recall@1": ("hit@1", "mean"), "recall@10": ("hit@10", "mean")},
    ).reset_index()
    out["map@20"] = out.pop("p20") / np.minimum(out.n_relevant, 20)
    out["rank_distance"] = out.max_rank - out.min_rank
    return out


def summarise(per_query: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per pair, per query language and macro means, each a DataFrame indexed by setting."""
    metrics = ["map", "map@20", "recall@1", "recall@10", "rank_distance"]
    per_pair = per_query.groupby(["setting", "query_lang", "target_lang"])[metrics].mean()
    per_pair["n_queries"] = per_query.groupby(["setting", "query_lang", "target_lang"]).size()
    per_language = per_pair[metrics].groupby(["setting", "query_lang"]).mean()
    macro = per_language.groupby("setting").mean()
    return {"per_pair": per_pair, "per_language": per_language, "macro": macro}


def summary_table(macro: pd.DataFrame) -> pd.DataFrame:
    """One row, the paper's columns: mono/cross/multi mAP, mAP@20, R@1, R@10, rank distance."""
    row = {}
    for setting, names in METRICS_BY_SETTING.items():
        if setting in macro.index:
            for name in names:
                row[f"{setting} {name}"] = macro.loc[setting, name]
    return pd.DataFrame([row])
