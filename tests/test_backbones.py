"""Backbone registry, the offline multilingual-e5-small, the tiny model, and hub errors offline."""

from __future__ import annotations

import dataclasses
import re
import types

import numpy as np
import pytest
import sentence_transformers

from lib.backbones import BackboneError, available_backbones, get_backbone, load_model
from lib.encode import cache_file, encode


def test_registry_lists_the_paper_backbones():
    assert {"me5-small-q4", "me5-small", "xlmr-base", "xlmr-large", "labse", "tiny"} <= set(available_backbones())
    labse = get_backbone("labse")
    assert labse.source == "hub" and labse.hub_id == "sentence-transformers/LaBSE" and labse.pooling == "cls"
    assert get_backbone("xlmr-base").extra["sentence_transformers"] is False


def test_hub_backbones_pin_a_commit_that_loading_and_cache_keys_use(monkeypatch):
    hub = [get_backbone(name) for name in available_backbones() if get_backbone(name).source == "hub"]
    assert {b.name for b in hub} >= {"labse", "xlmr-base", "xlmr-large", "me5-small"}
    for backbone in hub:
        assert re.fullmatch(r"[0-9a-f]{40}", backbone.revision or ""), backbone.name
    labse = get_backbone("labse")
    other = dataclasses.replace(labse, revision="0" * 40)
    assert cache_file(labse, ["a"], "query") != cache_file(other, ["a"], "query")
    calls = []

    def stub(*args, **kwargs):  # what the hub would be asked for
        calls.append(kwargs)
        return types.SimpleNamespace()

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", stub)
    assert load_model("labse", device="cpu").backbone.revision == labse.revision
    assert calls[0]["revision"] == labse.revision


def test_prefixes_are_a_per_backbone_setting_labse_without():
    labse = get_backbone("labse")
    assert (labse.query_prefix, labse.passage_prefix) == ("", "")
    assert get_backbone("xlmr-base").query_prefix == "Query: "   # the paper's convention
    assert get_backbone("me5-small").query_prefix == "query: "   # E5's own


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(BackboneError, match="unknown backbone 'bert-x'.*me5-small-q4"):
        get_backbone("bert-x")


def test_hub_backbone_offline_names_the_offline_backbone(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BackboneError, match="me5-small-q4"):
        load_model("labse", device="cpu")


def test_tiny_model_encodes_normalised_and_caches(tiny_model, tmp_path):
    texts = ["Wie alt ist Berlin?", "How old is Berlin?", "¿Qué edad tiene Berlín?"]
    first = encode(tiny_model, texts, "query", batch_size=2, show_progress_bar=False)
    assert first.shape == (3, 32) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    cached = list((tmp_path / "outputs" / "cache" / "embeddings").glob("tiny-query-*.npy"))
    assert len(cached) == 1
    again = encode(tiny_model, texts, "query", show_progress_bar=False)
    assert np.array_equal(first, again)
    passages = encode(tiny_model, texts, "passage", show_progress_bar=False)
    assert not np.allclose(first, passages)  # the prefix differs


@pytest.mark.slow
def test_me5_small_q4_scores_translations_above_non_pairs():
    model = load_model("me5-small-q4", device="cpu")
    english = ["The cat sleeps on the sofa.", "Berlin is the capital of Germany.",
               "I would like a cup of coffee.", "The train leaves at eight o'clock.",
               "Water boils at one hundred degrees."]
    german = ["Die Katze schläft auf dem Sofa.", "Berlin ist die Hauptstadt Deutschlands.",
              "Ich hätte gern eine Tasse Kaffee.", "Der Zug fährt um acht Uhr ab.",
              "Wasser kocht bei hundert Grad."]
    en = encode(model, english, "passage", cache=False, show_progress_bar=False)
    de = encode(model, german, "passage", cache=False, show_progress_bar=False)
    similarity = en @ de.T
    pairs = np.diag(similarity)
    non_pairs = similarity[~np.eye(len(english), dtype=bool)]
    assert pairs.mean() > non_pairs.mean() + 0.1
    assert (similarity.argmax(axis=1) == np.arange(len(english))).all()


def test_model_folder_resolves_from_the_project_root(tmp_path, monkeypatch):
    import json

    import lib.backbones as backbones

    folder = tmp_path / "outputs" / "run-x" / "model"
    folder.mkdir(parents=True)
    (folder / "backbone.json").write_text(json.dumps({"name": "tiny-hybrid", "pooling": "mean"}))
    monkeypatch.setattr(backbones, "PROJECT_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path / "outputs")  # as papermill runs a notebook from another folder
    backbone = get_backbone("outputs/run-x/model")
    assert backbone.source == "path" and backbone.name == "tiny-hybrid"
    assert backbone.path == str(folder.resolve())


def test_building_a_backbone_into_the_cache_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """A run seeds torch, then loads its backbone: a first build into an empty cache must not
    reset the seeded RNG, or the first run of a seed differs from every later one."""
    import torch

    from lib.backbones import tiny_dir

    monkeypatch.setenv("HBT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_dir(seed=7)  # builds: the cache is empty
    assert torch.equal(torch.rand(3), expected)
