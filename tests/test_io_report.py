"""Atomic writes, run folders, provenance, and the language-pair matrix of the heatmaps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lib.io import atomic_path, run_dir, save_figure, write_json, write_provenance
from lib.report_plots import language_pair_matrix, pair_heatmap


def test_failed_write_leaves_the_old_file(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_atomic_directory_replaces_the_old_one(tmp_path):
    target = tmp_path / "model"
    for content in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(content)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_run_dir_rejects_paths_and_provenance_is_written():
    with pytest.raises(ValueError, match="folder name"):
        run_dir("a/b")
    path = run_dir("prov")
    write_provenance(path, {"seed": 3})
    assert json.loads((path / "config.json").read_text()) == {"seed": 3}
    versions = json.loads((path / "versions.json").read_text())
    assert versions["packages"]["torch"] and versions["python"]
    import torch

    assert versions["torch_threads"] == torch.get_num_threads() >= 1    # CPU sums depend on it


def test_language_pair_matrix_and_heatmap(tmp_path):
    per_pair = pd.DataFrame({
        "setting": ["mono", "cross", "cross", "mono", "multi"],
        "query_lang": ["en", "en", "de", "de", "en"], "target_lang": ["en", "de", "en", "de", "all"],
        "map": [0.9, 0.5, 0.4, 0.8, 0.3]}).set_index(["setting", "query_lang", "target_lang"])
    matrix = language_pair_matrix(per_pair)
    assert matrix.loc["en", "en"] == 0.9 and matrix.loc["en", "de"] == 0.5 and "all" not in matrix.columns
    path = save_figure(pair_heatmap(per_pair), tmp_path / "map.png")
    assert path.stat().st_size > 0
