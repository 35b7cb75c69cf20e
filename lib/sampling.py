"""Batch samplers: which (query language, passage language) pairs share a training batch.

This is the contribution of the paper (arXiv 2408.10536): with in-batch negatives, the
languages that meet in a batch decide what the contrastive loss teaches. Five samplers, each
yielding batches of :class:`PairIndex` ``(group, query_lang, passage_lang)``:

=========  ===========================  ===================================================
name       class                        rule for one batch
=========  ===========================  ===================================================
``en``     EnglishBatchSampler          En-En: query and passage in English
``xx``     MixedLanguageBatchSampler    X-X: each pair in one random language of its id;
                                        languages mix within the batch
``mono``   MonolingualBatchSampler      X-X-mono: one language per batch, drawn uniformly;
                                        every pair of the batch in that language
``cross``  CrossLingualBatchSampler     X-Y: each pair's query and passage in two different
                                        languages, uniform over the ordered pairs of its id
``hybrid`` HybridBatchSampler           mono with probability ``alpha``, else cross
=========  ===========================  ===================================================

Rules shared by all samplers:

* **No duplicates.** A batch never holds two items with the same question id: translations of
  one question would be false in-batch negatives. Like sentence-transformers'
  ``NoDuplicatesBatchSampler``, but keyed on the question id, not on the texts.
* **Sources.** Each batch comes from one source (training set), drawn with probability
  ``p_s = n_s ** (1 / T) / sum_r n_r ** (1 / T)`` where ``n_s`` is the number of question ids of
  source ``s`` this sampler can use and ``T = source_temperature``. ``T = 1`` is the paper's
  "sampled based on dataset size" (sentence-transformers' ``ProportionalBatchSampler`` in
  expectation, though ours draws the source i.i.d. per batch instead of exhausting every
  source); large ``T`` flattens towards uniform over sources. ``source_sizes`` replaces ``n_s``
  by a declared size (the paper's set sizes, ``params/sources/*.yaml`` ``size``: mMARCO's 39.8M
  triples against the few thousand ids a run loads), so that the mix follows the full sets.
* **Sources without translations** (English only: the paper's Mr. TyDi and MFAQ) have no pair
  of two languages: ``en``, ``xx`` and ``mono`` use them (their batches English), ``cross`` and
  ``hybrid``'s cross batches cannot, and those draw over the parallel sources alone (the
  probabilities renormalised over them; ``source_probabilities()`` shows each kind's).
* **Epoch.** An epoch is ``batches_per_epoch`` batches, by default
  ``usable groups // batch_size`` (every group seen about once). Within an epoch, each pool
  (one source, and for ``mono`` one language) hands out its groups without replacement: a
  shuffled permutation, refilled with a new one when exhausted, so every group of a pool is
  used before any is repeated. Which language(s) a group is shown in is drawn afresh each time.
  Pools restart at every epoch.
* **Determinism.** The batches of an epoch are a pure function of ``(seed, epoch)``: one
  ``numpy.random.default_rng(SeedSequence([seed, epoch]))`` drives every draw. ``state_dict()``
  records ``seed, epoch, position`` (batches already handed out); ``load_state_dict`` followed by
  ``iter`` regenerates the epoch and skips to ``position`` (cheap: no model, no text), so a
  resumed run sees exactly the batches an uninterrupted one would have seen.

Differences from sentence-transformers' samplers: ours yield :class:`PairIndex` items (a group
and two languages) instead of dataset row numbers, so they pair with :class:`PairDataset`
rather than with a ``datasets.Dataset``; ``__len__`` is exact; the source mixture is per batch
like ``ProportionalBatchSampler`` but with a temperature; ``set_epoch`` works like theirs (the
Trainer calls it each epoch), and if nobody calls it, iterating past the end of an epoch moves on
to the next one.

Usage::

    sampler = build_sampler("hybrid", groups, batch_size=32, seed=0, alpha=0.5)
    loader = DataLoader(PairDataset(groups), batch_sampler=sampler, collate_fn=lambda b: b)
    for batch in loader: ...   # list of dicts: query, positive, negative, languages, qid, source

About 530 lines, on purpose: the five samplers are thin rules over one base class (pools, source
mixture, resumable state), and the rules read best side by side. What the batches look like
(composition tables, figures, rule checks) is :mod:`lib.batch_composition`.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch.utils.data

from lib.data import ParallelGroup
from lib.io import fingerprint

SAMPLERS = ("en", "xx", "mono", "cross", "hybrid")
NEGATIVE_LANGUAGES = ("passage", "query")


class SamplingError(ValueError):
    """A sampler cannot be built as asked; the message names the input and the fix."""


class PairIndex(NamedTuple):
    """One training pair: row of its group in the group list, query language, passage language."""

    group: int
    query_lang: str
    passage_lang: str


class _Pool:
    """Group rows handed out without replacement: a shuffled permutation, refilled when exhausted.

    ``take`` returns rows with distinct question ids; rows skipped because their id is already
    in the batch go back to the front of the pool for the next batch.
    """

    def __init__(self, members: np.ndarray):
        self.members = members
        self.queue: deque[int] = deque()

    def take(self, count: int, qid_codes: np.ndarray, rng: np.random.Generator) -> list[int]:
        taken: list[int] = []
        seen: set[int] = set()
        deferred: list[int] = []
        while len(taken) < count:
            if not self.queue:
                self.queue.extend(rng.permutation(self.members).tolist())
            row = self.queue.popleft()
            code = int(qid_codes[row])
            if code in seen:
                deferred.append(row)
            else:
                seen.add(code)
                taken.append(row)
        self.queue.extendleft(reversed(deferred))
        return taken


# How a batch of each kind pairs languages; which groups each kind can use.
_KIND_MIN_LANGUAGES = {"en": 1, "xx": 1, "mono": 1, "cross": 2}


class BatchSampler(torch.utils.data.Sampler):
    """Base of the five samplers: sources, pools, epochs, determinism and resumption.

    A subclass only says which batch kinds it mixes (``_kinds``: kind -> probability); the
    kinds are ``en``, ``xx``, ``mono`` and ``cross`` as described in the module docstring.
    Usable as ``DataLoader(dataset, batch_sampler=sampler)``.
    """

    name = ""

    def __init__(self, groups: Sequence[ParallelGroup], batch_size: int, seed: int = 0,
                 source_temperature: float = 1.0, languages: list[str] | None = None,
                 batches_per_epoch: int | None = None, source_sizes: dict[str, float] | None = None):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise SamplingError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SamplingError(f"seed must be a non-negative integer, got {seed!r}")
        if not source_temperature > 0:
            raise SamplingError(
                f"source_temperature must be > 0, got {source_temperature!r}: 1 draws sources in "
                "proportion to their size, larger values flatten towards uniform")
        if batches_per_epoch is not None and (
                not isinstance(batches_per_epoch, (int, np.integer)) or batches_per_epoch < 1):
            raise SamplingError(f"batches_per_epoch must be a positive integer or None, got {batches_per_epoch!r}")
        if not groups:
            raise SamplingError("groups is empty: build training groups first (lib.training_data)")
        super().__init__()
        self.groups = list(groups)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.source_temperature = float(source_temperature)
        self.source_sizes = {str(k): float(v) for k, v in (source_sizes or {}).items()}
        bad = {k: v for k, v in self.source_sizes.items() if not v > 0}
        if bad:
            raise SamplingError(f"source_sizes {bad}: a declared source size must be > 0 (params/sources/*.yaml `size`)")
        present = sorted({lang for group in self.groups for lang in group.languages})
        if languages is None:
            self.languages = present
        else:
            unknown = sorted(set(languages) - set(present))
            if unknown:
                raise SamplingError(
                    f"languages {unknown} are in no training group (the groups have {present}); "
                    "drop them from languages=")
            self.languages = sorted(set(languages))
        allowed = set(self.languages)
        self._group_languages = [tuple(lang for lang in group.languages if lang in allowed)
                                 for group in self.groups]
        codes: dict[str, int] = {}
        self._qid_codes = np.array([codes.setdefault(g.qid, len(codes)) for g in self.groups], dtype=np.int64)
        self._kind_weights = {kind: float(w) for kind, w in self._kinds().items() if w > 0}
        self._kind_names = list(self._kind_weights)
        self._kind_cumulative = np.cumsum(list(self._kind_weights.values())) / sum(self._kind_weights.values())
        self._members = self._build_pools()
        self._mono_languages: dict[str, list[str]] = {}
        for kind, source, lang in self._members:
            if kind == "mono":
                self._mono_languages.setdefault(source, []).append(lang)
        self._source_weights = {kind: self._weights(kind) for kind in self._kind_names}
        usable = set()
        for kind in self._kind_names:
            for (k, _, _), members in self._members.items():
                if k == kind:
                    usable.update(members.tolist())
        self.usable_groups = len(usable)
        self.batches_per_epoch = int(batches_per_epoch or max(1, self.usable_groups // self.batch_size))
        self.epoch = 0
        self.position = 0
        self._fingerprint: str | None = None

    # -- what a subclass decides -------------------------------------------------------------
    def _kinds(self) -> dict[str, float]:
        raise NotImplementedError

    # -- pools -----------------------------------------------------------------------------------
    def _build_pools(self) -> dict[tuple[str, str, str | None], np.ndarray]:
        """(kind, source, language or None) -> group rows; checked against batch_size."""
        rows: dict[tuple[str, str, str | None], list[int]] = {}
        for kind in self._kind_names:
            for row, (group, langs) in enumerate(zip(self.groups, self._group_languages)):
                if kind == "en":
                    keys = [None] if "en" in langs else []
                elif kind == "mono":
                    keys = list(langs)
                else:
                    keys = [None] if len(langs) >= _KIND_MIN_LANGUAGES[kind] else []
                for key in keys:
                    rows.setdefault((kind, group.source, key), []).append(row)
        for kind in self._kind_names:
            if not any(k == kind for k, _, _ in rows):
                raise SamplingError(self._no_groups_message(kind))
        members = {key: np.array(value, dtype=np.int64) for key, value in sorted(rows.items(), key=str)}
        for (kind, source, lang), group_rows in members.items():
            distinct = len(np.unique(self._qid_codes[group_rows]))
            if distinct < self.batch_size:
                where = f"language {lang!r} of source {source!r}" if lang else f"source {source!r}"
                fix = (f"or leave {lang!r} out with languages=[...]" if lang
                       else "or add groups to this source")
                raise SamplingError(
                    f"batch_size {self.batch_size} is larger than the {kind} pool of {where}: "
                    f"{distinct} groups with distinct question ids (no id may appear twice in a "
                    f"batch); lower batch_size to at most {distinct}, {fix}")
        return members

    def largest_batch_size(self) -> int:
        """The largest ``batch_size`` these groups allow: the distinct question ids of the smallest
        pool (no id may appear twice in a batch, so no batch can be larger)."""
        return int(min(len(np.unique(self._qid_codes[rows])) for rows in self._members.values()))

    def _no_groups_message(self, kind: str) -> str:
        if kind == "en":
            return (f"sampler {self.name!r} needs English groups (query and positive in 'en'), and "
                    f"none are usable with languages={self.languages}; include 'en' in languages= "
                    "and in the training data, or choose another sampler")
        if kind == "cross":
            return (f"sampler {self.name!r} needs groups with at least two languages (X-Y pairs a "
                    f"query and a passage in different languages), and none have two among "
                    f"{self.languages}; use parallel training data, or the 'mono'/'xx' sampler"
                    + (" (or hybrid with alpha=1)" if self.name == "hybrid" else ""))
        return f"sampler {self.name!r} has no usable groups with languages={self.languages}"

    def _weights(self, kind: str) -> tuple[list[str], np.ndarray]:
        """Sources of ``kind`` and their probabilities, proportional to size ** (1 / T): the declared
        ``source_sizes[s]`` where given (the paper's set sizes), else the usable ids."""
        sources: dict[str, set[int]] = {}
        for (k, source, _), members in self._members.items():
            if k == kind:
                sources.setdefault(source, set()).update(self._qid_codes[members].tolist())
        names = sorted(sources)
        sizes = np.array([self.source_sizes.get(s, len(sources[s])) for s in names], dtype=np.float64)
        weights = sizes ** (1.0 / self.source_temperature)
        return names, weights / weights.sum()

    def source_probabilities(self) -> pd.DataFrame:
        """Per batch kind and source: usable ids and the probability a batch of that kind draws it."""
        rows = []
        for kind in self._kind_names:
            names, probabilities = self._source_weights[kind]
            for source, probability in zip(names, probabilities):
                ids = set()
                for (k, s, _), members in self._members.items():
                    if k == kind and s == source:
                        ids.update(self._qid_codes[members].tolist())
                rows.append({"kind": kind, "source": source, "ids": len(ids), "probability": probability})
        return pd.DataFrame(rows)

    # -- drawing ---------------------------------------------------------------------------------
    def _draw_batch(self, rng: np.random.Generator, pools: dict) -> list[PairIndex]:
        kind = self._kind_names[0]
        if len(self._kind_names) > 1:
            kind = self._kind_names[int(np.searchsorted(self._kind_cumulative, rng.random(), side="right"))]
        names, probabilities = self._source_weights[kind]
        source = names[0] if len(names) == 1 else names[int(rng.choice(len(names), p=probabilities))]
        lang = None
        if kind == "mono":
            options = self._mono_languages[source]
            lang = options[int(rng.integers(len(options)))]
        key = (kind, source, lang)
        if key not in pools:
            pools[key] = _Pool(self._members[key])
        rows = pools[key].take(self.batch_size, self._qid_codes, rng)
        if kind == "en":
            return [PairIndex(row, "en", "en") for row in rows]
        if kind == "mono":
            return [PairIndex(row, lang, lang) for row in rows]
        counts = np.array([len(self._group_languages[row]) for row in rows])
        if kind == "xx":
            picks = rng.integers(0, counts)
            return [PairIndex(row, self._group_languages[row][i], self._group_languages[row][i])
                    for row, i in zip(rows, picks.tolist())]
        # cross: uniform over the n * (n - 1) ordered pairs of distinct languages of each id
        picks = rng.integers(0, counts * (counts - 1))
        batch = []
        for row, n, pick in zip(rows, counts.tolist(), picks.tolist()):
            langs = self._group_languages[row]
            query, passage = divmod(pick, n - 1)
            passage += passage >= query
            batch.append(PairIndex(row, langs[query], langs[passage]))
        return batch

    def epoch_batches(self, epoch: int) -> Iterator[list[PairIndex]]:
        """All batches of one epoch, from its start: a pure function of (seed, epoch)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))
        pools: dict = {}
        for _ in range(self.batches_per_epoch):
            yield self._draw_batch(rng, pools)

    # -- the torch sampler protocol --------------------------------------------------------------
    def __iter__(self) -> Iterator[list[PairIndex]]:
        """Batches of the current epoch from ``position`` on; at the end of an epoch, the next one."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position
        for index, batch in enumerate(self.epoch_batches(self.epoch)):
            if index < start:
                continue
            self.position = index + 1
            yield batch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch (unless already in it: a resumed position is kept)."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    # -- resumption ------------------------------------------------------------------------------
    def _config(self) -> dict:
        if self._fingerprint is None:
            self._fingerprint = fingerprint([(g.qid, g.source, langs)
                                             for g, langs in zip(self.groups, self._group_languages)])
        return {"sampler": self.name, "seed": self.seed, "batch_size": self.batch_size,
                "batches_per_epoch": self.batches_per_epoch,
                "source_temperature": self.source_temperature, "languages": self.languages,
                "kinds": self._kind_weights,
                "groups": self._fingerprint,
                **({"source_sizes": self.source_sizes} if self.source_sizes else {})}

    def state_dict(self, position: int | None = None) -> dict:
        """JSON-serialisable state: the configuration, ``epoch`` and ``position``.

        ``position`` is the number of batches of ``epoch`` handed out by ``__iter__``. A
        DataLoader with workers fetches batches ahead of the training loop; pass the number of
        batches the loop has actually consumed in this epoch to record that instead.
        """
        return {**self._config(), "epoch": self.epoch,
                "position": self.position if position is None else int(position)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; refuses a state made with another configuration or data."""
        expected = self._config()
        different = {key: (state.get(key), value) for key, value in expected.items() if state.get(key) != value}
        if different:
            detail = "; ".join(f"{key}: state has {got!r}, this sampler {want!r}"
                               for key, (got, want) in different.items())
            raise SamplingError(
                f"cannot resume from this sampler state, it was made with another configuration "
                f"({detail}); build the sampler with the same arguments and training groups")
        position = int(state["position"])
        if not 0 <= position <= self.batches_per_epoch:
            raise SamplingError(f"state position {position} is outside 0..{self.batches_per_epoch}")
        self.epoch, self.position = int(state["epoch"]), position

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(groups={len(self.groups)}, batch_size={self.batch_size}, "
                f"seed={self.seed}, languages={self.languages}, batches_per_epoch={self.batches_per_epoch})")


class EnglishBatchSampler(BatchSampler):
    """En-En (LAReQA baseline): every pair has query and passage in English.

    Usable groups: those with an English query and positive. Raises if there are none.

        sampler = EnglishBatchSampler(groups, batch_size=32, seed=0)
        batch = next(iter(sampler))   # [PairIndex(group=17, query_lang='en', passage_lang='en'), ...]
    """

    name = "en"

    def _kinds(self) -> dict[str, float]:
        return {"en": 1.0}


class MixedLanguageBatchSampler(BatchSampler):
    """X-X (LAReQA baseline): each pair in one language, drawn uniformly over its id's languages;
    pairs of one batch are in different languages in general (languages mix within a batch).

        sampler = MixedLanguageBatchSampler(groups, batch_size=32, seed=0)
        {pair.query_lang for pair in next(iter(sampler))}   # several languages
    """

    name = "xx"

    def _kinds(self) -> dict[str, float]:
        return {"xx": 1.0}


class MonolingualBatchSampler(BatchSampler):
    """X-X-mono (paper: "monolingual"): one language per batch, drawn uniformly over the
    training languages of the batch's source; every pair of the batch is in that language
    (query and passage). Each language has its own pool of groups.

        sampler = MonolingualBatchSampler(groups, batch_size=32, seed=0)
        {pair.query_lang for pair in next(iter(sampler))}   # exactly one language
    """

    name = "mono"

    def _kinds(self) -> dict[str, float]:
        return {"mono": 1.0}


class CrossLingualBatchSampler(BatchSampler):
    """X-Y (paper: "cross-lingual"): every pair has its query and passage in two different
    languages, drawn uniformly over the ordered language pairs that exist for that id (an id in
    n languages offers n * (n - 1) pairs). Ids in a single language cannot be used.

    The paper does not say how X-Y draws its pairs; uniform per id is our choice. With MLQA-R,
    where every id has English, English is thus in more pairs than any other language.

        sampler = CrossLingualBatchSampler(groups, batch_size=32, seed=0)
        all(p.query_lang != p.passage_lang for p in next(iter(sampler)))   # True
    """

    name = "cross"

    def _kinds(self) -> dict[str, float]:
        return {"cross": 1.0}


class HybridBatchSampler(BatchSampler):
    """Hybrid (the paper's method): each batch is X-X-mono with probability ``alpha``, else X-Y.

    The coin is flipped per batch, then the batch follows :class:`MonolingualBatchSampler` or
    :class:`CrossLingualBatchSampler` (own pools and source weights for each kind).
    ``alpha=1`` yields exactly the batches of the mono sampler and ``alpha=0`` those of the cross
    sampler (same seed). The paper found alpha = 0.5 best, stable for 0.4 to 0.6.

        sampler = HybridBatchSampler(groups, batch_size=32, seed=0, alpha=0.5)
        batch = next(iter(sampler))   # all pairs in one language, or all cross-lingual
    """

    name = "hybrid"

    def __init__(self, groups: Sequence[ParallelGroup], batch_size: int, seed: int = 0,
                 alpha: float = 0.5, **options):
        self.alpha = _check_alpha(alpha)
        super().__init__(groups, batch_size, seed=seed, **options)

    def _kinds(self) -> dict[str, float]:
        return {"mono": self.alpha, "cross": 1.0 - self.alpha}


SAMPLER_CLASSES: dict[str, type[BatchSampler]] = {
    "en": EnglishBatchSampler,
    "xx": MixedLanguageBatchSampler,
    "mono": MonolingualBatchSampler,
    "cross": CrossLingualBatchSampler,
    "hybrid": HybridBatchSampler,
}


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float, np.floating)) and 0.0 <= float(alpha) <= 1.0):
        raise SamplingError(
            f"alpha must be in [0, 1] (the probability that a hybrid batch is monolingual), got "
            f"{alpha!r}; 1 behaves as 'mono', 0 as 'cross'")
    return float(alpha)


def build_sampler(name: str, groups: Sequence[ParallelGroup], batch_size: int, seed: int = 0,
                  alpha: float = 0.5, source_temperature: float = 1.0,
                  languages: list[str] | None = None, batches_per_epoch: int | None = None,
                  source_sizes: dict[str, float] | None = None) -> BatchSampler:
    """The sampler called ``name`` (one of ``SAMPLERS``); ``alpha`` is used by ``hybrid`` only
    (but must lie in [0, 1] whatever the sampler).

        sampler = build_sampler("mono", groups, batch_size=32, seed=0)
        len(sampler)   # batches per epoch
    """
    if name not in SAMPLER_CLASSES:
        raise SamplingError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    _check_alpha(alpha)
    options = dict(seed=seed, source_temperature=source_temperature, languages=languages,
                   batches_per_epoch=batches_per_epoch, source_sizes=source_sizes)
    if name == "hybrid":
        options["alpha"] = alpha
    return SAMPLER_CLASSES[name](groups, batch_size, **options)


def fitting_batch_size(name: str, groups: Sequence[ParallelGroup], wanted: int, multiple_of: int = 1,
                       **options) -> int:
    """``wanted``, lowered to the largest batch size ``build_sampler(name, groups, ...)`` accepts and
    rounded down to a multiple of ``multiple_of`` (processes that split each batch): a sampler over
    few groups (held-out validation ids) that still works when ``wanted`` is the training batch size.

        fitting_batch_size("hybrid", validation_groups, 100)   # e.g. 46: the smallest mono pool
    """
    largest = build_sampler(name, groups, 1, **options).largest_batch_size()
    size = min(int(wanted), largest) // multiple_of * multiple_of
    if size < 1:
        raise SamplingError(f"sampler {name!r} over these {len(groups)} groups allows batches of at most "
                            f"{largest} pairs, fewer than the {multiple_of} processes that split each batch; "
                            "add groups (raise validation_fraction) or use fewer processes")
    return size


class PairDataset(torch.utils.data.Dataset):
    """Texts of a :class:`PairIndex`: ``dataset[PairIndex(3, "de", "en")]`` ->
    ``{"query", "positive", "negative", "negative_lang", "query_lang", "passage_lang", "qid", "source"}``.

    The hard negative is one of the group's negatives in the passage's language
    (``negative_language="passage"``) or in the query's (``"query"``); ``negative_lang`` records
    which language it is in. It is ``None`` (and ``negative_lang`` too) when
    ``hard_negatives=False`` or the group has no negative in that language: the loss then uses
    the in-batch negatives alone for that pair. The choice among several negatives is a
    deterministic hash of (seed, group, query language, passage language): the same pair gets
    the same negative in every epoch and every worker process.

        dataset = PairDataset(groups, hard_negatives=True, negative_language="passage", seed=0)
        loader = DataLoader(dataset, batch_sampler=build_sampler("hybrid", groups, 32), collate_fn=list)
    """

    def __init__(self, groups: Sequence[ParallelGroup], hard_negatives: bool = True,
                 negative_language: str = "passage", seed: int = 0):
        if negative_language not in NEGATIVE_LANGUAGES:
            raise SamplingError(
                f"negative_language {negative_language!r}: expected 'passage' (hard negative in "
                "the positive's language) or 'query' (in the query's language)")
        self.groups = list(groups)
        self.hard_negatives = hard_negatives
        self.negative_language = negative_language
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: PairIndex) -> dict:
        try:
            row, query_lang, passage_lang = index
        except (TypeError, ValueError):
            raise TypeError(
                f"PairDataset is indexed by PairIndex(group, query_lang, passage_lang), got "
                f"{index!r}; use it with a sampler from build_sampler as the DataLoader's batch_sampler") from None
        group = self.groups[row]
        if query_lang not in group.queries or passage_lang not in group.positives:
            raise KeyError(
                f"group {row} (qid {group.qid!r}) has queries in {sorted(group.queries)} and "
                f"positives in {sorted(group.positives)}; no pair ({query_lang!r}, {passage_lang!r})")
        negative = negative_lang = None
        if self.hard_negatives:
            lang = passage_lang if self.negative_language == "passage" else query_lang
            candidates = group.negatives.get(lang) or []
            if candidates:
                key = f"{self.seed}|{row}|{query_lang}|{passage_lang}".encode()
                pick = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
                negative, negative_lang = candidates[pick % len(candidates)], lang
        return {"query": group.queries[query_lang], "positive": group.positives[passage_lang],
                "negative": negative, "negative_lang": negative_lang, "query_lang": query_lang,
                "passage_lang": passage_lang, "qid": group.qid, "source": group.source}

