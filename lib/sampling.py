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

Each sampler is one class, and the class is its batch rule: which pools a group joins
(``pool_keys``), which pool a batch draws from (``choose_key``) and which languages each drawn
group is shown in (``pair_languages``); the base class :class:`BatchSampler` holds what they
share (pools, source mixture, epochs, resumable state). A class with a ``name`` registers
itself (``SAMPLER_CLASSES``, ``SAMPLERS``, :func:`build_sampler`); its options are declared in
``params`` (:class:`SamplerParam`: default, help, range, label in run names), so the grid, run
names, the gather step and the report carry them without knowing them. docs/samplers.md shows
how to add one. What the batches look like (composition tables, figures, rule checks) is
:mod:`lib.batch_composition`; :mod:`lib.st_sampler` hands a sampler to sentence-transformers'
``SentenceTransformerTrainer``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch.utils.data

from lib.data import ParallelGroup
from lib.io import fingerprint

NEGATIVE_LANGUAGES = ("passage", "query")

# name -> class, filled by BatchSampler.__init_subclass__ as each sampler class is defined
SAMPLER_CLASSES: dict[str, type["BatchSampler"]] = {}


class _Names(Sequence):
    """The registered sampler names, in definition order; a live view of ``SAMPLER_CLASSES``."""

    def __getitem__(self, index):
        return tuple(SAMPLER_CLASSES)[index]

    def __len__(self) -> int:
        return len(SAMPLER_CLASSES)

    def __repr__(self) -> str:
        return repr(tuple(SAMPLER_CLASSES))


SAMPLERS: Sequence[str] = _Names()


class SamplingError(ValueError):
    """A sampler cannot be built as asked; the message names the input and the fix."""


class PairIndex(NamedTuple):
    """One training pair: row of its group in the group list, query language, passage language."""

    group: int
    query_lang: str
    passage_lang: str


@dataclass(frozen=True)
class SamplerParam:
    """One option a sampler class declares in ``params``: its default, help, inclusive range, the
    label that run names and tables give it (``a`` -> ``...-hybrid-a0.5-...``, ``hybrid a=0.5``;
    empty: the option's name), and the grid key that lists its values (``alphas``; empty: none,
    the grid's ``sampler_options`` section lists them)."""

    default: float
    help: str
    low: float | None = None
    high: float | None = None
    label: str = ""
    grid_key: str = ""

    def check(self, name: str, value) -> float:
        """``value`` as a float, or a SamplingError naming the option, its range and meaning."""
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not number or not np.isfinite(value) or (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high):
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            raise SamplingError(f"{name} must be in [{low}, {high}] ({self.help}), got {value!r}")
        return float(value)


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


class BatchSampler(torch.utils.data.Sampler):
    """Base of the samplers: sources, pools, epochs, determinism, resumption, options, registry.

    A sampler class is its batch rule, in three class methods: :meth:`pool_keys` (which pools of
    a source a group joins: one pool, or one per language), :meth:`choose_key` (which pool a
    batch draws from) and :meth:`pair_languages` (the query and passage language of each drawn
    group). A class with a ``name`` registers itself (``SAMPLER_CLASSES``, ``SAMPLERS``,
    :func:`build_sampler`); its options are declared in ``params`` (:class:`SamplerParam`),
    passed as keyword arguments and set as attributes. A sampler that mixes rules (hybrid)
    overrides :meth:`rules`. Usable as ``DataLoader(dataset, batch_sampler=sampler)``.

    Args:
        groups: the training groups (:class:`lib.data.ParallelGroup`), one per question id and source.
        batch_size: pairs per batch; at most the distinct question ids of the smallest pool.
        seed: seeds every draw; the batches of an epoch are a pure function of (seed, epoch).
        source_temperature: ``T`` of the source mixture, ``p_s ~ n_s ** (1 / T)``; 1 = by size.
        languages: the training languages (default: every language of the groups).
        batches_per_epoch: default ``usable groups // batch_size``.
        **options: the values of the options the class declares in ``params``.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, SamplerParam]] = {}
    min_languages: ClassVar[int] = 1          # a group joins the pool with at least this many languages

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.name:
            other = SAMPLER_CLASSES.get(cls.name)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"sampler name {cls.name!r} is taken by {other.__qualname__}; choose another name")
            SAMPLER_CLASSES[cls.name] = cls

    def __init__(self, groups: Sequence[ParallelGroup], batch_size: int, seed: int = 0,
                 source_temperature: float = 1.0, languages: list[str] | None = None,
                 batches_per_epoch: int | None = None, source_sizes: dict[str, float] | None = None,
                 **options):
        _check_arguments(batch_size, seed, source_temperature, batches_per_epoch, groups)
        self.options = check_sampler_options(self.name, options, cls=type(self))
        for key, value in self.options.items():
            setattr(self, key, value)
        super().__init__()
        self.groups = list(groups)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.source_temperature = float(source_temperature)
        self.languages = self._training_languages(languages)
        self.source_sizes = {str(k): float(v) for k, v in (source_sizes or {}).items()}
        bad = {k: v for k, v in self.source_sizes.items() if not v > 0}
        if bad:
            raise SamplingError(f"source_sizes {bad}: a declared source size must be > 0 (params/sources/*.yaml `size`)")
        allowed = set(self.languages)
        self._group_languages = [tuple(lang for lang in group.languages if lang in allowed)
                                 for group in self.groups]
        codes: dict[str, int] = {}
        self._qid_codes = np.array([codes.setdefault(g.qid, len(codes)) for g in self.groups], dtype=np.int64)
        self._rules = {rule.name: rule for rule, w in self.rules().items() if w > 0}
        self._kind_weights = {rule.name: float(w) for rule, w in self.rules().items() if w > 0}
        self._kind_names = list(self._kind_weights)
        self._kind_cumulative = np.cumsum(list(self._kind_weights.values())) / sum(self._kind_weights.values())
        self._members = self._build_pools()
        self._keys: dict[tuple[str, str], list[str | None]] = {}
        for kind, source, key in self._members:
            self._keys.setdefault((kind, source), []).append(key)
        self._source_weights = {kind: self._weights(kind) for kind in self._kind_names}
        usable = set()
        for (kind, _, _), members in self._members.items():
            usable.update(members.tolist())
        self.usable_groups = len(usable)
        self.batches_per_epoch = int(batches_per_epoch or max(1, self.usable_groups // self.batch_size))
        self.epoch = 0
        self.position = 0
        self._fingerprint: str | None = None

    def _training_languages(self, languages: list[str] | None) -> list[str]:
        present = sorted({lang for group in self.groups for lang in group.languages})
        if languages is None:
            return present
        unknown = sorted(set(languages) - set(present))
        if unknown:
            raise SamplingError(
                f"languages {unknown} are in no training group (the groups have {present}); "
                "drop them from languages=")
        return sorted(set(languages))

    # -- the batch rule: what a sampler class says -----------------------------------------------
    def rules(self) -> dict[type["BatchSampler"], float]:
        """The rules this sampler mixes, each with its probability per batch: its own by default."""
        return {type(self): 1.0}

    @classmethod
    def pool_keys(cls, languages: tuple[str, ...]) -> list[str | None]:
        """The pools of its source a group in ``languages`` joins: ``[None]`` (the source's one pool)
        when it has ``min_languages``, none otherwise; a per-language rule returns languages."""
        return [None] if len(languages) >= cls.min_languages else []

    @classmethod
    def choose_key(cls, keys: list[str | None], rng: np.random.Generator) -> str | None:
        """The pool of the drawn source a batch comes from (one pool: no draw)."""
        return keys[0]

    @classmethod
    def pair_languages(cls, rows: list[int], key: str | None, group_languages: list[tuple[str, ...]],
                       rng: np.random.Generator) -> list[PairIndex]:
        """The pairs of one batch: each drawn group row with its query and passage language."""
        raise NotImplementedError(f"{cls.__name__} must say how a batch pairs languages (pair_languages)")

    @classmethod
    def no_groups_message(cls, sampler: "BatchSampler") -> str:
        """Why no group can be used by this rule, and the fix."""
        return f"sampler {sampler.name!r} has no usable groups with languages={sampler.languages}"

    # -- pools -----------------------------------------------------------------------------------
    def _build_pools(self) -> dict[tuple[str, str, str | None], np.ndarray]:
        """(rule, source, pool key) -> group rows; checked against batch_size."""
        rows: dict[tuple[str, str, str | None], list[int]] = {}
        for kind, rule in self._rules.items():
            for row, (group, langs) in enumerate(zip(self.groups, self._group_languages)):
                for key in rule.pool_keys(langs):
                    rows.setdefault((kind, group.source, key), []).append(row)
        for kind, rule in self._rules.items():
            if not any(k == kind for k, _, _ in rows):
                raise SamplingError(self._no_groups_message(rule))
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

    def _no_groups_message(self, rule: type["BatchSampler"]) -> str:
        return rule.no_groups_message(self)

    def largest_batch_size(self) -> int:
        """The largest ``batch_size`` these groups allow: the distinct question ids of the smallest
        pool (no id may appear twice in a batch, so no batch can be larger)."""
        return int(min(len(np.unique(self._qid_codes[rows])) for rows in self._members.values()))

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
        """Rule (if several), source, pool, rows, languages: always in this order of draws."""
        kind = self._kind_names[0]
        if len(self._kind_names) > 1:
            kind = self._kind_names[int(np.searchsorted(self._kind_cumulative, rng.random(), side="right"))]
        rule = self._rules[kind]
        names, probabilities = self._source_weights[kind]
        source = names[0] if len(names) == 1 else names[int(rng.choice(len(names), p=probabilities))]
        key = (kind, source, rule.choose_key(self._keys[(kind, source)], rng))
        if key not in pools:
            pools[key] = _Pool(self._members[key])
        rows = pools[key].take(self.batch_size, self._qid_codes, rng)
        return rule.pair_languages(rows, key[2], self._group_languages, rng)

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
        options = "".join(f", {key}={value:g}" for key, value in self.options.items())
        return (f"{type(self).__name__}(groups={len(self.groups)}, batch_size={self.batch_size}, "
                f"seed={self.seed}{options}, languages={self.languages}, batches_per_epoch={self.batches_per_epoch})")


def _check_arguments(batch_size, seed, source_temperature, batches_per_epoch, groups) -> None:
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



class EnglishBatchSampler(BatchSampler):
    """En-En: every pair has its query and passage in English.

    Rule: one pool per source, of the groups with an English query and positive; each drawn
    group becomes the pair ``(group, "en", "en")``. The other languages of the data are unused.

    Args:
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch: as
            :class:`BatchSampler`; ``languages`` must include ``"en"``.

    Returns:
        Iterating yields batches (lists of ``batch_size`` :class:`PairIndex`) of one epoch.

    Raises:
        SamplingError: no group has English (the message says to include ``en``).

    References:
        The En-En baseline of LAReQA (Roy et al., EMNLP 2020, arXiv 2004.05484), compared again
        in arXiv 2408.10536.

    Example::

        sampler = EnglishBatchSampler(groups, batch_size=32, seed=0)
        batch = next(iter(sampler))   # [PairIndex(group=17, query_lang='en', passage_lang='en'), ...]
    """

    name = "en"

    @classmethod
    def pool_keys(cls, languages):
        return [None] if "en" in languages else []

    @classmethod
    def pair_languages(cls, rows, key, group_languages, rng):
        return [PairIndex(row, "en", "en") for row in rows]

    @classmethod
    def no_groups_message(cls, sampler):
        return (f"sampler {sampler.name!r} needs English groups (query and positive in 'en'), and "
                f"none are usable with languages={sampler.languages}; include 'en' in languages= "
                "and in the training data, or choose another sampler")


class MixedLanguageBatchSampler(BatchSampler):
    """X-X: each pair in one language, drawn uniformly over its id's languages; the pairs of a
    batch are in different languages in general (languages mix within a batch).

    Rule: one pool per source; a drawn group in ``n`` training languages becomes
    ``(group, l, l)`` with ``l`` uniform over its ``n`` languages.

    Args:
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch: as
            :class:`BatchSampler`.

    Returns:
        Iterating yields batches (lists of ``batch_size`` :class:`PairIndex`) of one epoch.

    References:
        The X-X baseline of LAReQA (Roy et al., EMNLP 2020, arXiv 2004.05484).

    Example::

        sampler = MixedLanguageBatchSampler(groups, batch_size=32, seed=0)
        {pair.query_lang for pair in next(iter(sampler))}   # several languages
    """

    name = "xx"

    @classmethod
    def pair_languages(cls, rows, key, group_languages, rng):
        counts = np.array([len(group_languages[row]) for row in rows])
        picks = rng.integers(0, counts)
        return [PairIndex(row, group_languages[row][i], group_languages[row][i])
                for row, i in zip(rows, picks.tolist())]


class MonolingualBatchSampler(BatchSampler):
    """X-X-mono (the paper's "monolingual"): one language per batch, every pair of the batch
    (query and passage) in that language.

    Rule: one pool per (source, language); a batch draws its source, then its language uniformly
    over the source's training languages, then groups from that language's pool; each becomes
    ``(group, l, l)``.

    Args:
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch: as
            :class:`BatchSampler`; ``batch_size`` is bounded by the smallest language pool.

    Returns:
        Iterating yields batches (lists of ``batch_size`` :class:`PairIndex`) of one epoch.

    References:
        X-X-mono in Elmahdy, Lin, Ahmad, "Synergistic Approach for Simultaneous Optimization of
        Monolingual, Cross-lingual, and Multilingual Information Retrieval", arXiv 2408.10536 (2024).

    Example::

        sampler = MonolingualBatchSampler(groups, batch_size=32, seed=0)
        {pair.query_lang for pair in next(iter(sampler))}   # exactly one language
    """

    name = "mono"

    @classmethod
    def pool_keys(cls, languages):
        return list(languages)

    @classmethod
    def choose_key(cls, keys, rng):
        return keys[int(rng.integers(len(keys)))]

    @classmethod
    def pair_languages(cls, rows, key, group_languages, rng):
        return [PairIndex(row, key, key) for row in rows]


class CrossLingualBatchSampler(BatchSampler):
    """X-Y (the paper's "cross-lingual"): every pair has its query and passage in two different
    languages.

    Rule: one pool per source, of the groups in at least two training languages; a group in
    ``n`` languages becomes ``(group, q, p)`` uniform over its ``n * (n - 1)`` ordered pairs
    ``q != p``. The paper does not say how X-Y draws its pairs; uniform per id is this project's
    choice. With MLQA-R, where every id has English, English is thus in more pairs than any
    other language.

    Args:
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch: as
            :class:`BatchSampler`.

    Returns:
        Iterating yields batches (lists of ``batch_size`` :class:`PairIndex`) of one epoch.

    Raises:
        SamplingError: no group has two training languages (the message names the fix).

    References:
        X-Y in arXiv 2408.10536 (Elmahdy, Lin, Ahmad, 2024).

    Example::

        sampler = CrossLingualBatchSampler(groups, batch_size=32, seed=0)
        all(p.query_lang != p.passage_lang for p in next(iter(sampler)))   # True
    """

    name = "cross"
    min_languages = 2

    @classmethod
    def pair_languages(cls, rows, key, group_languages, rng):
        counts = np.array([len(group_languages[row]) for row in rows])
        picks = rng.integers(0, counts * (counts - 1))
        batch = []
        for row, n, pick in zip(rows, counts.tolist(), picks.tolist()):
            langs = group_languages[row]
            query, passage = divmod(pick, n - 1)
            passage += passage >= query
            batch.append(PairIndex(row, langs[query], langs[passage]))
        return batch

    @classmethod
    def no_groups_message(cls, sampler):
        return (f"sampler {sampler.name!r} needs groups with at least two languages (X-Y pairs a "
                f"query and a passage in different languages), and none have two among "
                f"{sampler.languages}; use parallel training data, or the 'mono'/'xx' sampler")


class HybridBatchSampler(BatchSampler):
    """Hybrid (the paper's method): each batch is X-X-mono with probability ``alpha``, else X-Y.

    Rule: a coin per batch, then the batch follows :class:`MonolingualBatchSampler` or
    :class:`CrossLingualBatchSampler` (own pools and source weights for each). ``alpha=1``
    yields exactly the batches of the mono sampler and ``alpha=0`` those of the cross sampler
    (same seed). The paper found alpha = 0.5 best, stable for 0.4 to 0.6.

    Args:
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch: as
            :class:`BatchSampler`.
        alpha: probability that a batch is monolingual, in [0, 1]; default 0.5.

    Returns:
        Iterating yields batches (lists of ``batch_size`` :class:`PairIndex`) of one epoch.

    References:
        Elmahdy, Lin, Ahmad, "Synergistic Approach for Simultaneous Optimization of Monolingual,
        Cross-lingual, and Multilingual Information Retrieval", arXiv 2408.10536 (2024).

    Example::

        sampler = HybridBatchSampler(groups, batch_size=32, seed=0, alpha=0.5)
        batch = next(iter(sampler))   # all pairs in one language, or all cross-lingual
    """

    name = "hybrid"
    params = {"alpha": SamplerParam(0.5, "the probability that a hybrid batch is monolingual; 1 behaves as "
                                    "'mono', 0 as 'cross'", low=0.0, high=1.0, label="a", grid_key="alphas")}
    alpha: float

    def rules(self):
        return {MonolingualBatchSampler: self.alpha, CrossLingualBatchSampler: 1.0 - self.alpha}

    def _no_groups_message(self, rule):
        return rule.no_groups_message(self) + (" (or hybrid with alpha=1)" if rule is CrossLingualBatchSampler else "")


# -- options, by name --------------------------------------------------------------------------

def sampler_class(name: str) -> type[BatchSampler]:
    """The registered class of sampler ``name``, or a SamplingError listing the registered names."""
    if name not in SAMPLER_CLASSES:
        raise SamplingError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return SAMPLER_CLASSES[name]


def check_sampler_options(name: str, options: Mapping[str, Any], cls: type[BatchSampler] | None = None) -> dict[str, float]:
    """Every option the sampler declares, from ``options`` or its default, checked; an option it
    does not declare is refused (the message lists what it declares).

        check_sampler_options("hybrid", {"alpha": 0.3})   # {"alpha": 0.3}
        check_sampler_options("mono", {"alpha": 0.3})     # SamplingError: sampler 'mono' has no option 'alpha'
    """
    cls = cls or sampler_class(name)
    unknown = sorted(set(options) - set(cls.params))
    if unknown:
        declared = ", ".join(cls.params) or "none"
        raise SamplingError(f"sampler {name!r} has no option {', '.join(map(repr, unknown))} (its options: "
                            f"{declared}); remove it or choose a sampler that declares it")
    return {key: param.check(key, options.get(key, param.default)) for key, param in cls.params.items()}


def parse_sampler_options(text: str | Mapping[str, Any] | None) -> dict[str, float]:
    """``"beta=0.2,gamma=1"`` (a command line's or papermill's form) -> ``{"beta": 0.2, "gamma": 1.0}``."""
    if not text:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    options = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        try:
            options[key.strip()] = float(value)
        except ValueError:
            raise SamplingError(f"sampler_options {text!r}: expected key=number pairs separated by commas, "
                                "e.g. alpha=0.5") from None
        if not sep or not key.strip():
            raise SamplingError(f"sampler_options {text!r}: expected key=number pairs separated by commas, e.g. alpha=0.5")
    return options


def options_for(name: str, settings: Mapping[str, Any]) -> dict[str, float]:
    """The options of sampler ``name`` from a run's settings (a ``TrainConfig`` as a dict, a
    ``config.json``): each declared option from ``settings["sampler_options"]`` if there, else from
    a setting of its own name (``alpha``), else its default; checked.

        options_for("hybrid", {"sampler": "hybrid", "alpha": 0.3})   # {"alpha": 0.3}
        options_for("mono", {"sampler": "mono", "alpha": 0.5})       # {}: mono declares no option
    """
    cls = sampler_class(name)
    given = parse_sampler_options(settings.get("sampler_options"))
    values = {key: given.get(key, settings.get(key)) for key in cls.params}
    return check_sampler_options(name, {k: v for k, v in values.items() if v is not None}, cls)


def option_labels(name: str, options: Mapping[str, float]) -> dict[str, float]:
    """The options as run names and tables show them: ``{"alpha": 0.5}`` of hybrid -> ``{"a": 0.5}``."""
    cls = sampler_class(name)
    return {(cls.params[key].label or key): float(value) for key, value in options.items() if key in cls.params}


def run_options(settings: Mapping[str, Any]) -> tuple[str | None, dict[str, float], dict[str, float]]:
    """The sampler a run's settings (``config.json`` of a training run) name, its declared options
    and their labels: ``("hybrid", {"alpha": 0.5}, {"a": 0.5})``; no options for a sampler that is
    not registered (any more) or settings it refuses.

        sampler, options, labels = run_options(read_json(".../config.json"))
        system_name(sampler, labels)     # "hybrid a=0.5" (lib.naming)
    """
    name = settings.get("sampler")
    if name not in SAMPLER_CLASSES:
        return name, {}, {}
    try:
        options = options_for(name, settings)
    except SamplingError:
        return name, {}, {}
    return name, options, option_labels(name, options)


def build_sampler(name: str, groups: Sequence[ParallelGroup], batch_size: int, seed: int = 0,
                  source_temperature: float = 1.0, languages: list[str] | None = None,
                  batches_per_epoch: int | None = None, source_sizes: dict[str, float] | None = None,
                  **options) -> BatchSampler:
    """The sampler called ``name`` (one of ``SAMPLERS``) with its declared ``options``.

    An option that another registered sampler declares is checked against that declaration and
    then ignored (``build_sampler(name, ..., alpha=0.5) for name in SAMPLERS`` works); a name no
    sampler declares is refused.

    Args:
        name: a registered sampler name (``SAMPLERS``).
        groups, batch_size, seed, source_temperature, languages, batches_per_epoch, source_sizes: as
            :class:`BatchSampler`.
        **options: option values, e.g. ``alpha=0.5``.

    Returns:
        The sampler, at epoch 0, position 0.

    Example::

        sampler = build_sampler("mono", groups, batch_size=32, seed=0)
        len(sampler)   # batches per epoch
    """
    cls = sampler_class(name)
    own = {key: value for key, value in options.items() if key in cls.params}
    for key, value in options.items():
        if key not in own:
            declaring = [c for c in SAMPLER_CLASSES.values() if key in c.params]
            if not declaring:
                check_sampler_options(name, {key: value}, cls)          # refused, naming what it declares
            declaring[0].params[key].check(key, value)
    return cls(groups, batch_size, seed=seed, source_temperature=source_temperature, languages=languages,
               batches_per_epoch=batches_per_epoch, source_sizes=source_sizes, **own)


def fitting_batch_size(name: str, groups: Sequence[ParallelGroup], wanted: int, multiple_of: int = 1,
                       **options) -> int:
    """``wanted``, lowered to the largest batch size ``build_sampler(name, groups, ...)`` accepts and
    rounded down to a multiple of ``multiple_of`` (processes that split each batch): a sampler over
    few groups (held-out validation ids) that still works when ``wanted`` is the training batch size.

    Args:
        name: a registered sampler name.
        groups: the groups it will sample.
        wanted: the batch size asked for (pairs).
        multiple_of: processes that split each batch; the result is a multiple of it.
        **options: as :func:`build_sampler` (seed, languages, the sampler's options).

    Returns:
        The batch size, at most ``wanted``.

    Raises:
        SamplingError: even a batch of ``multiple_of`` pairs does not fit.

    Example::

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

    Args:
        groups: the groups the sampler was built on (indexed by ``PairIndex.group``).
        hard_negatives: add each pair's hard negative.
        negative_language: ``passage`` or ``query``: the language of the hard negative.
        seed: which of a group's negatives a pair gets.

    Returns:
        ``dataset[pair]`` is a dict of the pair's texts and languages (above).

    Example::

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

