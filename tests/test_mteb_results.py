"""Evaluations in MTEB's result format, read back by mteb's own ``TaskResult``; TREC run files of
Tatoeba and MIRACL, tagged with the run name and scored by ir_measures as the project scores them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import ir_measures
import numpy as np
import pandas as pd
import pytest

import lib.evaluate  # noqa: F401  registers every evaluator
from lib.mteb_results import ISO1_TAGS, TATOEBA_SCRIPTS, bitext_scores
from lib.results import Evaluation, write_evaluation
from lib.run_files import aligned_runs, scored_run

mteb = pytest.importorskip("mteb")


def _tatoeba_evaluation() -> Evaluation:
    table = pd.DataFrame({"acc_xx_to_eng": [0.9, 0.5], "acc_eng_to_xx": [0.8, 0.4], "mteb_precision": [0.92, 0.6],
                          "mteb_recall": [0.9, 0.5], "mteb_f1": [0.89, 0.52]}, index=pd.Index(["deu", "xho"], name="lang"))
    return Evaluation({"tatoeba_all-xx2eng_accuracy": 0.7}, table, timings={"total_s": 3.0})


def _load(path: Path):
    from mteb import TaskResult

    return TaskResult.from_disk(path)


def test_tatoeba_result_is_mteb_s_tatoeba_task(tmp_path):
    write_evaluation(tmp_path / "run", _tatoeba_evaluation(), {"dataset": "tatoeba", "run": "run"})
    result = _load(tmp_path / "run" / "mteb" / "Tatoeba.json")
    assert result.task_name == "Tatoeba" and result.evaluation_time == 3.0
    scores = {s["hf_subset"]: s for s in result.scores["test"]}
    assert scores["deu-eng"]["main_score"] == 0.89 and scores["deu-eng"]["accuracy"] == 0.9
    assert scores["xho-eng"]["languages"] == ["xho-Latn", "eng-Latn"]
    assert result.get_score() == pytest.approx((0.89 + 0.52) / 2)          # mteb's mean of main scores
    task = mteb.get_task("Tatoeba")
    assert task.metadata.main_score == "f1" and result.get_score(languages=["deu"]) == 0.89
    assert set(task.metadata.eval_langs) == {f"{code}-eng" for code in TATOEBA_SCRIPTS}
    assert all(task.metadata.eval_langs[f"{code}-eng"][0] == f"{code}-{script}"
               for code, script in TATOEBA_SCRIPTS.items())


def test_bitext_scores_are_mteb_s():
    predictions = np.array([0, 2, 2, 3])
    scores = bitext_scores(predictions)
    assert scores["accuracy"] == 0.75 and scores["recall"] == 0.75
    assert scores["precision"] == pytest.approx(0.625) and scores["f1"] == pytest.approx(2 / 3)


def test_miracl_and_lareqa_results_load_in_mteb(tmp_path):
    table = pd.DataFrame({"ndcg@10": [0.5, 0.7], "recall@100": [0.9, 1.0]}, index=pd.Index(["sw", "te"], name="lang"))
    write_evaluation(tmp_path / "m", Evaluation({"miracl_mean_ndcg@10": 0.6}, table), {"dataset": "miracl"})
    result = _load(tmp_path / "m" / "mteb" / "MIRACLRetrieval.json")
    assert result.get_score() == pytest.approx(0.6) and result.scores["dev"][0]["languages"] == ["swa-Latn"]
    task = mteb.get_task("MIRACLRetrieval")
    assert task.metadata.main_score == "ndcg_at_10" and task.metadata.eval_splits == ["dev"]
    assert all(task.metadata.eval_langs[lang] == [tag] for lang, tag in ISO1_TAGS.items() if lang in
               task.metadata.eval_langs)
    summary = {"xquad-r_mono_map": 0.5, "xquad-r_mono_map@20": 0.45, "xquad-r_multi_map": 0.3,
               "xquad-r_multi_rank_distance": 2.0}
    write_evaluation(tmp_path / "x", Evaluation(summary, pd.DataFrame()), {"dataset": "xquad-r", "languages": ["de"]})
    result = _load(tmp_path / "x" / "mteb" / "LAReQA-XQuAD-R.json")
    scores = {s["hf_subset"]: s for s in result.scores["test"]}
    assert scores["mono"]["map_at_20"] == 0.45 and scores["multi"]["main_score"] == 0.3
    assert scores["multi"]["rank_distance"] == 2.0 and scores["mono"]["languages"] == ["deu-Latn"]


def _read_run(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as handle:
        return [line.split() for line in handle]


def test_tatoeba_run_files_give_its_accuracy_and_carry_the_run_name(tmp_path):
    rng = np.random.default_rng(0)
    xx = rng.standard_normal((6, 4)).astype(np.float32)
    eng = xx + rng.normal(scale=0.9, size=xx.shape).astype(np.float32)
    runs = aligned_runs({"deu": (xx, eng)}, depth=3)
    evaluation = Evaluation({}, pd.DataFrame(), run_files=runs)
    write_evaluation(tmp_path / "tatoeba-tiny", evaluation, {"dataset": "toy", "run": "tatoeba-tiny"})
    lines = _read_run(tmp_path / "tatoeba-tiny" / "trec" / "xx2eng.run.gz")
    assert len(lines) == 18 and {line[5] for line in lines} == {"tatoeba-tiny"}
    qrels = list(ir_measures.read_trec_qrels(str(tmp_path / "tatoeba-tiny" / "trec" / "xx2eng.qrels")))
    run = list(ir_measures.read_trec_run(str(tmp_path / "tatoeba-tiny" / "trec" / "xx2eng.run.gz")))
    accuracy = float(np.mean((xx @ eng.T).argmax(axis=1) == np.arange(6)))
    assert ir_measures.calc_aggregate([ir_measures.P @ 1], qrels, run)[ir_measures.P @ 1] == pytest.approx(accuracy)
    reverse = _read_run(tmp_path / "tatoeba-tiny" / "trec" / "eng2xx.run.gz")
    assert reverse[0][0] == "deu/0" and reverse[0][2].startswith("deu.xx/")


def test_miracl_run_file_keeps_graded_qrels_and_gives_its_ndcg(tmp_path):
    run = {"q1": {"d1": 0.9, "d2": 0.5, "d3": 0.5}, "q2": {"d3": 0.8}}
    qrels = {"q1": {"d2": 1, "d4": 0}, "q2": {"d3": 1}}
    write_evaluation(tmp_path / "m", Evaluation({}, pd.DataFrame(), run_files=[scored_run("sw", run, qrels)]),
                     {"dataset": "toy", "run": "miracl-x"})
    lines = _read_run(tmp_path / "m" / "trec" / "sw.run.gz")
    assert [line[2] for line in lines] == ["d1", "d2", "d3", "d3"] and lines[0][5] == "miracl-x"
    written = (tmp_path / "m" / "trec" / "sw.qrels").read_text().split("\n")
    assert "q1 0 d4 0" in written
    measure = ir_measures.parse_measure("nDCG@10")
    from_files = ir_measures.calc_aggregate([measure], list(ir_measures.read_trec_qrels(str(tmp_path / "m" / "trec" / "sw.qrels"))),
                                            list(ir_measures.read_trec_run(str(tmp_path / "m" / "trec" / "sw.run.gz"))))
    assert from_files[measure] == pytest.approx(ir_measures.calc_aggregate([measure], qrels, run)[measure])
