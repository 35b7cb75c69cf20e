"""Figures and tables of 01_data (lib.data_figures) on small hand-made groups and leakage reports."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.data import ParallelGroup  # noqa: E402
from lib.data_figures import data_summary, groups_figure, leakage_figure, leakage_shares, split_counts  # noqa: E402
from lib.training_data import language_counts, languages_per_group  # noqa: E402


def group(qid: str, languages: list[str]) -> ParallelGroup:
    return ParallelGroup(qid=qid, source="toy", queries={lang: f"{qid}?" for lang in languages},
                         positives={lang: f"{qid}." for lang in languages})


GROUPS = [group("a", ["en", "de"]), group("b", ["en", "de", "es"]), group("c", ["en"]), group("d", ["de", "es"])]


def leakage_table() -> pd.DataFrame:
    rows = [("question", "en", 10, 1, 2), ("question", "de", 5, 0, 0), ("passage", "en", 20, 2, 3),
            ("passage", "de", 8, 0, 4), ("question", "all", 15, 1, 2), ("passage", "all", 28, 2, 7)]
    report = pd.DataFrame(rows, columns=["kind", "lang", "n_eval", "exact", "near"])
    report["exact_share"] = report.exact / report.n_eval
    report["near_share"] = report.near / report.n_eval
    return report


def test_split_counts_per_language_on_each_side():
    table = split_counts(GROUPS[:3], GROUPS[3:])
    assert table.to_dict() == {"train": {"de": 2, "en": 3, "es": 1}, "validation": {"de": 1, "en": 0, "es": 1}}
    assert (table.dtypes == int).all()


def test_groups_figure_draws_both_panels():
    counts = language_counts(GROUPS)
    figure = groups_figure(counts, languages_per_group(GROUPS), "toy")
    left, right = figure.axes
    assert [bar.get_height() for bar in left.patches] == counts.groups.tolist() == [3, 3, 2]
    assert [t.get_text() for t in left.get_xticklabels()] == ["de", "en", "es"]
    assert [bar.get_height() for bar in right.patches] == [1, 2, 1]      # 1, 2 and 3 languages
    assert left.get_title().startswith("toy:")


def test_leakage_shares_drop_the_totals_and_are_percent():
    shares = leakage_shares(leakage_table())
    assert set(shares.lang) == {"en", "de"} and len(shares) == 8
    near_en = shares.query("kind == 'passage' and lang == 'en' and duplicate == 'near_share'").share
    assert near_en.item() == pytest.approx(15.0)


def test_leakage_figure_has_one_panel_per_kind():
    grid = leakage_figure(leakage_table(), "mlqa-r", "xquad-r")
    assert [ax.get_title() for ax in grid.axes.flat] == ["kind = question", "kind = passage"]
    heights = sorted(round(bar.get_height(), 6) for ax in grid.axes.flat for bar in ax.patches if bar.get_height())
    assert heights == sorted(round(v, 6) for v in [10.0, 20.0, 10.0, 15.0, 50.0])
    assert "mlqa-r training texts found in xquad-r" in grid.figure._suptitle.get_text()


def test_data_summary_records_counts_split_and_leakage_totals():
    report = leakage_table()
    report["near_threshold"] = 0.9
    summary = data_summary("toy", "other", GROUPS, GROUPS[:3], GROUPS[3:], report)
    assert summary["groups"] == 4 and summary["train_groups"] == 3 and summary["validation_groups"] == 1
    assert summary["languages_per_group"] == {1: 1, 2: 2, 3: 1}
    assert summary["groups_per_language"] == {"de": 3, "en": 3, "es": 2}
    assert summary["leakage"]["passage"]["near"] == 7
    assert summary["leakage"]["question"]["exact_share"] == pytest.approx(1 / 15)
    assert summary["near_threshold"] == 0.9
