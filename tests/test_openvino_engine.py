"""lib.openvino_engine: OpenVINO encodes as torch does (same model, same pooling), leaves the model
as it found it, keeps its own cache entries, and a wrong engine is a clear error before loading."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import lib.openvino_engine as engine_module
from lib.backbones import get_backbone, load_model
from lib.encode import cache_file, encode
from lib.evaluate import run_evaluation
from lib.openvino_engine import check_engine

TEXTS = ["Wer hat die Relativitätstheorie entwickelt?", "short", "a much longer passage about rivers " * 8,
         "¿Dónde nace el Danubio?"]


def test_a_wrong_engine_is_named_with_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="engine 'onnx': expected one of"):
        check_engine("onnx", "cpu")
    with pytest.raises(ValueError, match="runs on CPU, not cuda:0: use engine=torch"):
        check_engine("openvino", "cuda:0")
    monkeypatch.setattr(engine_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install openvino"):
        check_engine("openvino", "cpu")


def test_engine_is_lareqas_and_checked_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="engine='openvino' applies to the LAReQA datasets"):
        run_evaluation("tiny", dataset="tatoeba", engine="openvino", run="x")
    with pytest.raises(ValueError, match="engine 'onnx'"):
        run_evaluation("tiny", dataset="xquad-r", engine="onnx", run="x")


def test_each_engine_has_its_own_cache_entry():
    backbone = get_backbone("tiny")
    torch_path = cache_file(backbone, TEXTS, "query", "fp32")
    assert torch_path == cache_file(backbone, TEXTS, "query", "fp32", "torch")
    assert cache_file(backbone, TEXTS, "query", "fp32", "openvino") != torch_path


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
@pytest.mark.parametrize("precision, floor", [("fp32", 0.9999), ("bf16", 0.99)])
def test_openvino_embeddings_match_torch(precision, floor):
    model = load_model("tiny", device="cpu")
    original = model[0].model
    reference = encode(model, TEXTS, "passage", cache=False, precision=precision, show_progress_bar=False)
    got = encode(model, TEXTS, "passage", cache=False, precision=precision, show_progress_bar=False,
                 engine="openvino")
    assert got.shape == reference.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * reference).sum(axis=1).min() > floor
    assert model[0].model is original          # the torch model is back after encoding
