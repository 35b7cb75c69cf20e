"""One run-naming scheme: the names the grid, training and the report give runs."""

from __future__ import annotations

import ast
from pathlib import Path

from lib.naming import (bias_run_name, comparison_run_name, eval_run_name, system_name, train_run_name,
                        zero_shot_run_name)


def test_run_names_of_the_default_grid_are_unchanged():
    assert train_run_name("me5-small-q4", "hybrid", {"a": 0.5}, "mlqa-r", 0) == "train-me5-small-q4-hybrid-a0.5-mlqa-r-s0"
    assert train_run_name("me5-small-q4", "en", None, "mlqa-r", 0) == "train-me5-small-q4-en-mlqa-r-s0"
    assert train_run_name("tiny", "mono", {}, "mlqa-r,xquad-r", 2, tag="long") == "train-tiny-mono-mlqa-r+xquad-r-s2-long"
    assert eval_run_name("train-x", "xquad-r") == "eval-train-x-xquad-r"
    assert eval_run_name("train-x", "xquad-r", "paragraph") == "eval-train-x-xquad-r-paragraph"
    assert zero_shot_run_name("me5-small-q4", "xquad-r") == "zeroshot-me5-small-q4-xquad-r-sentence"
    assert bias_run_name("eval-a") == "bias-eval-a"
    assert comparison_run_name("grid", "me5-small-q4", "mlqa-r", "xquad-r") == "bias-grid-me5-small-q4-mlqa-r-xquad-r"
    assert comparison_run_name("g", "tiny", "mlqa-r,xquad-r", "x", "t") == "bias-g-tiny-mlqa-r+xquad-r-x-t"
    assert system_name("hybrid", {"a": 0.5}) == "hybrid a=0.5" and system_name("mono", None) == "mono"
    assert system_name("hybrid", {"a": 1.0}) == "hybrid a=1"


def test_the_labels_come_from_the_sampler_classes():
    """Run names and system names of the samplers as the sampler classes declare their options:
    the names of the existing runs, every sampler and a few alphas."""
    from lib.sampling import SAMPLERS, option_labels, options_for

    expected = {"en": "train-tiny-en-mlqa-r-s0", "xx": "train-tiny-xx-mlqa-r-s0", "mono": "train-tiny-mono-mlqa-r-s0",
                "cross": "train-tiny-cross-mlqa-r-s0", "hybrid": "train-tiny-hybrid-a0.3-mlqa-r-s0"}
    for sampler in SAMPLERS:
        labels = option_labels(sampler, options_for(sampler, {"alpha": 0.3}))
        assert train_run_name("tiny", sampler, labels, "mlqa-r", 0) == expected[sampler]
    for alpha, text in ((0.5, "a0.5"), (1.0, "a1"), (0.25, "a0.25"), (0, "a0")):
        labels = option_labels("hybrid", options_for("hybrid", {"alpha": alpha}))
        assert train_run_name("me5-small-q4", "hybrid", labels, "mlqa-r", 1) == f"train-me5-small-q4-hybrid-{text}-mlqa-r-s1"
        assert system_name("hybrid", labels) == f"hybrid {text[0]}={text[1:]}"


def test_train_config_names_its_run_the_same_way():
    from lib.train import TrainConfig

    config = TrainConfig(backbone="tiny", sampler="hybrid", alpha=0.5, train_sources="mlqa-r", seed=3, device="cpu")
    assert config.resolved().run == train_run_name("tiny", "hybrid", {"a": 0.5}, "mlqa-r", 3) == "train-tiny-hybrid-a0.5-mlqa-r-s3"


def test_naming_imports_nothing_from_lib():
    tree = ast.parse((Path(__file__).resolve().parents[1] / "lib" / "naming.py").read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.split(".")[0] == "lib"]
