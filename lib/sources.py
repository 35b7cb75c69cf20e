"""Training sources: a registry read from ``params/sources/*.yaml``, each turned into ``ParallelGroup``s.

``TrainConfig.train_sources`` names any mix of registered sources (``"mlqa-r"``, ``"mmarco,wikiqa"``);
each batch's source is then drawn in proportion to its size (``lib.sampling``, ``source_temperature``
flattens it), the paper's "sampled based on dataset size". Three kinds, like the backbones' sources:

=========  ==================================================================================
kind       what the YAML says, and what the loader does
=========  ==================================================================================
``lareqa``  ``dataset``: mlqa-r | xquad-r -> ``lib.training_data.lareqa_groups`` (LAREQA_DIR)
``mmarco``  ``languages``, ``max_queries`` -> ``lib.training_data.load_mmarco_groups`` at its pinned
            revision (offline: ``HBT_SOURCES_DIR/unicamp-dl/mmarco/`` with the repo's layout)
``hub-qa``  an English QA set on the hub: ``hub_id``, ``revision`` (a commit, required), ``files``
            and ``format`` (parquet | jsonl | tsv; ``.gz`` read as such), ``columns`` (query, positive,
            optional qid and negatives: the set's own column names; no qid: one question per row),
            ``positive_when`` / ``negative_when`` (column -> value filters; the negatives are other
            rows of the same question), ``translate_to`` and ``translation_model`` ->
            ``lib.translation.translate_groups`` (NLLB by default; cached and resumable, batched, on
            the GPU when there is one). Offline: ``HBT_SOURCES_DIR/<hub_id>/<file>``.
=========  ==================================================================================

Nested formats (``nested_rows``): a ``columns`` value may be a dotted path into a column of dicts
(``qa_pairs.question``; over a list of dicts, the list of that field: ``positive_passages.text``);
a list-valued positive is its first non-empty text; ``columns["negatives"]`` names a column whose
text or list of texts are the row's own hard negatives (Mr. TyDi's ``negative_passages.text``);
``explode`` names a list-valued column whose elements become one row each (MFAQ's ``qa_pairs``:
one FAQ page per line, one question per pair).

Each YAML records where the format was checked (the dataset card or loading script); every adapter
is tested on fixture rows in that format (``tests/test_sources.py``).

    groups = load_source_groups("mmarco", max_negatives=3)
    groups = load_source_groups("wikiqa", translator=my_translator)   # any callable(texts, src, tgt)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml

from lib.data import DataError, ParallelGroup, lareqa_languages
from lib.io import PROJECT_ROOT, cache_dir
from lib.training_data import lareqa_groups, load_mmarco_groups
from lib.translation import DEFAULT_MT_MODEL, translate_groups

SOURCE_DIR = PROJECT_ROOT / "params" / "sources"
KINDS = ("lareqa", "mmarco", "hub-qa")
FORMATS = ("parquet", "jsonl", "tsv")
COLUMN_ROLES = ("query", "positive", "qid", "negatives")


@dataclass
class TrainingSource:
    """One ``params/sources/<name>.yaml``."""

    name: str
    kind: str
    description: str = ""
    dataset: str | None = None                       # lareqa
    languages: list[str] = field(default_factory=list)   # mmarco
    max_queries: int | None = None                   # mmarco, hub-qa (None: all)
    hub_id: str | None = None                        # hub-qa
    revision: str | None = None
    files: list[str] = field(default_factory=list)
    format: str = "parquet"
    columns: dict[str, str] = field(default_factory=dict)   # role (COLUMN_ROLES) -> column or dotted path
    explode: str | None = None                        # a list-valued column: one row per element
    positive_when: dict[str, Any] = field(default_factory=dict)
    negative_when: dict[str, Any] = field(default_factory=dict)
    translate_to: list[str] = field(default_factory=list)
    translation_model: str = DEFAULT_MT_MODEL
    download_gb: float | None = None                 # what a first run downloads (None: not known)


def available_sources() -> list[str]:
    return sorted(p.stem for p in SOURCE_DIR.glob("*.yaml"))


def get_source(name: str) -> TrainingSource:
    """The registry entry ``name`` (``params/sources/<name>.yaml``), checked."""
    path = SOURCE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"unknown training source {name!r}; expected one of {available_sources()} "
                        "(params/sources/*.yaml: add a YAML there for another)")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = set(TrainingSource.__dataclass_fields__) - {"name"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(f"{path}: unknown keys {unknown}; expected some of {sorted(known)}")
    source = TrainingSource(name=name, **values)
    if source.kind not in KINDS:
        raise DataError(f"{path}: kind {source.kind!r}: expected one of {KINDS}")
    if source.kind == "hub-qa":
        missing = [key for key in ("query", "positive") if key not in source.columns]
        unknown_roles = sorted(set(source.columns) - set(COLUMN_ROLES))
        if missing or unknown_roles or source.format not in FORMATS or not source.files or not source.hub_id:
            raise DataError(f"{path}: a hub-qa source needs hub_id, files, format in {FORMATS} and columns "
                            f"for query and positive, qid and negatives optional (missing: {missing}, "
                            f"unknown: {unknown_roles})")
    return source


def source_languages(name: str) -> list[str]:
    """The languages a registered source trains on: a LAReQA set's, mMARCO's ``languages``, or
    English plus ``translate_to`` for a hub-qa set."""
    source = get_source(name)
    if source.kind == "lareqa":
        return list(lareqa_languages(source.dataset))
    if source.kind == "mmarco":
        return list(source.languages)
    return ["en", *source.translate_to]


def sources_dir() -> Path | None:
    """``HBT_SOURCES_DIR``: local mirrors of the hub repositories (``<dir>/<hub_id>/<file>``), or None."""
    root = os.environ.get("HBT_SOURCES_DIR")
    return Path(root) if root else None


def _hub_file(source: TrainingSource, relative: str) -> Path:
    """A file of a hub-qa source: from the local mirror, else downloaded at the pinned revision."""
    root = sources_dir()
    if root is not None:
        path = root / source.hub_id / relative
        if not path.is_file():
            raise DataError(f"missing {path}: HBT_SOURCES_DIR={root} must mirror the layout of the dataset "
                            f"repository {source.hub_id} ({relative})")
        return path
    if not source.revision:
        raise DataError(f"training source {source.name!r} ({source.hub_id}) has no pinned revision: set "
                        f"`revision:` in params/sources/{source.name}.yaml to a commit of the dataset repository "
                        "(its history on the hub), so that an upstream change cannot change the training data")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=source.hub_id, repo_type="dataset", filename=relative,
                                    revision=source.revision, cache_dir=str(cache_dir() / "huggingface")))
    except Exception as error:  # network, HTTP, gated repository alike
        raise DataError(f"could not download {relative} of {source.hub_id}@{source.revision} "
                        f"({type(error).__name__}); log in (`hf auth login`) if the dataset is gated, or set "
                        "HBT_SOURCES_DIR to a folder with the same layout") from None


def read_rows(path: Path, format: str) -> pd.DataFrame:
    if format == "parquet":
        return pd.read_parquet(path)
    if format == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def _matching(rows: pd.DataFrame, conditions: dict[str, Any]) -> pd.Series:
    keep = pd.Series(True, index=rows.index)
    for column, value in conditions.items():
        keep &= rows[column].astype(str) == str(value)
    return keep


def _field(value: Any, path: str) -> Any:
    """Field ``path`` (dotted) of a nested cell: a dict's key, taken in every item of a list."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_field(item, path) for item in value]
    key, _, rest = path.partition(".")
    inner = value.get(key) if isinstance(value, dict) else None
    return _field(inner, rest) if rest and inner is not None else inner


def nested_rows(rows: pd.DataFrame, source: TrainingSource) -> pd.DataFrame:
    """Rows with a source's nested fields as plain columns: ``explode`` (a list-valued column) gives
    one row per element (row numbers 0..n-1), then each ``columns`` value that is a dotted path
    (``qa_pairs.question``) and not a column already becomes a column of that name: field
    ``question`` of the dict in column ``qa_pairs``, or the list of it over a list of dicts."""
    if source.explode:
        if source.explode not in rows.columns:
            raise DataError(f"training source {source.name!r}: explode column {source.explode!r} is not in its "
                            f"rows (it has {list(rows.columns)}); fix `explode` in params/sources/{source.name}.yaml")
        rows = rows.explode(source.explode, ignore_index=True)
    for path in source.columns.values():
        column, _, rest = path.partition(".")
        if rest and path not in rows.columns and column in rows.columns:
            rows = rows.assign(**{path: rows[column].map(lambda value, rest=rest: _field(value, rest))})
    return rows


def _texts(value: Any) -> list[str]:
    """A cell's non-empty texts, stripped: one text, or a list of them (None and NaN dropped)."""
    items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
    texts = (str(item).strip() for item in items
             if item is not None and not (isinstance(item, float) and math.isnan(item)))
    return [text for text in texts if text]


def qa_groups(source: TrainingSource, rows: pd.DataFrame, max_negatives: int = 3) -> list[ParallelGroup]:
    """English groups of a QA table (nested fields first made columns, ``nested_rows``): per question
    (``columns["qid"]``; without one, the row number), its query, the first text of its first row
    matching ``positive_when`` as positive, and up to ``max_negatives`` distinct hard negatives: rows
    of the question matching ``negative_when``, then the row's own ``columns["negatives"]``; questions
    without a positive are dropped. ``qid`` is ``<source>:<id>``; at most ``max_queries`` questions,
    in order of first appearance."""
    rows = nested_rows(rows, source)
    columns = dict(source.columns)
    if "qid" not in columns:  # a pair set (one row per question): its row number is the id
        rows = rows.assign(row_number=range(len(rows)))
        columns["qid"] = "row_number"
    absent = sorted({*columns.values(), *source.positive_when, *source.negative_when} - set(rows.columns))
    if absent:
        raise DataError(f"training source {source.name!r}: columns {absent} are not in its rows "
                        f"(it has {list(rows.columns)}); fix `columns` in params/sources/{source.name}.yaml")
    positives = rows[_matching(rows, source.positive_when)]
    negatives = rows[_matching(rows, source.negative_when)] if source.negative_when else rows.iloc[:0]
    negatives_of = negatives.groupby(columns["qid"], sort=False)[columns["positive"]].agg(list).to_dict()
    groups = []
    for qid, first in positives.groupby(columns["qid"], sort=False).head(1).set_index(columns["qid"]).iterrows():
        query, positive = [next(iter(_texts(first[columns[role]])), "") for role in ("query", "positive")]
        if not query or not positive:
            continue
        candidates = [text for value in negatives_of.get(qid, []) for text in _texts(value)]
        candidates += _texts(first[columns["negatives"]]) if "negatives" in columns else []
        hard = [text for text in dict.fromkeys(candidates) if text != positive][:max_negatives]
        groups.append(ParallelGroup(qid=f"{source.name}:{qid}", source=source.name, queries={"en": query},
                                    positives={"en": positive}, negatives={"en": hard} if hard else {}))
        if source.max_queries and len(groups) >= source.max_queries:
            break
    return groups


def load_source_groups(name: str, candidate_context: str = "sentence", max_negatives: int = 3,
                       data_dir: str | os.PathLike | None = None,
                       translator: Callable[[Sequence[str], str, str], list[str]] | None = None,
                       translation_model: str | None = None) -> list[ParallelGroup]:
    """The groups of the registered source ``name`` (``data_dir``: the LAReQA folder, for lareqa
    sources; ``translation_model``: replaces the source's own, e.g. ``tiny-mt`` offline;
    ``translator``: replaces the model by a callable, e.g. in tests)."""
    source = get_source(name)
    if source.kind == "lareqa":
        return lareqa_groups(source.dataset, candidate_context=candidate_context, max_negatives=max_negatives,
                             data_dir=data_dir)
    if source.kind == "mmarco":
        root = sources_dir()
        return load_mmarco_groups(source.languages, max_groups=source.max_queries or 10**9,
                                  local_dir=root / "unicamp-dl" / "mmarco" if root else None,
                                  max_negatives=max_negatives)
    rows = pd.concat([read_rows(_hub_file(source, relative), source.format) for relative in source.files],
                     ignore_index=True)
    groups = qa_groups(source, rows, max_negatives)
    if not source.translate_to:
        return groups
    return translate_groups(groups, source.translate_to, model_name=translation_model or source.translation_model,
                            translator=translator)
