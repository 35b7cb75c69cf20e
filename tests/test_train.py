"""The contrastive loss (against hand-computed values and sentence-transformers' MNRL) and the
trainer on the tiny backbone: outputs, saved models, early stopping, and a killed run that
resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from lib.data import ParallelGroup
from lib.io import read_json
from lib.losses import InfoNCELoss
from lib.checkpoint import checkpoints
from lib.train import SMOKE_PROFILE, TrainConfig, TrainError, main, notebook_parameters, train
from lib.hardware import resolve_precision


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# the loss


def test_loss_matches_hand_computed_value():
    # tau = 0.5 (scale 2); cosines: q1.p1 = 1, q1.p2 = 0.6, q2.p1 = 0, q2.p2 = 0.8
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = InfoNCELoss(temperature=0.5)(query, positive)
    row1 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
    row2 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))
    assert loss.item() == pytest.approx((row1 + row2) / 2, abs=1e-6)

    # a hard negative (0, 1) for pair 1 only: a candidate of both queries (cos 0 and 1)
    negative = torch.tensor([[0.0, 3.0], [9.0, 9.0]])  # not normalised; row 2 is no negative
    loss = InfoNCELoss(temperature=0.5)(query, positive, negative, torch.tensor([True, False]))
    row1 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2) + math.exp(0.0)))
    row2 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6) + math.exp(2.0)))
    assert loss.item() == pytest.approx((row1 + row2) / 2, abs=1e-6)

    # symmetric: positive 1 picks among queries (cos 1, 0), positive 2 among (0.6, 0.8)
    loss = InfoNCELoss(temperature=0.5, symmetric=True)(query, positive)
    forward = (-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.2)))
               - math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(1.6)))) / 2
    backward = (-math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
                - math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))) / 2
    assert loss.item() == pytest.approx((forward + backward) / 2, abs=1e-6)


def test_loss_equals_sentence_transformers_mnrl():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    generator = torch.Generator().manual_seed(0)
    query, positive, negative = (torch.randn(6, 16, generator=generator) for _ in range(3))
    ours = InfoNCELoss(temperature=0.05)
    theirs = MultipleNegativesRankingLoss(model=None, scale=20.0)
    assert ours(query, positive).item() == pytest.approx(
        theirs.compute_loss_from_embeddings([query, positive], None).item(), rel=1e-5)
    assert ours(query, positive, negative).item() == pytest.approx(
        theirs.compute_loss_from_embeddings([query, positive, negative], None).item(), rel=1e-5)
    symmetric = MultipleNegativesRankingLoss(model=None, scale=20.0, directions=("query_to_doc", "doc_to_query"),
                                             partition_mode="per_direction")
    assert InfoNCELoss(0.05, symmetric=True)(query, positive).item() == pytest.approx(
        symmetric.compute_loss_from_embeddings([query, positive], None).item(), rel=1e-5)


def test_duplicate_passages_are_not_negatives():
    generator = torch.Generator().manual_seed(1)
    query, positive, negative = (torch.randn(4, 8, generator=generator) for _ in range(3))
    positive[2] = positive[0]          # pairs 0 and 2 share their answer text
    negative[3] = positive[0]          # and pair 3's hard negative is that text too
    keys = torch.tensor([10, 11, 10, 12, 20, 21, 22, 10])
    loss_fn = InfoNCELoss(0.05)
    with_mask = loss_fn(query, positive, negative, candidate_keys=keys)
    # by hand: query 0 loses candidates 2 and 7, query 2 loses candidates 0 and 7
    logits = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(
        torch.cat([positive, negative]), dim=-1).T * 20
    logits[0, [2, 7]] = float("-inf")
    logits[2, [0, 7]] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert with_mask.item() == pytest.approx(expected.item(), rel=1e-6)
    assert with_mask.item() < loss_fn(query, positive, negative).item()


def test_loss_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="positive embeddings"):
        InfoNCELoss()(torch.randn(3, 4), torch.randn(2, 4))


def test_loss_gradient_flows_to_all_inputs():
    query, positive, negative = (torch.randn(3, 5, requires_grad=True) for _ in range(3))
    InfoNCELoss(0.05, symmetric=True)(query, positive, negative).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (query, positive, negative))


def _global_batch():
    generator = torch.Generator().manual_seed(3)
    query, positive, negative = (torch.randn(6, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    positive[4] = positive[1]  # a duplicate passage on the other process
    mask = torch.tensor([True, False, True, True, True, False])
    keys = torch.tensor([1, 2, 3, 4, 2, 6, 11, -1, 13, 14, 15, -1])
    return query, positive, negative, mask, keys


def _gathered_loss_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One process of a gloo group: its half of the global batch, the gathered loss, its gradients."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    query, positive, negative, mask, keys = _global_batch()
    rows = slice(rank * 3, rank * 3 + 3)
    local = [t[rows].clone().requires_grad_(True) for t in (query, positive, negative)]
    local_keys = torch.cat([keys[:6][rows], keys[6:][rows]])
    loss = InfoNCELoss(0.05, symmetric=True, gather_across_devices=True)(*local, mask[rows], local_keys)
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": [t.grad for t in local]}, f"{out_dir}/rank{rank}.pt")
    # both ranks done with every collective before either tears gloo down: without it, a rank that
    # exits while its peer's gloo threads still hold work aborted ~1 run in 6 ("terminate called
    # without an active exception", SIGABRT)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_loss_gathered_across_processes_equals_one_process(tmp_path):
    """Two gloo processes with three pairs each = one process with six: the mean of their losses and
    their gradients (summed by all_gather's backward, averaged over processes as DDP does)."""
    torch.multiprocessing.spawn(_gathered_loss_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    query, positive, negative, mask, keys = _global_batch()
    full = [t.clone().requires_grad_(True) for t in (query, positive, negative)]
    loss = InfoNCELoss(0.05, symmetric=True)(*full, mask, keys)
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ((ranks[0]["loss"] + ranks[1]["loss"]) / 2).item() == pytest.approx(loss.item(), rel=1e-12)
    for which in range(3):
        gathered = torch.cat([ranks[0]["grads"][which], ranks[1]["grads"][which]]) / 2
        torch.testing.assert_close(gathered, full[which].grad, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# the trainer (tiny backbone, synthetic parallel groups)

WORDS = ("river city music water history king science garden winter train bridge story paper "
         "market island mountain school light forest ocean battle church engine harbour").split()


def synthetic_groups(n_ids: int = 40, languages=("en", "de", "fr"), seed: int = 0) -> list[ParallelGroup]:
    rng = random.Random(seed)
    groups = []
    for i in range(n_ids):
        topic = " ".join(rng.sample(WORDS, 3))
        langs = languages if i % 4 else languages[:2]
        groups.append(ParallelGroup(
            qid=f"q{i}", source="synthetic",
            queries={lang: f"{lang} what about {topic} {i}?" for lang in langs},
            positives={lang: f"{lang} the {topic} answer number {i}." for lang in langs},
            negatives={lang: [f"{lang} unrelated {rng.choice(WORDS)} sentence {i}."] for lang in langs[:2]}))
    return groups


def small_config(**overrides) -> TrainConfig:
    values = dict(backbone="tiny", sampler="hybrid", steps=6, batch_size=4, learning_rate=1e-3,
                  warmup_ratio=0.2, eval_every=3, patience=0, checkpoint_every=2, keep_checkpoints=2,
                  validation_batches=2, device="cpu", freeze_embeddings=False, run="tiny-run")
    values.update(overrides)
    return TrainConfig(**values)


def split(groups):
    return groups[:32], groups[32:]


class Killed(Exception):
    pass


def model_weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted 6-step run, shared by the tests that only read its outputs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HBT_OUTPUTS", str(tmp_path_factory.mktemp("outputs")))
        return train(small_config(), groups=split(synthetic_groups()), progress=False)


def test_run_writes_config_log_metrics_and_checkpoints(trained):
    config = read_json(trained.run_dir / "config.json")
    assert config["backbone"] == "tiny" and config["precision"] == resolve_precision("auto", "cpu") and config["freeze_embeddings"] is False
    assert (trained.run_dir / "versions.json").is_file()
    log = pd.read_csv(trained.run_dir / "train_log.csv")
    assert list(log.columns) == ["step", "epoch", "loss", "loss_contrastive", "loss_distill", "lr", "val_loss",
                                 "pairs_per_second", "elapsed_s"]
    assert log.loss.tolist() == log.loss_contrastive.tolist() and log.loss_distill.isna().all()
    assert log.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert log.val_loss.notna().tolist() == [False, False, True, False, False, True]
    assert log.lr.iloc[0] == pytest.approx(0.0) and log.lr.iloc[1] == pytest.approx(1e-3)  # 1 warm-up step
    metrics = read_json(trained.run_dir / "metrics.json")
    assert metrics["steps"] == 6 and metrics["pairs"] == 24 and not metrics["stopped_early"]
    assert metrics["best_val_loss"] == pytest.approx(log.val_loss.min())
    assert metrics["peak_memory_mb"] > 0 and metrics["pairs_per_second"] > 0
    # finished: the last checkpoint keeps its small state only (keep_optimizer_state=false)
    assert [p.name for p in checkpoints(trained.run_dir)] == ["step-000006"]
    assert sorted(p.name for p in checkpoints(trained.run_dir)[0].iterdir()) == ["resume.json", "resume.safetensors",
                                                                                 "state.json"]


def test_saved_model_loads_with_sentence_transformers_transformers_and_lib(trained):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from lib.backbones import get_backbone, load_model

    folder = trained.model_dir
    plain = SentenceTransformer(str(folder), device="cpu")
    assert plain.prompts["query"] == "query: " and plain.prompts["passage"] == "passage: "
    assert AutoModel.from_pretrained(str(folder)).config.hidden_size == 32
    backbone = get_backbone(str(folder))
    assert backbone.name == "tiny-hybrid" and backbone.source == "path" and backbone.pooling == "mean"
    assert (backbone.max_query_length, backbone.max_passage_length) == (32, 64)
    model = load_model(str(folder), device="cpu")
    text = ["de the river answer"]
    np.testing.assert_allclose(model.encode(text, prompt_name="query"), plain.encode(text, prompt_name="query"),
                               atol=1e-6)
    # trained weights differ from the random start
    start = load_model("tiny", device="cpu")
    assert not torch.equal(start[0].model.encoder.layer[0].output.dense.weight,
                           model[0].model.encoder.layer[0].output.dense.weight)
    assert (trained.best_model_dir / "backbone.json").is_file()


def test_killed_run_resumes_to_the_same_model(trained, tmp_path):
    """Killed after step 3 (last checkpoint: step 2, so step 3 is redone), then resumed to step 6.
    Dropout is on (tiny: p = 0.1): equality needs the restored RNG state."""
    from lib.backbones import load_model

    assert load_model("tiny", device="cpu")[0].model.config.hidden_dropout_prob > 0

    def kill_at_3(step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(small_config(), groups=split(synthetic_groups()), progress=False, on_step_end=kill_at_3)
    resumed = train(small_config(), groups=split(synthetic_groups()), progress=False)
    assert resumed.metrics["resumed_from_step"] == 2
    expected, got = model_weights(trained.model_dir), model_weights(resumed.model_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    for name, tensor in model_weights(trained.best_model_dir).items():
        assert torch.equal(tensor, model_weights(resumed.best_model_dir)[name]), name
    pd.testing.assert_frame_equal(trained.log.drop(columns=["pairs_per_second", "elapsed_s"]),
                                  resumed.log.drop(columns=["pairs_per_second", "elapsed_s"]))


def test_early_stopping_on_a_flat_validation_loss():
    # learning rate 0: the validation loss never improves after the first evaluation
    result = train(small_config(learning_rate=0.0, steps=10, eval_every=1, patience=2, checkpoint_every=0,
                                freeze_embeddings=True, hard_negatives=False, run="flat"),
                   groups=split(synthetic_groups()), progress=False)
    assert result.metrics["stopped_early"] and result.metrics["steps"] == 3 and result.metrics["best_step"] == 1
    assert result.metrics["frozen_parameters"] > result.metrics["trainable_parameters"]
    assert (result.model_dir / "backbone.json").is_file()



def test_validation_fits_a_batch_larger_than_the_held_out_pools():
    """Batch 8 trains (the smallest training pool, 'fr', has 24 ids) but the 8 held-out ids have only
    6 in French: validation_batch_size 0 lowers the validation batch to 6 and records it."""
    config = small_config(batch_size=8, steps=1, eval_every=1, checkpoint_every=0, freeze_embeddings=True,
                          run="validation-fits")
    result = train(config, groups=split(synthetic_groups()), progress=False)
    assert read_json(result.run_dir / "config.json")["validation_batch_size"] == 6
    # one epoch of the validation sampler: 8 held-out ids // 6 = 1 batch
    assert result.metrics["validation_batches"] == 1 and math.isfinite(result.metrics["best_val_loss"])
    with pytest.raises(TrainError, match="validation batches.*batch_size 8 is larger than the mono pool.*"
                                         "validation_batch_size=0"):
        train(dataclasses.replace(config, validation_batch_size=8, run="validation-too-large"),
              groups=split(synthetic_groups()), progress=False)


def test_resume_refuses_another_configuration():
    groups = split(synthetic_groups())
    train(small_config(steps=2, checkpoint_every=1, eval_every=0, freeze_embeddings=True, run="other"),
          groups=groups, progress=False)
    with pytest.raises(TrainError, match="learning_rate"):
        train(small_config(steps=2, checkpoint_every=1, eval_every=0, freeze_embeddings=True, run="other",
                           learning_rate=5e-4), groups=groups, progress=False)


def test_config_from_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("backbone: tiny\nsteps: 7\ntrain_sources: [mlqa-r, xquad-r]\n", encoding="utf-8")
    config = TrainConfig.from_file(path, ["sampler=hybrid", "alpha=0.3", "symmetric=true", "run="])
    assert (config.backbone, config.steps, config.sampler, config.alpha, config.symmetric) == (
        "tiny", 7, "hybrid", 0.3, True)
    assert config.source_list() == ["mlqa-r", "xquad-r"]
    resolved = config.resolved()
    assert resolved.run == "train-tiny-hybrid-a0.3-mlqa-r+xquad-r-s0"   # lib.naming.train_run_name
    with pytest.raises(TrainError, match="unknown TrainConfig parameters"):
        TrainConfig.from_file(None, ["stepz=3"])
    with pytest.raises(TrainError, match="sampler"):
        TrainConfig(sampler="nope").resolved()


# --------------------------------------------------------------------------------------------
# one source of truth for the parameters: TrainConfig's field metadata

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_train.ipynb"


def _notebook_parameters_cell() -> str:
    cells = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "03_train needs exactly one cell tagged 'parameters'"
    return "".join(cells[0]["source"])


def _notebook_parameters(monkeypatch, profile: str) -> dict:
    """The namespace after the parameters cell and the cell after it (``notebook_config``)."""
    from lib.parameters import notebook_config

    monkeypatch.setenv("HBT_PROFILE", profile)
    namespace: dict = {}
    exec(_notebook_parameters_cell(), namespace)
    notebook_config(TrainConfig, namespace)
    return {k: v for k, v in namespace.items() if k != "__builtins__"}


def test_every_config_field_has_help():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no metadata help"


def test_notebook_parameters_cell_is_generated_from_train_config():
    assert _notebook_parameters_cell() == notebook_parameters(), (
        "notebooks/03_train.ipynb's parameters cell is out of date: run python scripts/sync_parameters.py")


def test_notebook_parameters_are_train_config_fields_and_defaults(monkeypatch):
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    full = _notebook_parameters(monkeypatch, "full")
    assert full == defaults and list(full) == list(defaults)
    smoke = _notebook_parameters(monkeypatch, "smoke")
    assert smoke == defaults | SMOKE_PROFILE
    assert TrainConfig.from_namespace(smoke) == TrainConfig(**defaults | SMOKE_PROFILE)


def test_help_lists_every_field_with_default_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"{f.name}={f.default!r}" in text and f.metadata["help"] in text


# --------------------------------------------------------------------------------------------
# experiment tracking (lib.tracking)


def test_tensorboard_event_file_holds_the_training_log():
    """Killed after step 3 and resumed from step 2: the event file has each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    groups = split(synthetic_groups())

    def kill_at_3(step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(small_config(report_to="tensorboard", run="tb"), groups=groups, progress=False, on_step_end=kill_at_3)
    result = train(small_config(report_to="tensorboard", run="tb"), groups=groups, progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard")).Reload()
    log = result.log
    for tag, column in [("train/loss", "loss"), ("train/learning_rate", "lr"),
                        ("train/pairs_per_second", "pairs_per_second")]:
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == log.step.tolist(), tag
        np.testing.assert_allclose([e.value for e in scalars], log[column], rtol=1e-6, err_msg=tag)
    validated = log.dropna(subset=["val_loss"])
    assert [e.step for e in events.Scalars("eval/val_loss")] == validated.step.tolist() == [3, 6]
    np.testing.assert_allclose([e.value for e in events.Scalars("eval/val_loss")], validated.val_loss, rtol=1e-6)


def test_report_to_is_checked():
    with pytest.raises(TrainError, match="report_to 'neptune'"):
        TrainConfig(report_to="neptune").resolved()
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install wandb"):
            TrainConfig(backbone="tiny", device="cpu", report_to="wandb").resolved()
