"""Fixture mirrors of the paper's training sources, generated in their real formats (never committed):
``HBT_SOURCES_DIR`` pointed at the folder makes ``lib.sources`` read them instead of the hub.

    write_source_mirror(tmp_path / "mirror")      # mmarco (seven languages) and every QA set of the paper mix
    python -m tests.source_fixtures outputs/mirror   # the same, for a run by hand
"""

from __future__ import annotations

import gzip
import json
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


def write_hub_rows(root: Path, name: str, records: list[dict]) -> Path:
    """``records`` as the first file of the registered hub-qa source ``name`` under a mirror, in its
    format: parquet, or one JSON object per line (gzip-compressed for ``.gz``)."""
    source = get_source(name)
    path = Path(root) / source.hub_id / source.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.format == "parquet":
        pd.DataFrame(records).to_parquet(path)
        return path
    with (gzip.open if path.suffix == ".gz" else open)(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return path


def duorc_rows(questions: int = 3) -> list[dict]:
    """ibm-research/duorc SelfRC rows: one per question, two questions per plot (plot_id, plot,
    title, question_id, question, answers, no_answer); the last question has no answer."""
    rows = []
    for n in range(questions):
        plot = n // 2
        rows.append({"plot_id": f"/m/0plot{plot}", "plot": f"A film about the {TOPICS[plot % len(TOPICS)]} {plot}. "
                     f"Its hero leaves home in year {1950 + plot}.", "title": f"Film {plot}",
                     "question_id": f"duorc-q{n}", "question": f"who leaves home in film {plot}, part {n}?",
                     "answers": [f"hero {plot}"], "no_answer": n == questions - 1})
    return rows


def newsqa_rows(questions: int = 3) -> list[dict]:
    """lucadiliello/newsqa rows (MRQA NewsQA): context, question, answers, key, labels (character
    spans); two questions per article."""
    rows = []
    for n in range(questions):
        article = n // 2
        context = f"(CNN) -- The {TOPICS[article % len(TOPICS)]} {article} story. Officials spoke on day {article}."
        rows.append({"context": context, "question": f"what happened in story {article}, question {n}?",
                     "answers": [f"story {article}"], "key": f"newsqa-{n}",
                     "labels": [{"start": [4], "end": [12]}]})
    return rows


def mr_tydi_records(questions: int = 3) -> list[dict]:
    """castorini/mr-tydi train records: query_id, query, positive_passages and negative_passages
    (lists of {docid, title, text}); the last query has no negatives, as some do."""
    def passage(docid: str, text: str) -> dict:
        return {"docid": docid, "title": f"Title {docid}", "text": text}

    return [{"query_id": str(n), "query": f"when was the {TOPICS[n % len(TOPICS)]} {n} founded?",
             "positive_passages": [passage(f"{n}#0", f"The {TOPICS[n % len(TOPICS)]} {n} was founded in {1800 + n}."),
                                   passage(f"{n}#1", f"It is the {n}th {TOPICS[n % len(TOPICS)]}.")],
             "negative_passages": [] if n == questions - 1 else
             [passage(f"{n}#{k}", f"Another {TOPICS[(n + k) % len(TOPICS)]} {n} is mentioned here ({k}).")
              for k in (7, 8)]}
            for n in range(questions)]


def mfaq_records(questions: int = 3) -> list[dict]:
    """clips/mfaq "en" records: one FAQ page per line (id, language, num_pairs, domain, qa_pairs of
    {question, answer, language}), two pairs per page."""
    pages = []
    for page in range(0, questions, 2):
        pairs = [{"question": f"How do I book the {TOPICS[n % len(TOPICS)]} tour {n}?",
                  "answer": f"Book tour {n} online or at the desk.", "language": "en"}
                 for n in range(page, min(page + 2, questions))]
        pages.append({"id": 1000 + page, "language": "en", "num_pairs": len(pairs),
                      "domain": f"site{page}.example", "qa_pairs": pairs})
    return pages


def write_squadshifts_mirror(root: Path, questions: int = 40) -> None:
    """ludwigschmidt/squadshifts parquet (id, title, context, question, answers), the questions spread
    over the four configurations' files: the paper's English validation set."""
    source = get_source("squadshifts")
    for index, relative in enumerate(source.files):
        rows = [{"id": f"ss{index}-{n}", "title": "Topic", "context": f"Paragraph {index}.{n} about the "
                 f"{TOPICS[n % len(TOPICS)]}, with its answer {n}.", "question": f"What is answer {index}.{n}?",
                 "answers": {"text": [f"answer {n}"], "answer_start": [30]}}
                for n in range(index, questions, len(source.files))]
        path = Path(root) / source.hub_id / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path)


QA_FIXTURES = {"duorc": duorc_rows, "newsqa": newsqa_rows, "mr-tydi-en": mr_tydi_records, "mfaq-en": mfaq_records}


def write_source_mirror(root: Path, mmarco_queries: int = 24, wikiqa_questions: int = 16,
                        nq_questions: int = 16, qa_questions: int = 16, squadshifts_questions: int = 40) -> Path:
    """A mirror holding every hub source the paper grids train on (fixture rows): ``qa_questions``
    questions for each of DuoRC, NewsQA, Mr. TyDi and MFAQ (``QA_FIXTURES``; their -mt variants read
    the same files), and SQuADShifts, the validation set."""
    write_mmarco_mirror(root, get_source("mmarco").languages, mmarco_queries)
    write_wikiqa_mirror(root, wikiqa_questions)
    write_natural_questions_mirror(root, nq_questions)
    for name, rows in QA_FIXTURES.items():
        write_hub_rows(root, name, rows(qa_questions))
    write_squadshifts_mirror(root, squadshifts_questions)
    return Path(root)


if __name__ == "__main__":
    print(write_source_mirror(Path(sys.argv[1])))
