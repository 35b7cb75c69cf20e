"""Gradient caching (lib.gradcache) gives the gradients of the uncached batch: on the tiny backbone in
float64, with pairs lacking a hard negative and a duplicate passage; with dropout, the replayed chunks
match an uncached pass with the same chunks; across two gloo processes under DDP, the cached,
gathered gradients equal one process's over the whole batch; and the trainer runs with it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.backbones import load_model
from lib.dual_encoder import DualEncoder, PairCollator, batch_loss
from lib.dropout import use_numpy_dropout
from lib.gradcache import cached_backward, chunk_batch, step_loss_backward
from lib.losses import InfoNCELoss
from lib.train import TrainConfig, train

from tests.test_train import split, synthetic_groups


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def items(n: int = 8) -> list[dict]:
    """Pairs of different lengths; every third has no hard negative; pair 5 repeats pair 1's passage."""
    rows = []
    for i in range(n):
        rows.append({"query": f"question {i} " + "about rivers " * (i % 4),
                     "positive": f"passage {i} on " + "mountains and lakes " * (i % 3),
                     "negative": None if i % 3 == 2 else f"unrelated text {i} " + "winter " * (i % 5)})
    rows[5]["positive"] = rows[1]["positive"]
    return rows


def encoder_in_float64(train_mode: bool):
    encoder = load_model("tiny", device="cpu").double()
    encoder.train(train_mode)
    return encoder


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


def assert_same_gradients(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and len(got) > 10
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_chunks_hold_their_pairs_negatives_and_trimmed_padding():
    encoder = encoder_in_float64(False)
    batch = PairCollator(encoder.tokenizer, encoder.backbone)(items())
    chunk = chunk_batch(batch, 3, 6)
    assert chunk["pairs"] == 3
    torch.testing.assert_close(chunk["query"]["input_ids"],
                               batch["query"]["input_ids"][3:6, :chunk["query"]["input_ids"].shape[1]])
    assert chunk["query"]["attention_mask"][:, -1].any()      # no column of pure padding left
    assert chunk["negative_index"].tolist() == [0, 1]        # pairs 3 and 4 have negatives, 5 has none
    assert chunk["negative"]["input_ids"].shape[0] == 2


@pytest.mark.parametrize("symmetric", [False, True])
def test_cached_gradients_equal_the_whole_batch(symmetric):
    encoder = encoder_in_float64(False)  # no dropout: the chunks see exactly the same network
    dual_encoder, loss_fn = DualEncoder(encoder), InfoNCELoss(0.05, symmetric=symmetric)
    batch = PairCollator(encoder.tokenizer, encoder.backbone)(items())
    loss = batch_loss(dual_encoder, loss_fn, batch)
    (loss / 2).backward()
    expected = gradients(encoder)
    for mini_batch_size in (1, 3, 5):
        cached = cached_backward(dual_encoder, loss_fn, batch, mini_batch_size, scale=lambda value: value / 2)
        assert cached.item() == pytest.approx(loss.item(), rel=1e-12)
        assert_same_gradients(gradients(encoder), expected)


@pytest.mark.parametrize("masks", ["torch", "numpy"])
def test_dropout_is_replayed_and_the_rng_ends_where_the_first_pass_left_it(masks):
    """With dropout on, the cached step equals an uncached one that embeds the same chunks in the
    same order (the same dropout masks), and leaves the RNG as that pass does: with torch's masks
    and with lib.dropout's numpy masks (seeded from torch's generator, so replayed alike)."""
    encoder = encoder_in_float64(True)
    if masks == "numpy":
        assert use_numpy_dropout(encoder) > 0
    dual_encoder, loss_fn = DualEncoder(encoder), InfoNCELoss(0.05)
    batch = PairCollator(encoder.tokenizer, encoder.backbone)(items())
    torch.manual_seed(7)
    outputs = [dual_encoder(c["query"], c["positive"], c["negative"], c["negative_index"])
               for c in (chunk_batch(batch, b, min(b + 3, 8)) for b in range(0, 8, 3))]
    joined = [torch.cat([o[i] for o in outputs]) for i in range(4)]
    loss = loss_fn(*joined, batch["candidate_keys"])
    loss.backward()
    expected, rng_after = gradients(encoder), torch.get_rng_state()
    torch.manual_seed(7)
    cached = cached_backward(dual_encoder, loss_fn, batch, 3)
    assert cached.item() == pytest.approx(loss.item(), rel=1e-12)
    assert_same_gradients(gradients(encoder), expected)
    assert torch.equal(torch.get_rng_state(), rng_after)


def test_mini_batch_size_zero_or_the_whole_batch_is_the_plain_step():
    encoder = encoder_in_float64(True)
    dual_encoder, loss_fn = DualEncoder(encoder), InfoNCELoss(0.05)
    batch = PairCollator(encoder.tokenizer, encoder.backbone)(items())
    torch.manual_seed(1)
    batch_loss(dual_encoder, loss_fn, batch).backward()
    expected = gradients(encoder)
    for mini_batch_size in (0, 8, 100):
        torch.manual_seed(1)
        step_loss_backward(dual_encoder, loss_fn, batch, mini_batch_size)
        got = gradients(encoder)
        for name in expected:
            assert torch.equal(got[name], expected[name]), name
    with pytest.raises(ValueError, match="mini_batch_size"):
        cached_backward(dual_encoder, loss_fn, batch, 0)


def _ddp_cached_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One process of a gloo group: its half of the pairs, cached in chunks of 2, DDP-averaged gradients."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    encoder = encoder_in_float64(False)
    dual_encoder = nn.parallel.DistributedDataParallel(DualEncoder(encoder), find_unused_parameters=True)
    local = items()[rank * 4:(rank + 1) * 4]
    batch = PairCollator(encoder.tokenizer, encoder.backbone)(local)
    loss = cached_backward(dual_encoder, InfoNCELoss(0.05, gather_across_devices=True), batch, 2)
    torch.save({"loss": loss, "grads": gradients(encoder)}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.barrier()  # every collective done before gloo is torn down
    torch.distributed.destroy_process_group()


def test_cached_gradients_compose_with_the_cross_device_gather(tmp_path):
    torch.multiprocessing.spawn(_ddp_cached_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    encoder = encoder_in_float64(False)
    loss = batch_loss(DualEncoder(encoder), InfoNCELoss(0.05), PairCollator(encoder.tokenizer, encoder.backbone)(items()))
    loss.backward()
    expected = gradients(encoder)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ((ranks[0]["loss"] + ranks[1]["loss"]) / 2).item() == pytest.approx(loss.item(), rel=1e-12)
    for rank in ranks:  # DDP has averaged the gradients: both processes hold the whole batch's
        assert_same_gradients(rank["grads"], expected)


def test_training_with_gradient_caching(tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    config = TrainConfig(backbone="tiny", sampler="hybrid", steps=2, batch_size=8, mini_batch_size=3,
                         learning_rate=1e-3, eval_every=2, checkpoint_every=0, validation_batches=1,
                         device="cpu", freeze_embeddings=True, run="cached")
    result = train(config, groups=split(synthetic_groups()), progress=False)
    assert result.metrics["steps"] == 2 and math.isfinite(result.metrics["final_train_loss"])
