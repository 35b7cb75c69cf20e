"""Multilingual distillation: the loss against a hand computation and sentence-transformers'
MSELoss, its gradient (student only), the teacher targets (english, mean, centred) and their cache
(keyed by the teacher and the precision), training with it (terms logged, gradient caching) and a
killed distillation run resuming to the same weights, its teacher cache deleted in between."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from lib.data import ParallelGroup
from lib.distill import (DistillError, TeacherTargets, build_targets, group_texts, teacher_cache_file,
                         teacher_embeddings, teacher_identity)
from lib.losses import DistillationMSELoss, InfoNCELoss, TrainingObjective
from lib.train import TrainConfig, TrainError, train
from tests.test_train import Killed, model_weights, small_config, split, synthetic_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# the loss


def test_distill_loss_matches_hand_computation():
    # student rows normalised: (3, 4) -> (.6, .8); (2, 0) -> (1, 0)
    query, positive = torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0, 0.0]])
    query_target, positive_target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss = DistillationMSELoss()(query, positive, query_target, positive_target)
    by_hand = ((0.6 - 1) ** 2 + 0.8 ** 2 + (1 - 0) ** 2 + (0 - 1) ** 2) / 2    # (0.8 + 2) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6) == pytest.approx(1.4)
    # for unit vectors, each row's term is 2 - 2 cos
    assert loss.item() == pytest.approx(((2 - 2 * 0.6) + (2 - 2 * 0.0)) / 2, abs=1e-6)


def test_distill_loss_is_dimension_times_sentence_transformers_mse(tiny_model):
    from sentence_transformers.sentence_transformer.losses import MSELoss

    generator = torch.Generator().manual_seed(0)
    query, positive, query_target, positive_target = (torch.randn(4, 6, generator=generator) for _ in range(4))
    ours = DistillationMSELoss()(query, positive, query_target, positive_target)
    theirs = MSELoss(tiny_model).compute_loss_from_embeddings(
        [F.normalize(query, dim=-1), F.normalize(positive, dim=-1)], [query_target, positive_target])
    assert ours.item() == pytest.approx(6 * theirs.item(), rel=1e-6)


def test_objective_sums_the_terms_and_keeps_each():
    generator = torch.Generator().manual_seed(1)
    query, positive, negative, query_target, positive_target = (torch.randn(3, 5, generator=generator)
                                                                for _ in range(5))
    mask = torch.tensor([True, False, True])
    info_nce = InfoNCELoss(0.05)(query, positive, negative, mask).item()
    mse = DistillationMSELoss()(query, positive, query_target, positive_target).item()
    both = TrainingObjective("contrastive+distill", InfoNCELoss(0.05), distill_weight=2.5)
    loss = both(query, positive, negative, mask, None, query_target, positive_target)
    assert loss.item() == pytest.approx(info_nce + 2.5 * mse, rel=1e-6)
    assert both.terms["contrastive"].item() == pytest.approx(info_nce) and both.terms["distill"].item() == pytest.approx(mse)
    alone = TrainingObjective("distill")
    assert alone(query, positive, negative, mask, None, query_target, positive_target).item() == pytest.approx(mse)
    assert set(alone.terms) == {"distill"}
    plain = TrainingObjective("contrastive", InfoNCELoss(0.05))
    assert plain(query, positive, negative, mask).item() == info_nce        # exactly InfoNCE
    with pytest.raises(ValueError, match="needs teacher targets"):
        alone(query, positive)
    with pytest.raises(ValueError, match="objective 'mse'"):
        TrainingObjective("mse")


def test_gradient_reaches_the_student_only():
    query = torch.randn(2, 4, requires_grad=True)
    positive = torch.randn(2, 4, requires_grad=True)
    query_target = torch.randn(2, 4, requires_grad=True)     # even a target that asks for a gradient
    positive_target = torch.randn(2, 4, requires_grad=True)
    TrainingObjective("contrastive+distill")(query, positive, None, None, None, query_target, positive_target).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0 and positive.grad.abs().sum() > 0
    assert query_target.grad is None and positive_target.grad is None


# --------------------------------------------------------------------------------------------
# the targets and their cache


def _groups() -> list[ParallelGroup]:
    return [ParallelGroup("a", "toy", {"en": "qa-en", "de": "qa-de"}, {"en": "pa-en", "de": "pa-de"}),
            ParallelGroup("b", "toy", {"en": "qb-en", "de": "qb-de"}, {"en": "pb-en", "de": "pb-de"}),
            ParallelGroup("c", "toy", {"de": "qc-de", "fr": "qc-fr"}, {"de": "pc-de", "fr": "pc-fr"})]


def _embeddings(texts):
    """Unit vectors: every English text (1, 0), every German one at 90 degrees (0, 1), French (-1, 0);
    the query and passage sides the same."""
    vector = {"en": [1.0, 0.0], "de": [0.0, 1.0], "fr": [-1.0, 0.0]}
    return {side: np.array([vector[t.rsplit("-", 1)[1]] for t in rows], dtype=np.float32)
            for side, rows in texts.items()}


def test_targets_english_mean_and_centred_by_hand():
    groups = _groups()
    texts = group_texts(groups)
    assert texts["query"] == sorted(["qa-en", "qa-de", "qb-en", "qb-de", "qc-de", "qc-fr"])
    embeddings = _embeddings(texts)
    english = build_targets(groups, texts, embeddings, "english")
    assert english.query[0].tolist() == [1.0, 0.0] and english.passage[1].tolist() == [1.0, 0.0]
    # group c has no English: the mean of de (0, 1) and fr (-1, 0), normalised
    np.testing.assert_allclose(english.query[2].numpy(), [-math.sqrt(0.5), math.sqrt(0.5)], atol=1e-6)
    assert english.without_source == 1
    mean = build_targets(groups, texts, embeddings, "mean")
    np.testing.assert_allclose(mean.query[0].numpy(), [math.sqrt(0.5), math.sqrt(0.5)], atol=1e-6)
    # centred on the pool of groups a and b: mu_en = (1, 0), mu_de = (0, 1): every centred vector is 0
    # except where a group differs; make group b's English (0.6, 0.8) to get a direction
    embeddings["query"][texts["query"].index("qb-en")] = [0.6, 0.8]
    centred = build_targets(groups[:2], texts, embeddings, "english", centering=True, pool=groups[:2])
    mu_en = np.array([(1 + 0.6) / 2, (0 + 0.8) / 2])
    expected = (np.array([1.0, 0.0]) - mu_en) / np.linalg.norm(np.array([1.0, 0.0]) - mu_en)
    np.testing.assert_allclose(centred.query[0].numpy(), expected, atol=1e-6)
    with pytest.raises(DistillError, match="no mean to centre"):      # French is in no pool group
        build_targets(groups, texts, embeddings, "english", centering=True, pool=groups[:2])


def test_centred_targets_equal_lib_debias_center():
    from lib.debias import Debias, by_language, transform

    rng = np.random.default_rng(0)
    groups = synthetic_groups(12)
    texts = group_texts(groups)
    embeddings = {side: F.normalize(torch.from_numpy(rng.normal(size=(len(rows), 8))), dim=-1).numpy()
                  for side, rows in texts.items()}
    targets = build_targets(groups, texts, embeddings, "english", centering=True)
    lookup = dict(zip(texts["query"], embeddings["query"]))
    rows = [lookup[g.queries[lang]] for g in groups for lang in g.languages]
    langs = [lang for g in groups for lang in g.languages]
    english = [i for i, lang in enumerate(langs) if lang == "en"]
    debiased = transform(np.array(rows), langs, Debias("center", "pool"), by_language(np.array(rows), langs))
    np.testing.assert_allclose(targets.query.numpy(), debiased[english], atol=1e-6)


def test_targets_give_each_batch_row_its_group():
    targets = TeacherTargets({("s", "a"): 0, ("s", "b"): 1}, torch.eye(2), 2 * torch.eye(2))
    query, positive = targets.rows([{"source": "s", "qid": "b"}, {"source": "s", "qid": "a"}])
    assert query.tolist() == [[0.0, 1.0], [1.0, 0.0]] and positive.tolist() == [[0.0, 2.0], [2.0, 0.0]]
    assert not query.requires_grad
    with pytest.raises(DistillError, match="no teacher target"):
        targets.rows([{"source": "s", "qid": "z"}])


@pytest.mark.filterwarnings("ignore:precision 'bf16' on a CPU")
def test_cache_is_keyed_by_teacher_and_precision(tiny_model, tmp_path):
    from lib.backbones import get_backbone
    from lib.checkpoint import save_model

    texts = group_texts(_groups())
    tiny = get_backbone("tiny")
    first = teacher_embeddings(tiny_model, tiny, texts, "fp32")
    path = teacher_cache_file(tiny, "fp32", texts)
    assert path.is_file() and path.suffix == ".safetensors"
    assert first["query"].shape == (len(texts["query"]), 32)

    def no_teacher():
        raise AssertionError("the teacher ran although its embeddings are cached")

    again = teacher_embeddings(no_teacher, tiny, texts, "fp32")            # same key: read, no teacher
    np.testing.assert_array_equal(again["passage"], first["passage"])
    calls = []

    def counting():
        calls.append(1)
        return tiny_model

    assert teacher_cache_file(tiny, "bf16", texts) != path                 # another precision: another key
    teacher_embeddings(counting, tiny, texts, "bf16")
    assert calls == [1]
    # another teacher: a model folder is keyed by the hash of its weights, not its path
    folder = tmp_path / "teacher"
    save_model(tiny_model, folder, {**tiny.as_dict(), "name": "teacher", "source": "path", "path": None})
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert teacher_identity(get_backbone(str(folder)))["weights"] == teacher_identity(get_backbone(str(copy)))["weights"]
    assert teacher_cache_file(get_backbone(str(folder)), "fp32", texts) != path
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")                # other weights: another key
    assert teacher_identity(get_backbone(str(folder)))["weights"] != teacher_identity(get_backbone(str(copy)))["weights"]


def test_teacher_leaves_the_random_state_alone(tiny_model):
    from lib.backbones import get_backbone

    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    teacher_embeddings(tiny_model, get_backbone("tiny"), group_texts(_groups()), "fp32")
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------------------------
# configuration


def test_config_checks_the_distillation_settings():
    with pytest.raises(TrainError, match="objective 'mse'"):
        TrainConfig(objective="mse").check()
    with pytest.raises(TrainError, match="distill_weight has no effect with objective 'contrastive'"):
        TrainConfig(distill_weight=2.0).check()
    with pytest.raises(TrainError, match="distill_weight has no effect with objective 'distill'"):
        TrainConfig(objective="distill", distill_weight=2.0).check()
    with pytest.raises(TrainError, match="distill_target 'german'"):
        TrainConfig(objective="distill", distill_target="german").check()
    with pytest.raises(TrainError, match="distill_weight"):
        TrainConfig(objective="contrastive+distill", distill_weight=0).check()
    with pytest.raises(TrainError, match="distill_teacher"):
        TrainConfig(backbone="tiny", objective="distill", distill_teacher="no-such-model").resolved()
    config = TrainConfig(backbone="tiny", objective="contrastive+distill", distill_target="mean", device="cpu")
    assert config.resolved().run == "train-tiny-hybrid-a0.5-distill-mean-mlqa-r-s0"
    assert TrainConfig(backbone="tiny", objective="distill", device="cpu").resolved().run == \
        "train-tiny-hybrid-a0.5-distillonly-mlqa-r-s0"


# --------------------------------------------------------------------------------------------
# training


def distill_config(**overrides) -> TrainConfig:
    return small_config(**{"objective": "contrastive+distill", "distill_weight": 2.0, "run": "tiny-distill",
                           **overrides})


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """One uninterrupted 6-step contrastive+distill run (gradient caching on), shared by the tests."""
    with pytest.MonkeyPatch.context() as patch:
        outputs = tmp_path_factory.mktemp("outputs")
        patch.setenv("HBT_OUTPUTS", str(outputs))
        return train(distill_config(mini_batch_size=2), groups=split(synthetic_groups()), progress=False)


def test_training_logs_both_terms(distilled):
    log = pd.read_csv(distilled.run_dir / "train_log.csv")
    assert list(log.columns[:5]) == ["step", "epoch", "loss", "loss_contrastive", "loss_distill"]
    assert log.loss_contrastive.notna().all() and log.loss_distill.notna().all()
    assert (log.loss_distill >= 0).all() and (log.loss_distill < 4).all()
    np.testing.assert_allclose(log.loss, log.loss_contrastive + 2.0 * log.loss_distill, rtol=1e-5)
    assert distilled.metrics["objective"] == "contrastive+distill"
    assert distilled.metrics["distill_groups_without_source"] == 0
    assert list((distilled.run_dir.parent / "cache" / "teacher").glob("tiny-*.safetensors"))
    from lib.backbones import get_backbone

    assert get_backbone(str(distilled.model_dir)).name == "tiny-hybrid+distill"
    card = (distilled.model_dir / "README.md").read_text()
    assert "lib.losses.TrainingObjective" in card and '"distill_weight": 2.0' in card


def test_a_checkpoint_older_than_the_objective_fields_resumes_as_contrastive():
    from lib.trainer import TrainError as LoopError, _check_same_config, _field_defaults

    config = TrainConfig()
    current = dataclasses.asdict(config)
    older = {k: v for k, v in current.items() if k != "objective" and not k.startswith("distill_")}
    _check_same_config(older, current, Path("step-000002"), _field_defaults(config))     # no error
    with pytest.raises(LoopError, match="objective: checkpoint 'contrastive', now 'distill'"):
        _check_same_config(older, {**current, "objective": "distill"}, Path("step-000002"), _field_defaults(config))


def test_distillation_alone_trains_and_logs_its_term_only(tmp_path):
    result = train(small_config(objective="distill", steps=2, eval_every=1, run="tiny-distill-alone"),
                   groups=split(synthetic_groups()), progress=False)
    log = result.log
    assert log.loss_contrastive.isna().all() and log.loss_distill.notna().all()
    np.testing.assert_array_equal(log.loss, log.loss_distill)
    assert log.val_loss.notna().all() and (log.val_loss < 4).all()
    assert result.metrics["objective"] == "distill"


def test_gradient_caching_equals_one_forward_with_distillation(tiny_model):
    from lib.dual_encoder import DualEncoder, PairCollator, batch_loss
    from lib.gradcache import cached_backward
    from lib.sampling import PairDataset, build_sampler

    groups = synthetic_groups(16)
    texts = group_texts(groups)
    targets = build_targets(groups, texts, teacher_embeddings(tiny_model, tiny_model.backbone, texts, "fp32"), "mean")
    collator = PairCollator(tiny_model.tokenizer, tiny_model.backbone, True, targets)
    dataset = PairDataset(groups)
    batch = collator([dataset[pair] for pair in next(iter(build_sampler("hybrid", groups, 8, seed=0)))])
    assert batch["query_target"].shape == (8, 32)
    tiny_model.eval()                   # no dropout: the two paths see the same network
    objective = TrainingObjective("contrastive+distill", InfoNCELoss(0.05), 3.0)
    gradients = []
    for cached in (False, True):
        tiny_model.zero_grad()
        loss = (cached_backward(DualEncoder(tiny_model), objective, batch, 3) if cached
                else batch_loss(DualEncoder(tiny_model), objective, batch))
        if not cached:
            loss.backward()
        gradients.append({n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None})
        assert objective.terms["distill"] > 0
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6)
    tiny_model.zero_grad()


def test_killed_distillation_run_resumes_to_the_same_model(distilled, tmp_path, monkeypatch):
    """Killed after step 3, the teacher cache deleted, resumed to step 6: the rebuilt targets and
    the restored RNG give the weights and log of the uninterrupted run, bit for bit."""
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))

    def kill_at_3(step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(distill_config(mini_batch_size=2), groups=split(synthetic_groups()), progress=False,
              on_step_end=kill_at_3)
    shutil.rmtree(tmp_path / "outputs" / "cache" / "teacher")
    resumed = train(distill_config(mini_batch_size=2), groups=split(synthetic_groups()), progress=False)
    assert resumed.metrics["resumed_from_step"] == 2
    expected, got = model_weights(distilled.model_dir), model_weights(resumed.model_dir)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    pd.testing.assert_frame_equal(distilled.log.drop(columns=["pairs_per_second", "elapsed_s"]),
                                  resumed.log.drop(columns=["pairs_per_second", "elapsed_s"]))


def test_a_checkpoint_of_another_objective_is_refused(distilled, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(distilled.run_dir.parent))
    with pytest.raises(TrainError, match="objective: 'contrastive\\+distill' there, 'contrastive' now"):
        train(small_config(run="tiny-distill", steps=8, mini_batch_size=2), groups=split(synthetic_groups()),
              progress=False)


# --------------------------------------------------------------------------------------------
# the grid's distillation systems


def test_distill_grid_reuses_the_default_grid_and_adds_both_systems():
    from lib.grid_plan import cell_table, check_notebook_parameters, expand_cells, load_grid, plan_jobs

    default, grid = load_grid("grid"), load_grid("grid-distill")
    assert not default.distill                              # the default grid's 2-hour budget stays as it is
    assert {j.run for j in plan_jobs(default) if j.kind in ("train", "evaluate", "bias") and j.cell} <= \
        {j.run for j in plan_jobs(grid)}
    assert grid.train == default.train and grid.debias == default.debias        # the same runs, reused
    cells = [c for c in expand_cells(grid) if c.method == "distill"]
    assert sorted((c.system, c.seed) for c in cells) == [(s, seed) for s in ("distill", "hybrid+distill")
                                                          for seed in (0, 1, 2)]
    trains = {j.run: j.parameters for j in plan_jobs(grid) if j.kind == "train"}
    assert trains["train-me5-small-q4-hybrid-a0.5-distill-mlqa-r-s1"] == {
        **default.train, "backbone": "me5-small-q4", "sampler": "hybrid", "alpha": 0.5, "train_sources": "mlqa-r",
        "seed": 1, "objective": "contrastive+distill"}
    assert trains["train-me5-small-q4-hybrid-a0.5-distillonly-mlqa-r-s2"]["objective"] == "distill"
    assert "objective" not in trains["train-me5-small-q4-hybrid-a0.5-mlqa-r-s0"]   # plain runs: as recorded
    # WiSE-FT merges only the sampler's models, never a distilled one
    merges = [c for c in expand_cells(grid) if c.method == "wise-ft"]
    assert [c.merged for c in merges] == [(f"train-me5-small-q4-hybrid-a0.5-mlqa-r-s{s}",) for s in range(5)]
    table = cell_table(grid)
    systems = set(table.system)
    for needed in ("hybrid+distill", "hybrid+distill + center-pool", "distill", "distill + center-pool",
                   "hybrid a=0.5", "hybrid a=0.5 WiSE-FT 0.5 + center-pool", "zero-shot + center-pool"):
        assert needed in systems, needed
    assert set(table[table.base_system == "hybrid+distill"].method) == {"distill"}
    check_notebook_parameters(grid)


def test_smoke_grid_covers_the_distillation_systems():
    from lib.grid_plan import expand_cells, load_grid

    grid = load_grid("grid-smoke")
    assert {c.system for c in expand_cells(grid) if c.method == "distill"} == {"distill", "hybrid+distill"}
    assert {"none", "center-pool"} <= set(grid.debias)


@pytest.mark.parametrize("entry, message", [
    ({"objective": "contrastive"}, "objective must be 'distill' or 'contrastive\\+distill'"),
    ({"objective": "distill", "colour": "blue"}, "each distill entry is a mapping"),
    ({"objective": "distill", "sampler": "mono", "alpha": 0.3}, "alpha is the hybrid sampler's"),
    ({"objective": "distill", "sampler": "random"}, "unknown sampler 'random'"),
    ({"objective": "distill", "seeds": [0.5]}, "seeds must be a non-empty list of integers"),
    ({"objective": "distill", "distill_weight": 2.0}, "distill_weight has no effect with objective 'distill'"),
])
def test_bad_distill_entries_are_refused(tmp_path, entry, message):
    from lib.grid_plan import GridError, load_grid
    from tests.test_grid import write_grid

    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path, distill=[entry]))


def test_two_entries_may_not_name_one_system(tmp_path):
    from lib.grid_plan import GridError, load_grid
    from tests.test_grid import write_grid

    with pytest.raises(GridError, match="the same system twice"):
        load_grid(write_grid(tmp_path, distill=[{"objective": "distill"}, {"objective": "distill", "alpha": 0.5}]))
    grid = load_grid(write_grid(tmp_path, distill=[{"objective": "contrastive+distill", "distill_target": "mean",
                                                   "distill_target_centering": True, "seeds": [4]}]))
    from lib.grid_plan import expand_cells

    (cell,) = [c for c in expand_cells(grid) if c.method == "distill"]
    assert cell.system == "hybrid+distill (mean, centered)" and cell.seed == 4
    assert "-hybrid-a0.5-distill-mean-centered-" in cell.train_run


# --------------------------------------------------------------------------------------------
# several processes


def _distill_rank(rank: int, world: int, port: int, outputs: str) -> None:
    """One torchrun-like process: WORLD_SIZE / RANK in the environment, lib.train joins the group."""
    import os

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HBT_OUTPUTS=outputs)
    torch.set_num_threads(1)
    try:
        train(small_config(objective="contrastive+distill", steps=2, batch_size=4, eval_every=2, checkpoint_every=0,
                           validation_batches=1, run="tiny-distill-ddp"), groups=split(synthetic_groups()),
              progress=False)
        torch.distributed.barrier()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_two_processes_share_the_teacher_cache_and_log_both_terms(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outputs = tmp_path / "outputs"
    torch.multiprocessing.spawn(_distill_rank, args=(2, port, str(outputs)), nprocs=2)
    log = pd.read_csv(outputs / "tiny-distill-ddp" / "train_log.csv")
    assert log.step.tolist() == [1, 2] and log.loss_distill.notna().all() and log.loss_contrastive.notna().all()
    np.testing.assert_allclose(log.loss, log.loss_contrastive + log.loss_distill, rtol=1e-6)
    assert len(list((outputs / "cache" / "teacher").glob("*.safetensors"))) == 1    # written once, by rank 0


def test_distill_grid_declares_its_primary_questions_on_systems_it_has():
    """The report's primary analysis of the distillation systems is fixed in the grid file, and every
    system it names is a system of the grid (what lib.analysis_report looks up in the results)."""
    from lib.grid_plan import cell_table, load_grid

    grid = load_grid("grid-distill")
    systems = set(cell_table(grid).system)
    questions = grid.analysis.questions
    assert [q.a for q in questions] == ["hybrid+distill", "hybrid+distill", "hybrid+distill", "distill"]
    for question in questions:
        names = [question.a, *([question.b] if isinstance(question.b, str) else question.b)]
        assert set(names) <= systems, (question.name, set(names) - systems)
