"""lib.downloads: the paper grid's downloads from the registries' declared sizes."""

from __future__ import annotations

import math

from lib.downloads import download_table


def test_paper_downloads_are_declared_and_unknowns_stay_unknown():
    table = download_table(["xlmr-base", "labse", "tiny"], ["mmarco", "wikiqa", "natural-questions"], ["xquad-r", "mlqa-r", "miracl"])
    by_name = dict(zip(table.name.str.split(" ").str[0], table.gb))
    assert by_name["mmarco"] == 36 and by_name["facebook/nllb-200-distilled-600M"] == 2.5
    assert by_name["FacebookAI/xlm-roberta-base@e73636d"] == 1.1 and "tiny" not in " ".join(table.name)
    assert math.isnan(by_name["miracl"])                       # no size declared: not guessed
    assert not table.name.str.contains("UNPINNED").any()       # wikiqa is pinned now
    assert download_table([], ["yahoo-answers-qa"], []).name.str.contains("yahoo-answers-qa \\(UNPINNED").any()


def test_tiny_mt_downloads_nothing():
    table = download_table(["tiny"], ["wikiqa"], ["xquad-r"], translation_model="tiny-mt")
    assert set(table.kind) == {"source"}
