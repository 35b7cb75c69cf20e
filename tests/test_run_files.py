"""TREC run files and qrels: ir_measures recomputes the project's metrics from them."""

from __future__ import annotations

import ir_measures
import numpy as np
import pandas as pd
import pytest
from ir_measures import AP, R

from lib.data import RetrievalDataset
from lib.metrics import per_query_metrics, summarise
from lib.retrieval import lareqa_ranks
from lib.run_files import TREC_FOLDER, lareqa_run_files, macro_average, parse_trec_query_id, trec_query_id, write_run_files

LANGUAGES = ["de", "en", "es"]


def random_dataset(n_qids: int = 60, seed: int = 0):
    """Every id answered in en; de and es miss some ids (cross pools differ in size); 40 extra
    sentences per language, so the multilingual pool (n_qids * 3 - missing + 120) exceeds 100."""
    rng = np.random.default_rng(seed)
    questions, candidates = [], []
    for lang in LANGUAGES:
        for i in range(n_qids):
            if lang != "en" and i % (5 if lang == "de" else 7) == 0:
                continue
            questions.append({"qid": f"q{i}", "lang": lang, "text": "", "answer": len(candidates)})
            candidates.append({"cid": f"{lang}:{i}", "lang": lang})
        candidates += [{"cid": f"{lang}:x{j}", "lang": lang} for j in range(40)]
    candidates = pd.DataFrame(candidates).assign(paragraph_id="p", sentence="", paragraph="", text="")
    data = RetrievalDataset("random", pd.DataFrame(questions), candidates, "sentence", LANGUAGES)
    # answers share a direction with their questions, so relevant ranks spread over the top and the tail
    answers = rng.normal(size=(len(candidates), 16)).astype(np.float32)
    query = answers[data.questions.answer.to_numpy()] + 1.5 * rng.normal(size=(len(data.questions), 16))
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return data, normalise(query), normalise(answers)


def per_query_from_files(folder, setting, measures):
    qrels = list(ir_measures.read_trec_qrels(str(folder / TREC_FOLDER / f"{setting}.qrels")))
    run = list(ir_measures.read_trec_run(str(folder / TREC_FOLDER / f"{setting}.run.gz")))
    rows = [(m.query_id, str(m.measure), m.value) for m in ir_measures.iter_calc(measures, qrels, run)]
    return pd.DataFrame(rows, columns=["query_id", "measure", "value"])


def test_query_ids_round_trip():
    assert parse_trec_query_id(trec_query_id("en", "all", "56be/x")) == ("en", "all", "56be/x")


@pytest.mark.parametrize("depth", [100, 1000])
def test_ir_measures_recomputes_the_projects_metrics(tmp_path, depth):
    data, questions, candidates = random_dataset()
    ranks = lareqa_ranks(data, questions, candidates)
    per_query = per_query_metrics(ranks)
    macro = summarise(per_query)["macro"]
    write_run_files(tmp_path, lareqa_run_files(data, questions, candidates, ranks, depth=depth))
    ours = per_query.assign(query_id=[trec_query_id(*key) for key in
                                      zip(per_query.query_lang, per_query.target_lang, per_query.qid)])
    assert ranks.query("setting == 'multi'")["rank"].max() > 100  # the cut at 100 matters in this test
    for setting in ("mono", "cross", "multi"):
        theirs = per_query_from_files(tmp_path, setting, [AP, AP @ 20, R @ 1, R @ 10])
        table = theirs.pivot(index="query_id", columns="measure", values="value")
        mine = ours.query("setting == @setting").set_index("query_id").loc[table.index]
        assert len(table) == len(ours.query("setting == @setting"))  # every ranking is in the run file
        # depth-independent: mAP@20 (R <= 20), R@1, R@10 per query, and the macro mAP@20
        np.testing.assert_allclose(table["AP@20"], mine["map@20"], atol=1e-9)
        np.testing.assert_allclose(table["R@1"], mine["recall@1"], atol=1e-9)
        np.testing.assert_allclose(table["R@10"], mine["recall@10"], atol=1e-9)
        assert macro_average(theirs.query("measure == 'AP@20'")) == pytest.approx(macro.loc[setting, "map@20"])
        # AP: equal where every relevant candidate is in the top `depth`; elsewhere lower by less than
        # 1/depth per relevant candidate below the cut
        within = (mine.max_rank <= depth).to_numpy()
        np.testing.assert_allclose(table["AP"][within], mine["map"][within], atol=1e-9)
        gap = (mine["map"] - table["AP"])[~within]
        assert ((gap > 0) & (gap < mine.n_relevant[~within] / depth)).all()
        if within.all():  # the whole pool is in the file: the project's mAP, macro-averaged alike
            assert macro_average(theirs.query("measure == 'AP'")) == pytest.approx(macro.loc[setting, "map"])
    assert (depth == 1000) == bool(ours.max_rank.le(depth).all())


def test_run_file_lines_follow_the_trec_format(tmp_path):
    data, questions, candidates = random_dataset(n_qids=10)
    ranks = lareqa_ranks(data, questions, candidates, settings=("mono",))
    (run_path, qrels_path), = [write_run_files(tmp_path, lareqa_run_files(data, questions, candidates, ranks))]
    run = pd.read_csv(run_path, sep=" ", header=None, names=["query", "q0", "doc", "rank", "score", "tag"])
    assert set(run.q0) == {"Q0"} and set(run.tag) == {"hybrid-batch"}
    assert run.groupby("query")["rank"].apply(lambda r: r.tolist() == list(range(1, len(r) + 1))).all()
    assert run.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    qrels = pd.read_csv(qrels_path, sep=" ", header=None, names=["query", "iteration", "doc", "relevance"])
    assert len(qrels) == len(data.questions) and set(qrels.relevance) == {1}
