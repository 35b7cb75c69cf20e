"""Fixture mirrors of the paper's training sources, generated in their real formats (never committed):
``HBT_SOURCES_DIR`` pointed at the folder makes ``lib.sources`` read them instead of the hub.

    write_source_mirror(tmp_path / "mirror")      # mmarco (seven languages), wikiqa, natural-questions
    python -m tests.source_fixtures outputs/mirror   # the same, for a run by hand
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lib.sources import get_source
from lib.training_data import MMARCO_TRIPLES, mmarco_collection_file, mmarco_queries_file

TOPICS = ("river", "city", "king", "film", "song", "team", "war", "book")


def write_mmarco_mirror(root: Path, languages, queries: int = 24) -> None:
    """The unicamp-dl/mmarco layout: triples of ids (query, positive, negative), then per language
    the train queries and the collection, each ``id<TAB>text``."""
    repo = Path(root) / "unicamp-dl" / "mmarco"
    (repo / MMARCO_TRIPLES).parent.mkdir(parents=True, exist_ok=True)
    (repo / MMARCO_TRIPLES).write_text("".join(f"{q}\t{1000 + q}\t{2000 + q}\n" for q in range(queries)))
    for lang in languages:
        for relative, rows in ((mmarco_queries_file(lang), {q: f"{lang} question {q} about topic {q % 5}?"
                                                            for q in range(queries)}),
                               (mmarco_collection_file(lang), {**{1000 + q: f"{lang} answer passage {q}."
                                                                  for q in range(queries)},
                                                               **{2000 + q: f"{lang} other passage {q}."
                                                                  for q in range(queries)}})):
            path = repo / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{key}\t{text}\n" for key, text in rows.items()))


def wikiqa_rows(questions: int = 3) -> pd.DataFrame:
    """Rows as microsoft/wiki_qa's parquet holds them: one per candidate sentence, label 1 = answer.
    Question ``Q{n}``: two non-answers, then the answer; the last question has no answer."""
    rows = []
    for n in range(1, questions + 1):
        topic = TOPICS[n % len(TOPICS)]
        question = f"what is the {topic} number {n}?"
        candidates = [(f"The {topic} {n} is old.", 0), (f"Many people like the {topic} {n}.", 0),
                      (f"The {topic} number {n} is a {topic} named after its place.", 1 if n < questions else 0)]
        rows += [{"question_id": f"Q{n}", "question": question, "document_title": f"{topic.title()} {n}",
                  "answer": answer, "label": label} for answer, label in candidates]
    return pd.DataFrame(rows)


def write_wikiqa_mirror(root: Path, questions: int = 3) -> None:
    source = get_source("wikiqa")
    path = Path(root) / source.hub_id / source.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    wikiqa_rows(questions).to_parquet(path)


def write_natural_questions_mirror(root: Path, questions: int = 3) -> None:
    """sentence-transformers/natural-questions "pair": one row per question, columns query and answer."""
    source = get_source("natural-questions")
    rows = pd.DataFrame({"query": [f"when did the {TOPICS[n % len(TOPICS)]} {n} begin" for n in range(questions)],
                         "answer": [f"The {TOPICS[n % len(TOPICS)]} {n} began in year {1900 + n}."
                                    for n in range(questions)]})
    path = Path(root) / source.hub_id / source.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path)


def write_source_mirror(root: Path, mmarco_queries: int = 24, wikiqa_questions: int = 16,
                        nq_questions: int = 16) -> Path:
    """A mirror holding every hub source the paper grids train on (fixture rows)."""
    write_mmarco_mirror(root, get_source("mmarco").languages, mmarco_queries)
    write_wikiqa_mirror(root, wikiqa_questions)
    write_natural_questions_mirror(root, nq_questions)
    return Path(root)


if __name__ == "__main__":
    print(write_source_mirror(Path(sys.argv[1])))
