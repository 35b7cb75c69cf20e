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
            the GPU when there is one). Offline: ``HBT_SOURCES_DIR/<hub_id>/<file>``. Files are
            streamed (``iter_rows``, ``CHUNK_ROWS`` at a time) and reading stops at ``max_queries``.
=========  ==================================================================================

Every kind may declare ``size`` (the full set's pairs, the paper's Table 9: a batch's source is drawn
in proportion to it with ``TrainConfig.source_weighting=declared``), ``download_gb`` (what a first
run downloads, ``lib.downloads``) and ``gated`` (the hub asks to accept terms and log in: the grid
refuses the plan without a token, ``lib.downloads.preflight``). An empty ``translate_to`` keeps a set
English only (the paper's Mr. TyDi and MFAQ): the samplers' rule for such sources is in ``lib.sampling``.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import yaml

from lib.data import DataError, ParallelGroup, lareqa_languages
from lib.io import PROJECT_ROOT, cache_dir  # noqa: F401  (cache_dir: the downloads' root)
from lib.training_data import lareqa_groups, load_mmarco_groups
from lib.completion import clear_complete, is_complete, mark_complete
from lib.io import fingerprint, run_dir, write_json, write_provenance
from lib.translation import DEFAULT_MT_MODEL, DEFAULT_TRANSLATION_BATCH, translate_groups

SOURCE_DIR = PROJECT_ROOT / "params" / "sources"
KINDS = ("lareqa", "mmarco", "hub-qa")
# The paper's training mix as registered (params/grid-paper.yaml): the only mixture the report puts next
# to the paper's numbers (lib.report_tables.paper_side_by_side)
PAPER_TRAIN_SOURCES = "mmarco,wikiqa,natural-questions,duorc,newsqa,mr-tydi-en,mfaq-en"
SOURCE_WEIGHTINGS = ("loaded", "declared")
TRANSLATE_JOB = "lib.sources"                     # the "notebook" of a grid's translation job (in process)       # TrainConfig.source_weighting
CHUNK_ROWS = 50_000                               # rows read at once from a source file (streamed)
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
    size: int | None = None                          # the full set's size (the paper's Table 9): sampling weight
    gated: bool = False                              # the hub asks to accept terms and log in before a download


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


def declared_sizes(names: Sequence[str]) -> dict[str, float]:
    """``{source: size}`` from each registered source's ``size`` (``TrainConfig.source_weighting=declared``:
    a batch's source drawn in proportion to the full sets, as the paper's "sampled based on dataset size")."""
    sizes = {}
    for name in dict.fromkeys(names):
        size = get_source(name).size
        if not size or size <= 0:
            raise DataError(f"training source {name!r} declares no size: set `size:` (the full set's pairs) in "
                            f"params/sources/{name}.yaml, or use source_weighting=loaded (the loaded question ids)")
        sizes[name] = float(size)
    return sizes


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
    """A whole file as one table (small files; large ones: ``iter_rows``)."""
    return pd.concat(list(iter_rows(path, format)), ignore_index=True)


def iter_rows(path: Path, format: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """A source file as tables of at most ``chunk_rows`` rows, read as they are needed: a 10 GB JSONL
    (MFAQ English) is never held whole; ``.gz`` is read as such. Parquet by record batches."""
    if format == "parquet":
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        if handle.metadata.num_rows == 0:
            yield handle.schema_arrow.empty_table().to_pandas()
        for batch in handle.iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    if format == "jsonl":
        with pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows) as reader:
            yield from reader
        return
    with pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, chunksize=chunk_rows) as reader:
        yield from reader


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


def qa_groups(source: TrainingSource, rows: pd.DataFrame, max_negatives: int = 3,
              first_row: int = 0) -> list[ParallelGroup]:
    """English groups of a QA table (nested fields first made columns, ``nested_rows``): per question
    (``columns["qid"]``; without one, the row number), its query, the first text of its first row
    matching ``positive_when`` as positive, and up to ``max_negatives`` distinct hard negatives: rows
    of the question matching ``negative_when``, then the row's own ``columns["negatives"]``; questions
    without a positive are dropped. ``qid`` is ``<source>:<id>``; at most ``max_queries`` questions,
    in order of first appearance. ``first_row``: the row number of the first row (after ``explode``)
    when ``rows`` is a later chunk of the file."""
    rows = nested_rows(rows, source)
    columns = dict(source.columns)
    if "qid" not in columns:  # a pair set (one row per question): its row number is the id
        rows = rows.assign(row_number=range(first_row, first_row + len(rows)))
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


def _exploded_length(rows: pd.DataFrame, source: TrainingSource) -> int:
    """Rows of ``rows`` after ``explode`` (pandas: an empty list or a missing value stays one row)."""
    if not source.explode or source.explode not in rows.columns:
        return len(rows)
    return int(sum(max(len(v), 1) if isinstance(v, (list, tuple, np.ndarray)) else 1 for v in rows[source.explode]))


def stream_qa_groups(source: TrainingSource, paths: Sequence[Path], max_negatives: int = 3,
                     chunk_rows: int = CHUNK_ROWS) -> list[ParallelGroup]:
    """``qa_groups`` over files read ``chunk_rows`` rows at a time (``iter_rows``), stopping once
    ``max_queries`` questions are found: memory follows the questions kept, not the file. A question
    whose rows straddle two chunks keeps its first chunk's positive and negatives (each registered
    file holds a question's rows together: WikiQA's are contiguous)."""
    groups: dict[str, ParallelGroup] = {}
    first_row = 0
    for path in paths:
        for chunk in iter_rows(path, source.format, chunk_rows):
            remaining = source.max_queries - len(groups) if source.max_queries else None
            limited = replace(source, max_queries=remaining) if remaining else source
            for group in qa_groups(limited, chunk, max_negatives, first_row):
                groups.setdefault(group.qid, group)
            first_row += _exploded_length(chunk, source)
            if source.max_queries and len(groups) >= source.max_queries:
                return list(groups.values())
    return list(groups.values())


def _english_groups(source: TrainingSource, max_negatives: int) -> list[ParallelGroup]:
    return stream_qa_groups(source, [_hub_file(source, relative) for relative in source.files], max_negatives)


def translated_sources(names: Sequence[str]) -> list[str]:
    """The hub-qa sources among ``names`` that are machine-translated (``translate_to`` not empty)."""
    return [name for name in dict.fromkeys(names)
            if get_source(name).kind == "hub-qa" and get_source(name).translate_to]


def translation_run_name(sources: Sequence[str], model: str) -> str:
    """The grid's translation job: ``translate-<model>-<fingerprint of the sources>``; every grid that
    translates the same sources with the same model shares it (and the cache)."""
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in model.split("/")[-1])
    return f"translate-{slug}-{fingerprint(sorted(sources), model)[:8]}"


def translate_sources_job(run: str, parameters: dict[str, Any], force: bool = False) -> Path:
    """The grid's translation job (``lib.grid_plan``: before every training that needs it, run once):
    each source of ``parameters["sources"]`` read and translated into its ``translate_to`` with
    ``translation_model`` (empty: the source's own) in length-sorted batches of ``batch_size``
    (default ``DEFAULT_TRANSLATION_BATCH``), through the shared, resumable cache
    (``lib.translation.TranslationCache``): a killed job resumes, and the trainings then load every
    translation from the cache without loading the model. Writes ``outputs/<run>/`` (config,
    metrics: groups per source) and its completion marker last."""
    path = run_dir(run)
    if not force and is_complete(path):
        print(f"[skip] {run}: complete", flush=True)
        return path
    clear_complete(path)
    sources = [str(s) for s in parameters.get("sources") or []]
    batch_size = int(parameters.get("batch_size") or DEFAULT_TRANSLATION_BATCH)
    model = str(parameters.get("translation_model") or "")
    max_negatives = int(parameters.get("max_negatives", 3))
    write_provenance(path, {"task": "translate", "run": run, **parameters, "batch_size": batch_size})
    counts = {}
    for name in sources:
        source = get_source(name)
        groups = translate_groups(_english_groups(source, max_negatives), source.translate_to,
                                  model_name=model or source.translation_model, batch_size=batch_size)
        counts[name] = {"groups": len(groups), "languages": len(source.translate_to) + 1}
    write_json(path / "metrics.json", {"summary": counts})
    mark_complete(path, task="translate")
    return path


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
    groups = _english_groups(source, max_negatives)
    if not source.translate_to:
        return groups
    return translate_groups(groups, source.translate_to, model_name=translation_model or source.translation_model,
                            translator=translator)
