"""Shared fixtures. Tests run offline: the real LAReQA files come from LAREQA_DIR (CI sets it);
tests that need them are skipped when it is not set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lareqa_dir() -> Path:
    root = os.environ.get("LAREQA_DIR")
    if not root:
        pytest.skip("LAREQA_DIR is not set: the real XQuAD-R / MLQA-R files are not available")
    return Path(root)


@pytest.fixture(scope="session")
def tiny_model():
    from lib.backbones import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(autouse=True)
def _outputs_in_tmp(tmp_path, monkeypatch):
    """Every test writes its outputs (and embedding cache) into its own temporary folder."""
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path / "outputs"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train ~20x faster on one thread than on two contended ones (shared CI machines);
    a module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
