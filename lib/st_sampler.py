"""Our batch samplers inside sentence-transformers' ``SentenceTransformerTrainer`` (version 6).

sentence-transformers trains on a ``datasets.Dataset`` of text columns, and its trainer asks
``args.batch_sampler`` (a ``DefaultBatchSampler`` subclass, or a callable returning one) for
batches of row numbers. Our samplers (:mod:`lib.sampling`) draw batches of
:class:`~lib.sampling.PairIndex` ``(group, query language, passage language)`` instead. The
adapter closes that gap in two pieces:

* :func:`pair_dataset` writes one row per (group, query language, passage language) the samplers
  can draw (every ordered pair of a group's training languages, both equal included: ``n * n``
  rows for a group in ``n`` languages), with columns ``anchor``, ``positive`` (and ``negative``,
  the pair's hard negative from :class:`~lib.sampling.PairDataset`);
* :class:`SamplerBatches` is a ``DefaultBatchSampler`` that builds one of our samplers with the
  trainer's batch size and seed and yields each of its batches as those rows' numbers, so the
  batches are exactly the sampler's (same seed, same batches as ``python -m lib.train``).

:func:`batch_sampler` binds the sampler's name and options into the callable the trainer's
``batch_sampler`` argument accepts:

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    train_dataset = pair_dataset(groups)                       # anchor, positive, negative
    args = SentenceTransformerTrainingArguments(
        output_dir="checkpoints", per_device_train_batch_size=32, seed=0,
        batch_sampler=batch_sampler("hybrid", groups, alpha=0.5),
        prompts={"anchor": "query: ", "positive": "passage: ", "negative": "passage: "})
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset,
                               loss=MultipleNegativesRankingLoss(model)).train()

The trainer batches an ``eval_dataset`` with the same callable (refused: its rows are not
``pair_dataset(groups)``); evaluate with an ``evaluator`` instead. One process only: with several, ``accelerate`` shards each batch of row numbers across processes
(``BatchSamplerShard``), which keeps every pair but splits the contrastive batch (our own loop,
``lib.trainer``, gathers embeddings across processes instead).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator, Sequence

from sentence_transformers.base.sampler import DefaultBatchSampler

from lib.data import ParallelGroup
from lib.sampling import BatchSampler, PairDataset, PairIndex, SamplingError, build_sampler

COLUMNS = ("anchor", "positive", "negative")


def pair_rows(groups: Sequence[ParallelGroup], languages: Sequence[str] | None = None) -> list[PairIndex]:
    """Every pair a sampler over ``groups`` can draw, in row order: for each group, each ordered
    (query language, passage language) of its training languages (``languages``; all by default)."""
    allowed = set(languages) if languages else None
    rows = []
    for index, group in enumerate(groups):
        langs = [lang for lang in group.languages if allowed is None or lang in allowed]
        rows += [PairIndex(index, query, passage) for query in langs for passage in langs]
    return rows


def pair_dataset(groups: Sequence[ParallelGroup], languages: Sequence[str] | None = None,
                 hard_negatives: bool = True, negative_language: str = "passage", seed: int = 0):
    """A ``datasets.Dataset`` with one row per :func:`pair_rows` entry: ``anchor`` (the query),
    ``positive`` and, with ``hard_negatives``, ``negative`` (as :class:`~lib.sampling.PairDataset`
    picks it). sentence-transformers' losses take every column after ``anchor`` as candidates, so a
    ``negative`` column needs a negative in every row: a pair without one is refused.

    Args:
        groups: the training groups (``lib.trainer.load_training_groups`` or ``lib.training_data``).
        languages: training languages (all of the groups' by default); the same as the sampler's.
        hard_negatives: add the ``negative`` column.
        negative_language: ``passage`` (the positive's language) or ``query``.
        seed: which of a group's negatives each pair gets (a hash of seed, group and languages).

    Returns:
        ``datasets.Dataset`` with columns ``anchor``, ``positive`` (, ``negative``).
    """
    from datasets import Dataset

    texts = PairDataset(groups, hard_negatives, negative_language, seed)
    items = [texts[pair] for pair in pair_rows(groups, languages)]
    columns: dict[str, list[Any]] = {"anchor": [item["query"] for item in items],
                                     "positive": [item["positive"] for item in items]}
    if hard_negatives:
        missing = sum(item["negative"] is None for item in items)
        if missing:
            raise SamplingError(
                f"{missing} of {len(items)} pairs have no hard negative in their {negative_language} language; "
                "sentence-transformers needs one in every row of a negative column: set hard_negatives=False "
                "or keep groups with negatives in every language")
        columns["negative"] = [item["negative"] for item in items]
    return Dataset.from_dict(columns)


class SamplerBatches(DefaultBatchSampler):
    """A ``DefaultBatchSampler`` whose batches are one of our samplers' (row numbers of :func:`pair_dataset`).

    ``SentenceTransformerTrainer`` builds it through :func:`batch_sampler` with its dataset, its
    ``per_device_train_batch_size`` and its ``seed``; ``set_epoch`` (called by the trainer each
    epoch) and ``state_dict`` / ``load_state_dict`` are the wrapped sampler's.

    Args:
        dataset: the trainer's training dataset, :func:`pair_dataset` of the same ``groups``.
        batch_size: the trainer's ``per_device_train_batch_size``: pairs per contrastive batch.
        drop_last, valid_label_columns, generator: the trainer's, unused (every batch is full).
        seed: the trainer's seed; the sampler's batches are a pure function of (seed, epoch).
        sampler: a registered sampler name (``lib.sampling.SAMPLERS``).
        groups: the training groups the dataset was made from.
        languages: training languages, as given to :func:`pair_dataset`.
        **options: the sampler's options (``alpha=0.5``) and ``source_temperature``, ``batches_per_epoch``.

    Raises:
        SamplingError: the dataset's rows are not :func:`pair_dataset` of ``groups`` (another length).

    Example::

        batches = SamplerBatches(pair_dataset(groups), 8, False, sampler="hybrid", groups=groups, alpha=0.5)
        next(iter(batches))   # [412, 87, ...]: row numbers of one hybrid batch
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None,
                 generator=None, seed: int = 0, *, sampler: str, groups: Sequence[ParallelGroup],
                 languages: Sequence[str] | None = None, **options):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        rows = pair_rows(groups, languages)
        if len(dataset) != len(rows):
            raise SamplingError(f"the training dataset has {len(dataset)} rows, but pair_dataset(groups) has "
                                f"{len(rows)}: build it with pair_dataset from the same groups and languages")
        self.row_of = {pair: number for number, pair in enumerate(rows)}
        self.sampler: BatchSampler = build_sampler(sampler, groups, batch_size, seed=seed,
                                                   languages=list(languages) if languages else None, **options)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            yield [self.row_of[pair] for pair in batch]

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def batch_sampler(sampler: str, groups: Sequence[ParallelGroup], languages: Sequence[str] | None = None,
                  **options) -> partial:
    """The ``batch_sampler`` argument of ``SentenceTransformerTrainingArguments`` for one of our samplers.

    Args:
        sampler: a registered sampler name, e.g. ``"hybrid"``.
        groups: the training groups :func:`pair_dataset` was made from.
        languages: training languages (the same as :func:`pair_dataset`'s).
        **options: the sampler's options, e.g. ``alpha=0.5``.

    Returns:
        A callable ``(dataset, batch_size, drop_last, valid_label_columns, generator, seed) ->
        SamplerBatches``, as the trainer calls it.

    Example::

        args = SentenceTransformerTrainingArguments(output_dir="out", per_device_train_batch_size=32,
                                                    batch_sampler=batch_sampler("hybrid", groups, alpha=0.5))
    """
    build_sampler(sampler, groups, 1, languages=list(languages) if languages else None, **options)  # errors now
    return partial(SamplerBatches, sampler=sampler, groups=groups, languages=languages, **options)
