"""scripts/primary_from_summary.py: the primary tests the README quotes, recomputed from the table."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scripts.primary_from_summary import non_inferiority_welch, paper_claim, training_free_competitor


def test_non_inferiority_is_the_one_sided_welch_test_shifted_by_the_margin():
    a, b = (0.766, 0.004), (0.773, 0.006)
    delta, p = non_inferiority_welch(a, b, 0.005, lower_is_better=False)
    t, p_two = stats.ttest_ind_from_stats(a[0] - b[0] + 0.005, a[1], 3, 0.0, b[1], 3, equal_var=False)
    assert delta == pytest.approx(-0.007) and p == pytest.approx(1 - p_two / 2 if t < 0 else p_two / 2)
    better, p_lower = non_inferiority_welch((360.0, 1.0), (370.0, 1.0), 3.7, lower_is_better=True)
    assert better == pytest.approx(10.0) and p_lower < 0.001            # lower rank distance is better


def test_the_readme_figures():
    claim = "\n".join(paper_claim())
    assert "| mono map | 0.005 | -0.007, 0.670 | +0.014, 0.005 | 0.670 |" in claim
    assert claim.count("non-inferiority not shown") == 4
    competitor = training_free_competitor()
    rank = next(line for line in competitor if line.startswith("| multi rank_distance"))
    assert "| 0.0004 |" in rank and rank.endswith("| better |")
    mono = next(line for line in competitor if line.startswith("| mono map"))
    assert "| 0.0759 |" in mono and "no significant difference" in mono
    assert not any("equivalent" in line for line in competitor[2:])
    assert np.isfinite(float(mono.split("|")[4]))
