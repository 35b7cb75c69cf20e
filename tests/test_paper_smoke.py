"""The smoke paper grid (params/grid-paper-smoke.yaml) end to end, offline on CPU: the paper's training
mix (mmarco in seven languages + wikiqa, natural-questions, duorc, newsqa, mr-tydi-en and mfaq-en
translated into eight) from generated
fixture mirrors in their real formats, translated by the random ``tiny-mt`` model, four samplers x
tiny backbone, evaluated on XQuAD-R, bias, report. Each notebook's library calls run in process
(tests.test_grid.in_process)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lib.grid import run_grid
from lib.grid_plan import load_grid
from lib.io import outputs_dir, read_json
from tests.source_fixtures import write_source_mirror
from tests.test_grid import in_process

pytestmark = pytest.mark.real_data

TRAINING_LANGUAGES = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]   # mmarco's seven + wikiqa's


def test_smoke_paper_grid_trains_on_the_paper_mix_and_reports(tmp_path, monkeypatch, lareqa_dir):
    monkeypatch.setenv("HBT_SOURCES_DIR", str(write_source_mirror(tmp_path / "mirror")))
    monkeypatch.setenv("HBT_CACHE", str(tmp_path / "cache"))      # tiny-mt and its translations built here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grid = load_grid("grid-paper-smoke")
        table = run_grid(grid, execute=in_process)
    finally:
        torch.set_num_threads(threads)
    assert set(table.status) == {"done"} and len(table) == 17
    assert table.kind.iloc[0] == "translate"                  # its own job, first, once
    translate = read_json(outputs_dir() / table.run.iloc[0] / "metrics.json")["summary"]
    assert set(translate) == {"wikiqa", "natural-questions", "duorc", "newsqa"}   # not the English-only sets
    trained = table[table.kind == "train"].run.tolist()
    assert len(trained) == 4
    for run in trained:
        config, metrics = read_json(outputs_dir() / run / "config.json"), read_json(outputs_dir() / run / "metrics.json")
        assert config["train_sources"] == "mmarco,wikiqa,natural-questions,duorc,newsqa,mr-tydi-en,mfaq-en" and config["translation_model"] == "tiny-mt"
        # 24 mmarco queries + 15 answered wikiqa questions + 16 NQ pairs + 15 answered duorc questions
        # + 16 each of newsqa, mr-tydi-en and mfaq-en, all trained on; SQuADShifts validates (40)
        assert metrics["train_groups"] == 24 + 15 + 16 + 15 + 3 * 16 and metrics["validation_groups"] == 40
        assert config["source_weighting"] == "declared" and config["validation_source"] == "squadshifts"
        assert metrics["steps"] == 2 and math.isfinite(metrics["best_val_loss"])
    results = pd.read_csv(outputs_dir() / "report-paper-smoke" / "results.csv")
    assert set(results.status) == {"complete"} and len(results) == 5           # zero-shot + four samplers
    assert results["multi map"].between(0, 1).all()
