"""The report's figures read at a glance: labelled axes, scales that show small differences, legends
outside the data (checked on the matplotlib objects, not on a file)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.report_plots import metric_figure, significance_figure  # noqa: E402


def _results() -> pd.DataFrame:
    rows = []
    for system, base in (("mono", 0.700), ("cross", 0.705), ("hybrid a=0.5", 0.710)):
        for seed, shift in enumerate((-0.001, 0.0, 0.001)):
            rows.append({"dataset": "xquad-r", "system": system, "seed": seed, "status": "complete",
                         "mono map": base + shift, "cross map": base - 0.2 + shift, "multi map": base - 0.3 + shift})
    return pd.DataFrame(rows)


def _outside_every_axis(figure, artist) -> bool:
    figure.canvas.draw()
    box = artist.get_window_extent(figure.canvas.get_renderer())
    return all(not box.overlaps(axis.get_window_extent()) for axis in figure.axes if axis.get_visible())


def test_metric_figure_is_a_dot_plot_on_the_datas_scale():
    figure = metric_figure(_results())
    axes = figure.axes
    assert [axis.get_xlabel() for axis in axes] == ["mono map", "cross map", "multi map"]   # no bare "value"
    assert axes[0].get_ylabel() == "system"
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["mono", "cross", "hybrid a=0.5"]
    low, high = axes[0].get_xlim()
    assert 0.69 < low < 0.699 and 0.711 < high < 0.72        # not from zero: .005 apart is a visible gap
    assert (0.705 - 0.700) / (high - low) > 0.1              # a difference of .005 spans a tenth of the panel
    assert not any(patch.get_height() > 0 for axis in axes for patch in axis.patches)   # no bars
    means = [line.get_xdata()[0] for line in axes[0].lines]
    assert means == pytest.approx([0.700, 0.705, 0.710])
    assert len(figure.legends) == 1 and _outside_every_axis(figure, figure.legends[0])
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert labels == ["mean over seeds", "range of seeds (min to max)", "one seed"]
    fixed = metric_figure(_results(), ["mono map"], ylim=(0, 1))
    assert fixed.axes[0].get_xlim() == (0, 1)
    plt.close("all")


def test_forest_plot_has_an_x_axis_label_and_its_legend_outside():
    table = pd.DataFrame({"setting": ["mono", "mono", "cross"], "metric": ["map"] * 3, "a": ["hybrid a=0.5"] * 3,
                          "b": ["mono", "cross", "mono"], "dataset": ["xquad-r"] * 3, "delta": [0.01, -0.004, 0.02],
                          "ci_low": [0.002, -0.01, 0.01], "ci_high": [0.018, 0.002, 0.03], "p_holm": [0.01, 0.4, 0.001]})
    figure = significance_figure(table)
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_xlabel() for axis in visible] == ["difference in mono map (A - B)",
                                                       "difference in cross map (A - B)"]
    assert visible[0].get_ylabel() == "comparison (dataset)"
    assert len(figure.legends) == 1 and _outside_every_axis(figure, figure.legends[0])
    plt.close("all")


def test_wide_tables_are_split_so_each_fits_a_page():
    from lib.report import _markdown
    from lib.report_tables import PAGE_WIDTH, page_tables

    columns = pd.MultiIndex.from_product([["xquad-r", "mlqa-r"], ["mono map", "cross map", "multi map"],
                                          ["mean", "std"]])
    index = pd.MultiIndex.from_tuples([("me5-small-q4", "mlqa-r", "hybrid a=0.5"), ("me5-small-q4", "mlqa-r", "mono")],
                                      names=["backbone", "train_sources", "system"])
    wide = pd.DataFrame([[0.5] * 12, [0.6] * 12], index=index, columns=columns)
    text = _markdown(wide)
    tables = text.strip().split("\n\n")
    assert len(tables) > 1
    for table in tables:
        lines = table.splitlines()
        assert max(map(len, lines)) <= PAGE_WIDTH
        assert [c.strip() for c in lines[0].split("|")[1:4]] == ["backbone", "train_sources", "system"]
    shown = {c.strip() for table in tables for c in table.splitlines()[0].split("|")}
    assert {"xquad-r mono map mean", "mlqa-r multi map std"} <= shown        # every column in some table
    narrow = pd.DataFrame({"system": ["mono"], "mono map": [0.5]})
    assert len(page_tables(narrow)) == 1
