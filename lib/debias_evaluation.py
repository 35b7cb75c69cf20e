"""Debiasing variants of one LAReQA evaluation, from one set of embeddings (``lib.debias``).

An evaluation lists its variants (``debias="none,center-pool,lir-k1-pool,center-transductive"``);
the questions and candidates are encoded once (cached by ``lib.encode``), and each variant
re-ranks transformed copies of the same embeddings. What each source needs beyond them:

| source         | extra encoding (cached)                                                    |
|----------------|-----------------------------------------------------------------------------|
| `pool`         | ``POOL_SIZE`` of the pool's candidates per language (a fixed random sample, seed 0), encoded with the *query* prefix (query-side statistics) |
| `reference`    | Tatoeba sentences of the dataset's languages (``REFERENCE_SIZE`` per language, ``TATOEBA_DIR``), encoded as queries and as passages |
| `transductive` | nothing (the test queries' own statistics: an upper bound, not a system)   |

English has no Tatoeba file of its own; its reference sentences are the English sides of the
other languages' pairs (deduplicated, first ``REFERENCE_SIZE``).

    variants = parse_variants("none,center-pool")
    statistics = debias_statistics(model, dataset, variants)
    for spec in variants:
        questions, candidates = debias_embeddings(spec, q, q_langs, c, c_langs, **statistics.for_spec(spec))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib.data import RetrievalDataset
from lib.debias import Debias, DebiasError, by_language, debias_embeddings, parse_debias
from lib.encode import encode
from lib.tatoeba import ISO1_TO_TATOEBA, load_tatoeba_pair

REFERENCE_SIZE = 500
POOL_SIZE = 500     # per language: a mean or a top singular vector of 384-d embeddings is stable from
                    # 500 texts, and XQuAD-R's ~1,180 candidates per language need not all be re-encoded
REFERENCE_DESCRIPTION = (f"Tatoeba (LASER v1 test files, TATOEBA_DIR): the first {REFERENCE_SIZE} sentences of each "
                         "language; English from the English sides of the pairs, deduplicated")


def parse_variants(debias: str | list | tuple | None) -> list[Debias]:
    """``"none,center-pool"`` (or a list) -> ``[Debias(), Debias("center", "pool")]``.

    ``none`` always comes first (added when missing): it is the evaluation itself, which the
    variants are compared with; duplicates are dropped.
    """
    names = debias.split(",") if isinstance(debias, str) else list(debias or [])
    specs = [parse_debias(name.strip() if isinstance(name, str) else name) for name in names
             if not isinstance(name, str) or name.strip()]
    unique = {spec.name: spec for spec in [Debias(), *specs]}
    return list(unique.values())


def reference_texts(languages, size: int = REFERENCE_SIZE, data_dir=None) -> tuple[list[str], list[str]]:
    """Per-language reference sentences from Tatoeba: ``(texts, languages)`` in ``languages`` order.

    A language without a Tatoeba file (other than English) is an error naming it.
    """
    others = [lang for lang in languages if lang != "en"]
    missing = [lang for lang in others if lang not in ISO1_TO_TATOEBA]
    if missing:
        raise DebiasError(f"no Tatoeba reference sentences for languages {missing}; use the pool or "
                          "transductive source for them")
    pairs = {lang: load_tatoeba_pair(ISO1_TO_TATOEBA[lang], data_dir=data_dir) for lang in others}
    texts, labels = [], []
    for lang in languages:
        if lang == "en":
            sentences = list(dict.fromkeys(s for pair in pairs.values() for s in pair.english))[:size]
        else:
            sentences = pairs[lang].sentences[:size]
        texts += sentences
        labels += [lang] * len(sentences)
    return texts, labels


@dataclass
class DebiasStatistics:
    """The embeddings the variants take their statistics from, per language (``lib.debias``)."""

    pool_query: dict[str, np.ndarray] | None = None          # the pool's candidates, query prefix
    reference_query: dict[str, np.ndarray] | None = None     # reference texts, query prefix
    reference_passage: dict[str, np.ndarray] | None = None   # reference texts, passage prefix
    description: dict[str, str] = field(default_factory=dict)

    def for_spec(self, spec: Debias) -> dict:
        """The keyword arguments of :func:`lib.debias.debias_embeddings` for ``spec``."""
        if spec.method == "none" or spec.source == "transductive":
            return {}
        if spec.source == "pool":
            return {"query_reference": self.pool_query}
        return {"query_reference": self.reference_query, "passage_reference": self.reference_passage}


def pool_sample(languages, size: int = POOL_SIZE, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most ``size`` items per language, a fixed random sample (``seed``)."""
    languages = np.asarray(languages)
    rng = np.random.default_rng(seed)
    chosen = []
    for lang in dict.fromkeys(languages.tolist()):
        rows = np.flatnonzero(languages == lang)
        chosen.append(rows if len(rows) <= size else rng.choice(rows, size, replace=False))
    return np.sort(np.concatenate(chosen))


def debias_statistics(model, dataset: RetrievalDataset, variants, batch_size: int = 64,
                      reference_dir=None, precision: str = "auto",
                      pool_size: int = POOL_SIZE) -> DebiasStatistics:
    """Encode (or read from the cache) only what ``variants`` need, in the evaluation's
    ``precision``: see the module's table."""
    sources = {spec.source for spec in variants if spec.method != "none"}
    statistics = DebiasStatistics()
    encode_as = dict(batch_size=batch_size, precision=precision)
    if "pool" in sources:
        rows = pool_sample(dataset.candidates.lang.to_numpy(), pool_size)
        sample = dataset.candidates.iloc[rows]
        statistics.pool_query = by_language(encode(model, sample.text, "query", **encode_as), sample.lang.to_numpy())
        statistics.description["pool"] = (f"the searched candidates (a fixed random sample of at most {pool_size} "
                                          "per language) encoded with the query prefix (query side)")
    if "reference" in sources:
        texts, labels = reference_texts(dataset.languages, data_dir=reference_dir)
        statistics.reference_query = by_language(encode(model, texts, "query", **encode_as), labels)
        statistics.reference_passage = by_language(encode(model, texts, "passage", **encode_as), labels)
        statistics.description["reference"] = REFERENCE_DESCRIPTION
    if "transductive" in sources:
        statistics.description["transductive"] = "the test queries' own statistics: an upper bound, not a system"
    return statistics


def debiased_embeddings(spec: Debias, dataset: RetrievalDataset, questions: np.ndarray, candidates: np.ndarray,
                        statistics: DebiasStatistics) -> tuple[np.ndarray, np.ndarray]:
    """``(questions, candidates)`` transformed by ``spec`` with the statistics it needs; ``none``
    returns the embeddings untouched (bit for bit the evaluation without debiasing)."""
    if spec.method == "none":
        return questions, candidates
    return debias_embeddings(spec, questions, dataset.questions.lang.to_numpy(), candidates,
                             dataset.candidates.lang.to_numpy(), **statistics.for_spec(spec))
