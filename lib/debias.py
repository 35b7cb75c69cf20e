"""Remove language identity from cached embeddings at retrieval time (no re-encoding).

Multilingual encoders place each language around its own mean; in the multilingual pool a
query then prefers candidates of its own language (``lib.bias``). Two post-hoc fixes work on the
embeddings alone, per language ``l`` and per side (queries and candidates have separate
statistics, since the query and passage prefixes move them differently):

| method   | transform of an embedding ``e`` of language ``l``              | reference                      |
|----------|-----------------------------------------------------------------|--------------------------------|
| `center` | ``e - mu_l``, then L2-normalised                                | Libovicky et al., arXiv 2004.05160 |
| `lir`    | ``e - C_l C_l^T e``, then L2-normalised; ``C_l`` (d x k): the top-k | Yang et al., arXiv 2109.04727 (LIR) |
|          | right singular vectors of the (uncentred) matrix of language ``l`` |                                |

``mu_l`` and ``C_l`` are estimated from a *source* of texts, which is part of the method's name:

| source         | candidate-side statistics              | query-side statistics                                     |
|----------------|----------------------------------------|-----------------------------------------------------------|
| `pool`         | the pool being searched                | the pool's texts encoded *with the query prefix* (given; a sample of 500 per language in ``lib.debias_evaluation``) |
| `reference`    | reference texts encoded as passages    | the same texts encoded as queries (e.g. Tatoeba, training) |
| `transductive` | the pool being searched                | the test queries themselves: an upper bound, not a system |

Only `transductive` looks at the test queries; `pool` and `reference` need query-side
embeddings of other texts, passed in as ``{language: (n, d) array}``. LIR as in the authors'
code: the singular vectors of the raw embeddings (not centred), so the first direction is close
to the language mean; ``k`` = number of directions removed (the paper finds 1-3 enough).

Measured (zero-shot me5-small-q4, the full XQuAD-R: 13,090 questions, 13,014 candidates, bf16;
macro mAP mono / cross / multi, multi rank distance): none .799 / .640 / .299 / 1213.6;
center-pool .788 / .673 / .537 / 592.2; lir-k1-pool .789 / .675 / .539 / 575.1;
center-reference (Tatoeba) .789 / .672 / .505 / 668.9; center-transductive (upper bound) .792 /
.680 / .538 / 445.1. The candidate side does most of the work: with ``pool`` the query-side
language means stay apart (the pool's sentences encoded as queries are statements, not
questions), yet ``pool``'s multilingual mAP is within .002 of the transductive bound (no test
of equality was made; its rank distance is worse, 592 against 445).

    spec = parse_debias("center-pool")
    queries, candidates = debias_embeddings(spec, q, q_langs, c, c_langs,
                                            query_reference=by_language(q_of_pool, c_langs))
    spec.name  # "center-pool", used in run and result names
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from lib.encode import encode

METHODS = ("none", "center", "lir")
SOURCES = ("pool", "reference", "transductive")
NAME_PATTERN = re.compile(r"^(?:none|center-(?P<csource>\w+)|lir-k(?P<k>\d+)-(?P<lsource>\w+))$")

ByLanguage = Mapping[str, np.ndarray]


class DebiasError(ValueError):
    """A debiasing method is misnamed or lacks the statistics it needs; the message says which."""


@dataclass(frozen=True)
class Debias:
    """A debiasing method: ``method`` (none | center | lir), ``source`` of its statistics, LIR's ``k``."""

    method: str = field(default="none", metadata={
        "help": "none | center (minus language mean) | lir (minus top-k directions)"})
    source: str = field(default="pool", metadata={
        "help": "statistics from: pool | reference | transductive (the test queries: an upper bound)"})
    k: int = field(default=1, metadata={"help": "lir only: number of per-language principal directions removed"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise DebiasError(f"debias method {self.method!r}: expected one of {METHODS}")
        if self.method != "none" and self.source not in SOURCES:
            raise DebiasError(f"debias source {self.source!r}: expected one of {SOURCES}")
        if self.method == "lir" and (not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise DebiasError(f"lir needs k >= 1 directions to remove, got {self.k!r}")

    @property
    def name(self) -> str:
        """``none``, ``center-pool``, ``lir-k2-reference``, ``center-transductive`` ..."""
        if self.method == "none":
            return "none"
        if self.method == "center":
            return f"center-{self.source}"
        return f"lir-k{self.k}-{self.source}"

    @property
    def transductive(self) -> bool:
        """True when the statistics come from the test queries (an upper bound, not a fair system)."""
        return self.method != "none" and self.source == "transductive"

    def as_dict(self) -> dict:
        return {**asdict(self), "name": self.name}


def parse_debias(name: str | Debias | None) -> Debias:
    """``parse_debias("lir-k2-pool") == Debias("lir", "pool", 2)``; ``None`` or ``""`` = none."""
    if isinstance(name, Debias):
        return name
    if name is None or name == "":
        return Debias()
    match = NAME_PATTERN.match(str(name).strip())
    examples = "none, center-pool, center-reference, center-transductive, lir-k1-pool, lir-k3-reference"
    if not match:
        raise DebiasError(f"debias {name!r} is not a method name: expected one of {examples}")
    if match["csource"]:
        return Debias("center", _source(match["csource"], name))
    if match["lsource"]:
        return Debias("lir", _source(match["lsource"], name), int(match["k"]))
    return Debias()


def _source(source: str, name) -> str:
    if source not in SOURCES:
        raise DebiasError(f"debias {name!r}: statistics source {source!r} is not one of {SOURCES}")
    return source


def by_language(embeddings: np.ndarray, languages: Sequence[str]) -> dict[str, np.ndarray]:
    """Split rows by their language label: ``{lang: embeddings[languages == lang]}``."""
    embeddings = np.asarray(embeddings)
    languages = np.asarray(languages)
    if embeddings.ndim != 2 or len(languages) != len(embeddings):
        raise DebiasError(f"embeddings must be (n, d) with one language label per row; got shape "
                          f"{embeddings.shape} and {len(languages)} labels")
    return {str(lang): embeddings[languages == lang] for lang in np.unique(languages)}


def encode_by_language(model, texts_by_language: Mapping[str, Sequence[str]], side: str,
                       batch_size: int = 64) -> dict[str, np.ndarray]:
    """Reference embeddings per language with ``lib.encode.encode`` (cached): ``side`` = query | passage.

    For ``pool``: ``encode_by_language(model, dict(tuple(candidates.groupby("lang").text)), "query")``.
    """
    return {str(lang): encode(model, list(texts), side, batch_size=batch_size, show_progress_bar=False)
            for lang, texts in texts_by_language.items()}


def language_means(reference: ByLanguage) -> dict[str, np.ndarray]:
    """``mu_l``: the mean embedding of each language (float64)."""
    return {lang: np.asarray(rows, dtype=np.float64).mean(axis=0) for lang, rows in _non_empty(reference).items()}


def language_directions(reference: ByLanguage, k: int) -> dict[str, np.ndarray]:
    """``C_l``: the top-``k`` right singular vectors of each language's raw matrix, as (d, k) columns."""
    out = {}
    for lang, rows in _non_empty(reference).items():
        rows = np.asarray(rows, dtype=np.float64)
        if k > min(rows.shape):
            raise DebiasError(f"lir-k{k}: language {lang} has {len(rows)} reference rows of dimension "
                              f"{rows.shape[1]}, too few for {k} directions; lower k")
        _, _, vt = np.linalg.svd(rows, full_matrices=False)
        out[lang] = vt[:k].T
    return out


def _non_empty(reference: ByLanguage) -> ByLanguage:
    empty = [lang for lang, rows in reference.items() if len(rows) == 0]
    if empty:
        raise DebiasError(f"no reference embeddings for languages {empty}: give at least one row per language")
    return reference


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def transform(embeddings: np.ndarray, languages: Sequence[str], spec: Debias, reference: ByLanguage,
              side: str = "embeddings") -> np.ndarray:
    """Apply ``spec`` to ``embeddings`` (rows labelled by ``languages``) with statistics of ``reference``.

    Centering: ``e' = normalise(e - mu_l)``, ``mu_l`` the mean of language ``l``'s reference rows;
    LIR-k: ``e' = normalise(e - U_l U_l^T e)``, ``U_l`` the top ``k`` principal directions of
    language ``l``'s reference rows.

    Args:
        embeddings: ``(n, d)`` rows to transform.
        languages: ``n`` language codes, one per row.
        spec: the variant (:func:`parse_debias`: ``center-pool``, ``lir-k1-pool``, ...).
        reference: per-language reference rows; must cover every language of ``languages``.
        side: names the input in errors only (``query`` | ``passage``).

    Returns:
        ``(n, d)`` L2-normalised rows (float64; ``none`` only normalises).

    References:
        Language-specific centering: Libovický, Rosa, Fraser, "On the Language Neutrality of
        Pre-trained Multilingual Representations", Findings of EMNLP 2020 (arXiv 2004.05160). LIR: Yang et al.,
        "A Simple and Effective Method To Eliminate the Self Language Bias in Multilingual
        Representations", EMNLP 2021 (arXiv 2109.04727).

    Example:
        >>> out = transform(embeddings, ["en", "de"], parse_debias("center-pool"), {"en": ref_en, "de": ref_de})
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    languages = np.asarray(languages)
    if spec.method == "none":
        return _normalise(embeddings)
    missing = sorted(set(map(str, np.unique(languages))) - set(reference))
    if missing:
        raise DebiasError(f"{spec.name}: no {side} statistics for languages {missing} (have "
                          f"{sorted(reference)}); pass reference embeddings for them")
    if spec.method == "center":
        statistics = language_means(reference)
    else:
        statistics = language_directions(reference, spec.k)
    out = embeddings.copy()
    for lang, stat in statistics.items():
        rows = languages == lang
        if not rows.any():
            continue
        if spec.method == "center":
            out[rows] = embeddings[rows] - stat
        else:
            out[rows] = embeddings[rows] - (embeddings[rows] @ stat) @ stat.T
    return _normalise(out)


def debias_embeddings(spec: Debias | str, queries: np.ndarray, query_languages: Sequence[str],
                      candidates: np.ndarray, candidate_languages: Sequence[str],
                      query_reference: ByLanguage | None = None,
                      passage_reference: ByLanguage | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Debiased ``(queries, candidates)``, each side with its own per-language statistics.

    Args:
        spec: the variant's name or :class:`Debias` (``none``, ``center-pool``, ``lir-k1-pool``,
            ``center-reference``, ``center-transductive``).
        queries, query_languages: ``(n_q, d)`` query embeddings and their languages.
        candidates, candidate_languages: ``(n_c, d)`` candidate embeddings and their languages.
        query_reference: query-side embeddings per language that are not the test queries (the
            pool's texts encoded with the query prefix for ``pool``; reference texts encoded as
            queries for ``reference``). ``transductive`` takes them from ``queries`` themselves
            (an upper bound: it uses the test queries).
        passage_reference: reference texts encoded as passages (``reference`` only).

    Returns:
        ``(queries, candidates)``, both L2-normalised, ready for cosine ranking.

    Example:
        >>> q, c = debias_embeddings("center-pool", q, q_langs, c, c_langs, query_reference=pool_queries)
    """
    spec = parse_debias(spec)
    if spec.method == "none":
        return _normalise(np.asarray(queries, dtype=np.float64)), _normalise(np.asarray(candidates, dtype=np.float64))
    if spec.source == "transductive":
        query_stats, passage_stats = by_language(queries, query_languages), by_language(candidates, candidate_languages)
    elif spec.source == "pool":
        if query_reference is None:
            raise DebiasError(f"{spec.name} needs query_reference: the pool's texts encoded with the query "
                              "prefix, per language (use center-transductive for the test queries' own means)")
        query_stats, passage_stats = query_reference, by_language(candidates, candidate_languages)
    else:
        if query_reference is None or passage_reference is None:
            raise DebiasError(f"{spec.name} needs query_reference and passage_reference: reference texts "
                              "(e.g. Tatoeba or training sentences) encoded as queries and as passages")
        query_stats, passage_stats = query_reference, passage_reference
    return (transform(queries, query_languages, spec, query_stats, side="query"),
            transform(candidates, candidate_languages, spec, passage_stats, side="passage"))


def language_mean_spread(embeddings: np.ndarray, languages: Sequence[str]) -> float:
    """Mean Euclidean distance between the language means of L2-normalised rows (0: no language offset)."""
    means = np.stack(list(language_means(by_language(_normalise(np.asarray(embeddings, float)), languages)).values()))
    if len(means) < 2:
        return 0.0
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    return float(distances[np.triu_indices(len(means), 1)].mean())
