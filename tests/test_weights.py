"""WiSE-FT and uniform soups: exact end points, means, untouched tensors, errors, loadable folders."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from lib.weights import (WeightsError, check_same_architecture, combine_states, interpolate_states, soup,
                         uniform_soup_states, wise_ft)

FROZEN = "0.model.embeddings.word_embeddings.weight"


@pytest.fixture(scope="module")
def fine_tuned(tiny_model, tmp_path_factory):
    """The tiny model with every parameter but the (frozen) word embeddings moved, saved and reloaded."""
    from lib.backbones import load_model
    from lib.checkpoint import save_model

    model = copy.deepcopy(tiny_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != FROZEN:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    settings = {**tiny_model.backbone.as_dict(), "name": "tiny-ft", "source": "path"}
    path = save_model(model, tmp_path_factory.mktemp("ft") / "model", settings)
    return load_model(str(path), device="cpu")


def states(zero_shot, fine_tuned):
    return zero_shot.state_dict(), fine_tuned.state_dict()


def test_lambda_end_points_are_exact_and_half_is_the_mean(tiny_model, fine_tuned):
    zs, ft = states(tiny_model, fine_tuned)
    assert not torch.equal(zs["0.model.encoder.layer.0.attention.self.query.weight"],
                           ft["0.model.encoder.layer.0.attention.self.query.weight"])
    at0, at1, half = (interpolate_states(zs, ft, lam) for lam in (0.0, 1.0, 0.5))
    assert all(torch.equal(at0[k], zs[k]) for k in zs)
    assert all(torch.equal(at1[k], ft[k]) for k in ft)
    for key in zs:
        assert torch.allclose(half[key], (zs[key] + ft[key]) / 2, atol=1e-7), key
    assert torch.equal(half[FROZEN], zs[FROZEN])                # untouched tensor stays bit-identical
    quarter = interpolate_states(zs, ft, 0.25)
    key = "0.model.encoder.layer.1.output.dense.bias"
    assert torch.allclose(quarter[key], 0.75 * zs[key] + 0.25 * ft[key], atol=1e-7)


def test_soup_of_identical_models_is_the_model(tiny_model):
    zs = tiny_model.state_dict()
    soup_state = uniform_soup_states([zs, copy.deepcopy(zs), copy.deepcopy(zs)])
    assert all(torch.equal(soup_state[k], zs[k]) for k in zs)


def test_integer_buffers_are_copied_from_the_first_model_not_averaged():
    first = {"weight": torch.tensor([1.0, 3.0]), "steps": torch.tensor([4], dtype=torch.int64)}
    second = {"weight": torch.tensor([3.0, 5.0]), "steps": torch.tensor([7], dtype=torch.int64)}
    mean = uniform_soup_states([first, second])
    assert torch.equal(mean["weight"], torch.tensor([2.0, 4.0]))
    assert torch.equal(mean["steps"], first["steps"]) and mean["steps"].dtype == torch.int64


def test_different_architectures_raise_naming_the_mismatch():
    a = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    with pytest.raises(WeightsError, match="missing \\['b'\\]"):
        check_same_architecture([a, {"w": torch.zeros(2, 3)}], ["base", "other"])
    with pytest.raises(WeightsError, match="other: w is \\(3, 2\\)"):
        check_same_architecture([a, {"w": torch.zeros(3, 2), "b": torch.zeros(3)}], ["base", "other"])
    with pytest.raises(WeightsError, match="sum to 1"):
        combine_states([a, a], [0.5, 0.6])
    with pytest.raises(WeightsError, match="outside \\[0, 1\\]"):
        interpolate_states(a, a, 1.5)


def test_models_with_other_encoding_settings_are_refused(tiny_model, fine_tuned, tmp_path):
    other = copy.copy(fine_tuned)
    other.backbone = dataclasses.replace(fine_tuned.backbone, query_prefix="question: ")
    with pytest.raises(WeightsError, match="query_prefix"):
        soup([tiny_model, other], tmp_path / "soup")


def test_wise_ft_folder_loads_encodes_and_records_its_inputs(tiny_model, fine_tuned, tmp_path):
    from sentence_transformers import SentenceTransformer

    from lib.backbones import load_model
    from lib.encode import encode

    before = {k: v.clone() for k, v in fine_tuned.state_dict().items()}
    path = wise_ft(tiny_model, fine_tuned, 0.5, tmp_path / "wise")
    assert all(torch.equal(before[k], v) for k, v in fine_tuned.state_dict().items())   # inputs untouched
    plain = SentenceTransformer(str(path), device="cpu")
    embeddings = plain.encode(["query: Wer schrieb Faust?", "query: who wrote Faust?"])
    assert embeddings.shape == (2, 32) and np.isfinite(embeddings).all()
    model = load_model(str(path), device="cpu")
    assert model.backbone.name == "tiny-ft-wise0.5"
    merge = model.backbone.extra["merge"]
    assert merge["method"] == "wise-ft" and merge["lambda"] == 0.5 and merge["coefficients"] == [0.5, 0.5]
    assert merge["backbones"] == ["tiny", "tiny-ft"]
    expected = interpolate_states(*states(tiny_model, fine_tuned), 0.5)
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    vectors = encode(model, ["who wrote Faust?"], "query", cache=False, show_progress_bar=False)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1, abs=1e-5)


def test_soup_folder_is_the_model_and_takes_folders_by_name(tiny_model, fine_tuned, tmp_path):
    from lib.backbones import load_model

    path = soup([fine_tuned.backbone.path, fine_tuned], tmp_path / "soup", name="tiny-soup")
    model = load_model(str(path), device="cpu")
    assert model.backbone.extra["merge"]["method"] == "uniform-soup"
    assert all(torch.equal(v, fine_tuned.state_dict()[k]) for k, v in model.state_dict().items())
