"""Our samplers inside sentence-transformers' SentenceTransformerTrainer (lib.st_sampler): the
trainer's batches are the sampler's, and two training steps run on the tiny backbone (offline)."""

from __future__ import annotations

import pytest

from lib.sampling import SamplingError, build_sampler
from lib.st_sampler import SamplerBatches, batch_sampler, pair_dataset, pair_rows
from tests.test_sampling import make_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def groups():
    return make_groups(60, languages=["de", "en", "es"], min_languages=2, max_languages=3)


def test_rows_and_batches_are_the_samplers(groups):
    dataset = pair_dataset(groups)
    rows = pair_rows(groups)
    assert len(dataset) == len(rows) == sum(len(g.languages) ** 2 for g in groups)
    assert dataset.column_names == ["anchor", "positive", "negative"]
    batches = SamplerBatches(dataset, 6, False, seed=3, sampler="hybrid", groups=groups, alpha=0.5)
    reference = build_sampler("hybrid", groups, 6, seed=3, alpha=0.5)
    assert len(batches) == len(reference)
    for numbers, pairs in zip(batches, reference):
        assert [rows[n] for n in numbers] == pairs                       # the same batches, as row numbers
        first = groups[pairs[0].group]
        assert dataset[numbers[0]]["anchor"] == first.queries[pairs[0].query_lang]
        assert dataset[numbers[0]]["positive"] == first.positives[pairs[0].passage_lang]
    batches.set_epoch(1)
    assert batches.state_dict()["epoch"] == 1
    with pytest.raises(SamplingError, match="pair_dataset from the same groups"):
        SamplerBatches(dataset.select(range(10)), 6, False, sampler="mono", groups=groups)
    with pytest.raises(SamplingError, match="alpha must be in"):
        batch_sampler("hybrid", groups, alpha=2.0)


def test_two_steps_of_the_sentence_transformers_trainer_with_hybrid_batches(groups, tmp_path):
    from lib.backbones import load_model
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    seen = []

    class Recording(SamplerBatches):
        def __iter__(self):
            for numbers in super().__iter__():
                seen.append(numbers)
                yield numbers

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "st"), per_device_train_batch_size=4, max_steps=2, seed=0, report_to="none",
        use_cpu=True, save_strategy="no", logging_steps=1, dataloader_num_workers=0, learning_rate=1e-3,
        batch_sampler=lambda dataset, **kwargs: Recording(dataset, sampler="hybrid", groups=groups, alpha=0.5,
                                                          **kwargs),
        prompts={"anchor": "query: ", "positive": "passage: ", "negative": "passage: "})
    tiny_model = load_model("tiny", device="cpu")       # its own copy: the session's tiny_model stays untrained
    before = [p.detach().clone() for p in tiny_model.parameters()]
    trainer = SentenceTransformerTrainer(model=tiny_model, args=args, train_dataset=pair_dataset(groups),
                                         loss=MultipleNegativesRankingLoss(tiny_model))
    result = trainer.train()
    assert result.global_step == 2
    expected = build_sampler("hybrid", groups, 4, seed=0, alpha=0.5)
    rows = pair_rows(groups)
    assert [[rows[n] for n in numbers] for numbers in seen[:2]] == list(expected.epoch_batches(0))[:2]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert any(not p.detach().equal(b) for p, b in zip(tiny_model.parameters(), before))   # it learnt
