"""Language bias of multilingual retrieval: does a query prefer its own language over the answer?

Everything is measured in the multilingual setting (queries in X against the pool of every
language; each translation of the answer is relevant), per query, then averaged per query
language and macro-averaged over query languages (as ``lib.metrics``). For a query ``q`` in
language ``X`` with relevant items ``R(q)`` (its answer sentence in each language where its id
exists), ranks are 1-based positions in the full ranking of the pool, and
``rank(s) = 1 + #{candidates scoring strictly above s}`` (ties optimistic, as ``lib.retrieval``):

* **rank distance** (the paper's bias measure) ``= max_{r in R} rank(r) - min_{r in R} rank(r)``.
* **same-language first**: the relevant item in ``X`` is the best-ranked relevant item. A
  language-blind retriever does so with probability ``1 / |R(q)|`` (reported as ``chance``).
* **strong alignment** (LAReQA): every relevant item ranks above every irrelevant one, i.e.
  the relevant items fill ranks ``1 .. |R(q)|`` (``max_rank == n_relevant``).
* **same-language distractor** (the failure of strong alignment that language bias causes):
  some *irrelevant* candidate in ``X`` ranks above *every relevant* candidate in the other
  languages: ``min_{c in X, c not in R} rank(c) < min_{r in R, lang(r) != X} rank(r)``. It is
  defined only for queries with at least one relevant item outside ``X`` (all of XQuAD-R and
  MLQA-R). It does not look at the same-language answer: a query can retrieve its own-language
  answer first and still fail, when the next item is a wrong same-language sentence rather
  than a translation of the answer.
* **top-k language share**: the share of the ``k`` best-ranked candidates in each candidate
  language (all of them, or only the relevant hits); compare the diagonal with the pool share
  of the query's language.

Rank distance, same-language first and strong alignment need only ``ranks.parquet`` (relevant
ranks). The distractor and the top-k shares need the scores of irrelevant candidates too:
:func:`multilingual_neighbours` computes them from the question and candidate embeddings (the
evaluation's cached embeddings: :func:`run_embeddings` re-encodes only on a cache miss), from
the same pass over the pool that ranks the relevant items (``lib.retrieval.score_lareqa``). When
an evaluation run already holds ``neighbours.parquet`` and ``alignment.parquet`` (the same
tables, written by the evaluation), they are read instead.

    analysis = analyse_run("zeroshot-me5-small-q4-xquad-r-sentence", top_k=10)
    analysis.summary["same_language_distractor"], analysis.per_language
    run_bias_analysis(["eval-a", "eval-b"], run="bias-a-b")    # writes outputs/bias-a-b/
    python -m lib.bias runs=eval-a,eval-b top_k=10              # the same (BiasConfig, as 05_bias)
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lib.cli import run_cli, without_flag
from lib.completion import check_run_claim, record_run
from lib.io import atomic_path, outputs_dir, read_json, run_dir, write_json, write_provenance
from lib.naming import system_name
from lib.parameters import param, parse_command_line
from lib.retrieval import PoolScores, score_lareqa
from lib.validation import check_device, check_range, check_run_name, coerce, coerce_fields

NEIGHBOURS_FILE = "neighbours.parquet"
ALIGNMENT_FILE = "alignment.parquet"


# --------------------------------------------------------------------------------------------
# from relevant ranks only


def multi_ranks(ranks: pd.DataFrame) -> pd.DataFrame:
    """The multilingual rows of a ``ranks.parquet`` table (one row per query and relevant item)."""
    missing = {"setting", "query_lang", "qid", "relevant_lang", "rank"} - set(ranks.columns)
    if missing:
        raise ValueError(f"ranks lacks columns {sorted(missing)}: pass the ranks.parquet of an evaluation run")
    multi = ranks[ranks.setting == "multi"]
    if multi.empty:
        raise ValueError("ranks has no 'multi' rows: evaluate with the multilingual setting (lib.retrieval.SETTINGS)")
    return multi


def relevant_rank_table(ranks: pd.DataFrame) -> pd.DataFrame:
    """One row per multilingual query, from its relevant ranks.

    Columns: ``query_lang, qid, n_relevant, min_rank, max_rank, rank_distance, same_language_rank,
    best_other_rank, same_language_first, chance, strong_alignment``.
    """
    multi = multi_ranks(ranks)
    same = multi.relevant_lang == multi.query_lang
    grouped = multi.groupby(["query_lang", "qid"], sort=True)
    table = grouped["rank"].agg(n_relevant="size", min_rank="min", max_rank="max")
    table["rank_distance"] = table.max_rank - table.min_rank
    table["same_language_rank"] = multi[same].groupby(["query_lang", "qid"])["rank"].min()
    table["best_other_rank"] = multi[~same].groupby(["query_lang", "qid"])["rank"].min()
    if table.same_language_rank.isna().any():
        raise ValueError("some multilingual queries have no relevant item in their own language: "
                         "ranks.parquet is not from an LAReQA evaluation")
    table["same_language_first"] = table.same_language_rank == table.min_rank
    table["chance"] = 1.0 / table.n_relevant
    table["strong_alignment"] = table.max_rank == table.n_relevant
    return table.reset_index()


def rank_distance_by_language(per_query: pd.DataFrame) -> pd.DataFrame:
    """Distribution of the rank distance per query language: count, mean, quartiles, p90, max.

    ``per_query`` is a table with ``query_lang`` and ``rank_distance`` (``per_query.parquet``
    or :func:`relevant_rank_table`); only multilingual rows are used when ``setting`` is present.
    """
    frame = per_query[per_query.setting == "multi"] if "setting" in per_query else per_query
    grouped = frame.groupby("query_lang")["rank_distance"]
    table = pd.DataFrame({
        "queries": grouped.size(), "mean": grouped.mean(), "median": grouped.median(),
        "q25": grouped.quantile(0.25), "q75": grouped.quantile(0.75),
        "p90": grouped.quantile(0.9), "max": grouped.max(),
    })
    table.loc["macro mean"] = table.mean()
    return table


def relevant_rank_matrix(ranks: pd.DataFrame, statistic: str = "median") -> pd.DataFrame:
    """Query language x relevant-item language: ``statistic`` (median or mean) of the multilingual
    rank of the answer's translation. A same-language bias shows as a low diagonal."""
    multi = multi_ranks(ranks)
    table = multi.groupby(["query_lang", "relevant_lang"])["rank"].agg(statistic)
    return table.unstack("relevant_lang")


# --------------------------------------------------------------------------------------------
# from embeddings: irrelevant candidates too


@dataclass
class Neighbours:
    """What the multilingual ranking holds beyond the relevant items.

    ``top_k``: one row per (query, position <= k): ``query_lang, qid, position, cid,
    candidate_lang, relevant``. ``alignment``: one row per query: ``query_lang, qid, n_relevant,
    same_language_rank, best_other_rank, wrong_same_language_rank, wrong_other_language_rank,
    same_language_distractor`` (ranks as in the module docstring; NaN when undefined).
    """

    top_k: pd.DataFrame
    alignment: pd.DataFrame


def multilingual_neighbours(dataset, question_embeddings: np.ndarray | None = None,
                            candidate_embeddings: np.ndarray | None = None, k: int = 10,
                            scored: PoolScores | None = None) -> Neighbours:
    """Top-``k`` candidates and the best irrelevant candidates of every multilingual query.

    From one exact pass over the pool (``lib.retrieval.score_lareqa``; ranks count the candidates
    scoring strictly above, ties in the top-k by candidate row). Pass ``scored`` (computed with
    at least this ``k``) to reuse the pass that ranked the relevant items.

        neighbours = multilingual_neighbours(dataset, questions, candidates, k=10)
        neighbours.alignment.same_language_distractor.mean()
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scored = scored or score_lareqa(dataset, question_embeddings, candidate_embeddings, k=k)
    if scored.top.shape[1] < min(k, len(dataset.candidates)):
        raise ValueError(f"scored holds the top {scored.top.shape[1]}, not {k}: score_lareqa(..., k={k})")
    questions, candidates = dataset.questions, dataset.candidates
    query_lang, lang = questions.lang.to_numpy(), candidates.lang.to_numpy()
    relevant, ranks, top = scored.relevant, scored.ranks().astype(float), scored.top[:, :k]
    same = (relevant >= 0) & (lang[np.maximum(relevant, 0)] == query_lang[:, None])
    other = (relevant >= 0) & ~same
    alignment = pd.DataFrame({
        "query_lang": query_lang, "qid": questions.qid.to_numpy(), "n_relevant": (relevant >= 0).sum(axis=1),
        "same_language_rank": np.where(same, ranks, np.inf).min(axis=1),
        "best_other_rank": np.where(other, ranks, np.inf).min(axis=1),
        "wrong_same_language_rank": scored.wrong_rank[:, 0], "wrong_other_language_rank": scored.wrong_rank[:, 1]})
    alignment = alignment.replace(np.inf, np.nan)
    defined = alignment.best_other_rank.notna() & alignment.wrong_same_language_rank.notna()
    distractor = alignment.wrong_same_language_rank < alignment.best_other_rank
    alignment["same_language_distractor"] = distractor.where(defined).astype("float")
    cids = candidates.cid.to_numpy() if "cid" in candidates else np.arange(len(candidates)).astype(str)
    top_k = pd.DataFrame({
        "query_lang": np.repeat(query_lang, top.shape[1]), "qid": np.repeat(alignment.qid.to_numpy(), top.shape[1]),
        "position": np.tile(np.arange(1, top.shape[1] + 1), len(top)), "cid": cids[top.ravel()],
        "candidate_lang": lang[top.ravel()], "relevant": (top[:, :, None] == relevant[:, None, :]).any(axis=2).ravel()})
    return Neighbours(top_k, alignment)


def top_k_language_share(top_k: pd.DataFrame, relevant_only: bool = False) -> pd.DataFrame:
    """Query language x candidate language: share of the top-k positions (rows sum to one).

    ``relevant_only`` counts only the relevant hits (rows then sum to one over the hits).
    """
    frame = top_k[top_k.relevant] if relevant_only else top_k
    counts = frame.groupby(["query_lang", "candidate_lang"]).size().unstack("candidate_lang", fill_value=0)
    return counts.div(counts.sum(axis=1), axis=0)


def pool_language_share(candidates: pd.DataFrame) -> pd.Series:
    """Share of each language in the multilingual pool: the top-k share of a language-blind ranker."""
    return candidates.lang.value_counts(normalize=True).sort_index()


# --------------------------------------------------------------------------------------------
# one evaluation run


@dataclass
class BiasAnalysis:
    """The bias of one evaluation run: a flat ``summary``, ``per_language`` rates, per-query tables."""

    run: str
    label: str
    summary: dict[str, float]
    per_language: pd.DataFrame
    per_query: pd.DataFrame             # relevant_rank_table joined with the alignment table
    top_k: pd.DataFrame | None = None
    pool_share: pd.Series | None = None
    ranks: pd.DataFrame | None = None
    per_query_metrics: pd.DataFrame | None = None
    config: dict[str, Any] = field(default_factory=dict)


RATES = ["same_language_first", "chance", "strong_alignment", "same_language_distractor"]


def per_language_bias(per_query: pd.DataFrame, top_k: pd.DataFrame | None = None,
                      pool_share: pd.Series | None = None) -> pd.DataFrame:
    """Per query language: mean rank distance, the rates of the module docstring, top-k shares."""
    columns = ["rank_distance"] + [c for c in RATES if c in per_query]
    table = per_query.groupby("query_lang")[columns].mean()
    if top_k is not None:
        share = top_k_language_share(top_k)
        table["top_k_same_language"] = [share.loc[x].get(x, 0.0) if x in share.index else np.nan for x in table.index]
        hits = top_k_language_share(top_k, relevant_only=True)
        table["top_k_hits_same_language"] = [hits.loc[x].get(x, 0.0) if x in hits.index else np.nan
                                             for x in table.index]
    if pool_share is not None:
        table["pool_same_language"] = [pool_share.get(x, np.nan) for x in table.index]
    return table


def bias_summary(per_language: pd.DataFrame) -> dict[str, float]:
    """Macro means over query languages of every column of :func:`per_language_bias`."""
    return {name: float(value) for name, value in per_language.mean().items()}


def analyse_tables(ranks: pd.DataFrame, neighbours: Neighbours | None = None,
                   pool_share: pd.Series | None = None, run: str = "", label: str = "") -> BiasAnalysis:
    """The analysis from tables alone (hand-made in tests, or read from a run folder)."""
    per_query = relevant_rank_table(ranks)
    top_k = None
    if neighbours is not None:
        extra = neighbours.alignment[["query_lang", "qid", "wrong_same_language_rank",
                                      "wrong_other_language_rank", "same_language_distractor"]]
        per_query = per_query.merge(extra, on=["query_lang", "qid"], how="left", validate="one_to_one")
        top_k = neighbours.top_k
    per_language = per_language_bias(per_query, top_k, pool_share)
    return BiasAnalysis(run=run, label=label or run, summary=bias_summary(per_language),
                        per_language=per_language, per_query=per_query, top_k=top_k,
                        pool_share=pool_share, ranks=ranks)


def run_label(run: str) -> str:
    """A short name for an evaluation run: ``hybrid a=0.5 s0`` for a trained model, ``zero-shot
    me5-small-q4`` for a registry backbone, else the run name."""
    config_file = outputs_dir() / run / "config.json"
    if not config_file.is_file():
        return run
    config = read_json(config_file)
    settings = config.get("backbone_settings") or {}
    if settings.get("source") not in (None, "path"):
        return f"zero-shot {settings.get('name', config.get('backbone'))}"
    train_config = Path(str(config.get("backbone", ""))).parent / "config.json"
    if not train_config.is_file():                     # the outputs folder was moved
        train_config = outputs_dir() / train_config.parent.name / "config.json"
    if train_config.is_file():
        train = read_json(train_config)
        from lib.sampling import run_options

        sampler, _, labels = run_options(train)      # the options its sampler declares, as tables name them
        if sampler:
            return f"{system_name(sampler, labels)} s{train.get('seed', '?')}"
    return run


def run_embeddings(config: dict[str, Any], device: str = "auto"):
    """The dataset and the (cached) question and candidate embeddings of an evaluation run's config."""
    from lib.backbones import default_device, get_backbone, load_model
    from lib.data import load_lareqa
    from lib.encode import cached_embeddings, encode

    backbone = config.get("backbone")
    if backbone is None or "dataset" not in config:
        raise ValueError("the run's config.json lacks 'backbone' or 'dataset': is it an evaluation run (04_evaluate)?")
    dataset = load_lareqa(config["dataset"], languages=config.get("languages"),
                          candidate_context=config.get("candidate_context", "sentence"),
                          max_questions=config.get("max_questions"))
    batch_size = int(config.get("batch_size", 64))
    texts = {"query": dataset.questions.text, "passage": dataset.candidates.text}
    device = default_device() if device == "auto" else device
    precision = config.get("precision", "auto")             # as the evaluation encoded (lib.encode)
    embeddings = {side: cached_embeddings(get_backbone(backbone), texts[side], side, precision, device)
                  for side in texts}
    if any(value is None for value in embeddings.values()):  # cache miss: encode with the model
        model = load_model(backbone, device=device)
        embeddings = {side: encode(model, texts[side], side, batch_size=batch_size, precision=precision)
                      for side in texts}
    return dataset, embeddings["query"], embeddings["passage"]


def rank_agreement(ranks: pd.DataFrame, neighbours: Neighbours) -> float:
    """Share of queries whose recomputed best relevant rank equals the evaluation's (a check that
    the embeddings behind the neighbours are the evaluation's)."""
    ours = neighbours.alignment.set_index(["query_lang", "qid"])
    best = ours[["same_language_rank", "best_other_rank"]].min(axis=1)
    theirs = multi_ranks(ranks).groupby(["query_lang", "qid"])["rank"].min()
    joined = pd.concat([best.rename("ours"), theirs.rename("theirs")], axis=1, join="inner")
    return float((joined.ours == joined.theirs).mean()) if len(joined) else float("nan")


def analyse_run(run: str, top_k: int = 10, device: str = "auto", neighbours: bool = True) -> BiasAnalysis:
    """Bias of the evaluation run ``outputs/<run>/`` (needs its ranks.parquet and config.json).

    ``neighbours=False`` skips what needs embeddings (distractor rate, top-k shares).
    """
    path = outputs_dir() / run
    for name in ("ranks.parquet", "config.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: run 04_evaluate with run={run!r} first")
    config = read_json(path / "config.json")
    ranks = pd.read_parquet(path / "ranks.parquet")
    found, pool_share = None, None
    if neighbours and (path / NEIGHBOURS_FILE).is_file() and (path / ALIGNMENT_FILE).is_file():
        found = Neighbours(pd.read_parquet(path / NEIGHBOURS_FILE), pd.read_parquet(path / ALIGNMENT_FILE))
        found.top_k = found.top_k[found.top_k.position <= top_k]
    elif neighbours:
        dataset, questions, candidates = run_embeddings(config, device=device)
        found = multilingual_neighbours(dataset, questions, candidates, k=top_k)
        pool_share = pool_language_share(dataset.candidates)
    analysis = analyse_tables(ranks, found, pool_share, run=run, label=run_label(run))
    if found is not None:
        agreement = rank_agreement(ranks, found)
        analysis.summary["rank_agreement"] = agreement
        if agreement < 0.99:
            warnings.warn(f"{run}: only {agreement:.1%} of the recomputed best relevant ranks match the "
                          "evaluation's; the embeddings differ (model changed since the evaluation?)")
    analysis.config = config
    if (path / "per_query.parquet").is_file():
        analysis.per_query_metrics = pd.read_parquet(path / "per_query.parquet")
    return analysis


def comparison_table(analyses: Sequence[BiasAnalysis]) -> pd.DataFrame:
    """One row per run: its label and the macro summary (the comparison across samplers)."""
    return pd.DataFrame([{"run": a.run, "label": a.label, **a.summary} for a in analyses]).set_index("run")


def rank_distances(analyses: Sequence[BiasAnalysis]) -> pd.DataFrame:
    """Long table ``label, query_lang, qid, rank_distance`` over runs (for distribution plots)."""
    return pd.concat([a.per_query[["query_lang", "qid", "rank_distance"]].assign(label=a.label, run=a.run)
                      for a in analyses], ignore_index=True)


def write_bias(run_path: str | Path, analyses: Sequence[BiasAnalysis], config: dict[str, Any]) -> Path:
    """``config.json``, ``versions.json``, per-query tables and ``metrics.json`` (written last)."""
    run_path = Path(run_path)
    write_provenance(run_path, config)
    for analysis in analyses:
        tables = {"bias_per_query": analysis.per_query, "top_k": analysis.top_k}
        for name, frame in tables.items():
            if frame is not None:
                with atomic_path(run_path / f"{name}-{analysis.run}.parquet") as tmp:
                    frame.to_parquet(tmp, index=False)
    runs = {a.run: {"label": a.label, **a.summary} for a in analyses}
    summary = dict(analyses[0].summary) if len(analyses) == 1 else {
        f"{a.run} {name}": value for a in analyses for name, value in a.summary.items()}
    write_json(run_path / "metrics.json", {
        "summary": summary, "runs": runs,
        "per_language": {a.run: a.per_language.reset_index().to_dict(orient="records") for a in analyses},
    })
    return run_path


def run_bias_analysis(runs: Sequence[str] | str, run: str, top_k: int = 10, device: str = "auto",
                      neighbours: bool = True, force: bool = False) -> tuple[list[BiasAnalysis], Path]:
    """Everything 05_bias does: analyse each evaluation run, write ``outputs/<run>/`` (a folder that
    holds another kind of run, or a bias run of other runs or top_k, is refused unless ``force``)."""
    names = [r.strip() for r in runs.split(",")] if isinstance(runs, str) else list(runs)
    names = [n for n in names if n]
    if not names:
        raise ValueError("runs is empty: give evaluation run names (folders of outputs/ made by 04_evaluate)")
    top_k = coerce("top_k", top_k, int)
    check_range("top_k", top_k, low=1, fix="the top-k counted, e.g. top_k=10")
    check_run_name(run)
    claim = {"runs": names, "top_k": top_k, "neighbours": neighbours}
    check_run_claim(outputs_dir() / run, "bias", claim, "lib.bias", force=force)
    analyses = [analyse_run(name, top_k=top_k, device=device, neighbours=neighbours) for name in names]
    config = {"task": "bias", "runs": names, "top_k": top_k, "neighbours": neighbours, "run": run,
              "labels": {a.run: a.label for a in analyses}}
    path = write_bias(run_dir(run), analyses, config)
    record_run(path, "bias", claim, "lib.bias", replace=force)
    return analyses, path


# --------------------------------------------------------------------------------------------
# figures


def rank_distance_figure(distances: pd.DataFrame, title: str = "Rank distance per query language"):
    """Box plots of the per-query rank distance per query language (one hue per run), and its
    cumulative distribution per run."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n_languages = distances.query_lang.nunique()
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8, 0.6 * n_languages + 6), 4.2),
                                         gridspec_kw={"width_ratios": [2.2, 1]})
    sns.boxplot(data=distances, x="query_lang", y="rank_distance", hue="label", showfliers=False, ax=left)
    left.set_xlabel("query language")
    left.set_ylabel("rank distance (max - min rank of the translations)")
    left.set_title(title)
    sns.ecdfplot(data=distances, x="rank_distance", hue="label", ax=right, legend=False)
    right.set_xlabel("rank distance")
    right.set_title("cumulative distribution")
    figure.tight_layout()
    return figure


def share_heatmap(matrix: pd.DataFrame, title: str = "", label: str = "share of the top-10"):
    """Query language x candidate language heatmap of shares (rows sum to one)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    size = max(4.0, 0.55 * max(matrix.shape) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(matrix, annot=True, fmt=".2f", cmap="magma", vmin=0, vmax=max(0.3, float(np.nanmax(matrix.values))),
                square=True, cbar_kws={"label": label}, ax=axes, annot_kws={"size": 7})
    axes.set_xlabel("candidate language")
    axes.set_ylabel("query language")
    axes.set_title(title or label)
    figure.tight_layout()
    return figure


def comparison_figure(table: pd.DataFrame, columns=("same_language_first", "chance", "strong_alignment",
                                                    "same_language_distractor", "top_k_same_language",
                                                    "pool_same_language")):
    """Bars of the macro bias rates, one group per rate and one bar per run (label)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    present = [c for c in columns if c in table.columns]
    long = table.reset_index().melt(id_vars=["run", "label"], value_vars=present, var_name="rate", value_name="value")
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(present) + 2), 3.8))
    sns.barplot(data=long, x="rate", y="value", hue="label", ax=axes)
    axes.set_ylim(0, 1)
    axes.set_xlabel("")
    axes.set_ylabel("share of queries (macro over query languages)")
    axes.set_title("Language bias rates (chance: same-language first of a language-blind ranker)")
    axes.tick_params(axis="x", labelrotation=15)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------
# The step's parameters: notebooks/05_bias.ipynb and ``python -m lib.bias``


@dataclass
class BiasConfig:
    """Every parameter of 05_bias (``python -m lib.bias --notebook-parameters`` prints its cell)."""

    runs: str = param("zeroshot-me5-small-q4-xquad-r-sentence", "comma-separated evaluation runs (folders of "
                      "outputs/ written by 04_evaluate); several: a comparison", smoke="eval-tiny-xquad-r")
    top_k: int = param(10, "the top-k whose languages are counted")
    device: str = param("auto", "auto | cpu | cuda (only to re-encode on an embedding-cache miss)")
    run: str = param("", "output folder; empty: bias-<first run>")

    def __post_init__(self) -> None:
        """Values as their fields declare (``"10"`` -> 10) and in range, or a ParameterError naming the field."""
        coerce_fields(self)
        check_range("top_k", self.top_k, low=1, fix="the top-k counted, e.g. top_k=10")
        check_device(self.device)


def bias_step(config: BiasConfig, force: bool = False) -> tuple[list[BiasAnalysis], Path]:
    names = [name.strip() for name in config.runs.split(",") if name.strip()]
    return run_bias_analysis(names, run=config.run or f"bias-{names[0] if names else ''}", top_k=config.top_k,
                             device=config.device, force=force)


def main(argv=None) -> tuple[list[BiasAnalysis], Path] | None:
    """``python -m lib.bias [--config file.yaml] [--force] [key=value ...]``: 05_bias's analysis and
    tables; ``--force`` writes over a run folder that holds another run."""
    argv, force = without_flag(argv, "--force")
    config = parse_command_line(BiasConfig, "python -m lib.bias", "Language bias of evaluation runs.", argv)
    if config is not None:
        analyses, path = bias_step(config, force=force)
        print(f"outputs: {path}\n{comparison_table(analyses).round(3).to_string()}")
        return analyses, path
    return None


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.bias"))
