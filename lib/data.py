"""LAReQA benchmarks (XQuAD-R, MLQA-R): raw SQuAD-format files -> questions, candidates, relevance.

Semantics follow google-research/xtreme ``third_party/utils_lareqa.py``:

* a candidate is every sentence (``context[start:end]`` for each half-open ``sentence_breaks``
  span) of every paragraph, per language; candidates are not de-duplicated by text;
* a question's answer is the sentence whose span holds ``answer_start``
  (``start <= answer_start < end``);
* the question id links a question to its translations: in the multilingual setting every
  language's answer sentence of that id is relevant.

Where the files come from, in order: the ``data_dir`` argument, the ``LAREQA_DIR`` environment
variable (``<dir>/xquad-r/en.json`` ...), else a cache that is filled by downloading the official
files at a pinned commit. Every file is checked against its pinned sha256.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib.io import atomic_path, cache_dir, sha256_file

RAW_URL = "https://raw.githubusercontent.com/google-research-datasets/lareqa/{commit}/{folder}/{lang}.json"

LAREQA_SOURCES: dict[str, dict] = {
    "xquad-r": {
        "commit": "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c",
        "sha256": {
            "ar": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
            "de": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
            "el": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
            "en": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
            "es": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
            "hi": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
            "ru": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
            "th": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
            "tr": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
            "vi": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
            "zh": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
        },
    },
    "mlqa-r": {
        # removed upstream after this commit
        "commit": "354d67d1cd066854cdfbf5ad0e6105528976141d",
        "sha256": {
            "ar": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
            "de": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
            "en": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
            "es": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
            "hi": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
            "vi": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
            "zh": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
        },
    },
}

CANDIDATE_CONTEXTS = ("sentence", "paragraph")


class DataError(ValueError):
    """A data file is missing, malformed or not the pinned version; the message names it."""


def lareqa_languages(dataset: str) -> list[str]:
    return sorted(_source(dataset)["sha256"])


def _source(dataset: str) -> dict:
    if dataset not in LAREQA_SOURCES:
        raise DataError(f"unknown LAReQA dataset {dataset!r}; expected one of {sorted(LAREQA_SOURCES)}")
    return LAREQA_SOURCES[dataset]


def lareqa_file(dataset: str, lang: str, data_dir: str | os.PathLike | None = None,
                download: bool = True, verify: bool = True) -> Path:
    """Path of one language file, checked against its pinned sha256.

    ``data_dir`` (or ``LAREQA_DIR``) is a folder holding ``xquad-r/`` and ``mlqa-r/``; without
    either, the file is downloaded once into ``<cache>/lareqa/`` at the pinned commit.
    """
    source = _source(dataset)
    if lang not in source["sha256"]:
        raise DataError(f"{dataset} has no language {lang!r}; it has {sorted(source['sha256'])}")
    root = data_dir if data_dir is not None else os.environ.get("LAREQA_DIR")
    if root:
        path = Path(root) / dataset / f"{lang}.json"
        if not path.is_file():
            raise DataError(
                f"missing file {path}: the LAReQA folder (data_dir or LAREQA_DIR={root}) must hold "
                f"{dataset}/{lang}.json; unset LAREQA_DIR to download the official files instead")
    else:
        path = cache_dir() / "lareqa" / dataset / f"{lang}.json"
        if not path.is_file():
            if not download:
                raise DataError(f"missing file {path} and downloading is switched off")
            _download(RAW_URL.format(commit=source["commit"], folder=dataset, lang=lang), path)
    if verify:
        actual = sha256_file(path)
        expected = source["sha256"][lang]
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {path}: sha256 {actual}, expected {expected} (the official "
                f"file at commit {source['commit']}); replace the file (in the download cache: delete it to "
                "download it again), or, to evaluate a modified copy on purpose, call "
                "lib.data.load_lareqa(..., verify=False) from Python")
    return path


def _download(url: str, path: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(path) as tmp:
            tmp.write_bytes(response.read())
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"could not download {url} ({error}); without network, set LAREQA_DIR to a folder "
            "holding xquad-r/ and mlqa-r/ with the official json files") from error


@dataclass
class RetrievalDataset:
    """Questions, candidates and relevance of one LAReQA benchmark.

    ``questions``: one row per (question id, language): ``qid, lang, text, answer`` where
    ``answer`` is the row of the answer sentence in ``candidates``.
    ``candidates``: one row per sentence: ``cid, lang, paragraph_id, sentence, paragraph, text``;
    ``text`` is what gets encoded (the sentence, or the sentence followed by its paragraph).
    """

    name: str
    questions: pd.DataFrame
    candidates: pd.DataFrame
    candidate_context: str = "sentence"
    languages: list[str] = field(default_factory=list)

    def answers_by_qid(self) -> dict[str, dict[str, int]]:
        """qid -> {language: candidate row of its answer sentence}."""
        table: dict[str, dict[str, int]] = {}
        for qid, lang, answer in zip(self.questions.qid, self.questions.lang, self.questions.answer):
            table.setdefault(qid, {})[lang] = int(answer)
        return table

    def counts(self) -> pd.DataFrame:
        return pd.DataFrame({
            "questions": self.questions.groupby("lang").size(),
            "candidates": self.candidates.groupby("lang").size(),
        }).fillna(0).astype(int).loc[self.languages]


def parse_squad_file(path: str | os.PathLike, lang: str) -> tuple[list[dict], list[dict]]:
    """One SQuAD-format LAReQA file -> (question rows, candidate rows); errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        articles = data["data"]
    except json.JSONDecodeError as error:
        raise DataError(f"malformed JSON in {path}: {error}") from error
    except (KeyError, TypeError) as error:
        raise DataError(f"{path} is not SQuAD format: no top-level 'data' list") from error
    questions, candidates = [], []
    try:
        _parse_articles(articles, path, lang, questions, candidates)
    except DataError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as error:
        raise DataError(f"{path} is not a LAReQA (SQuAD-format) file: {type(error).__name__} {error} while reading "
                        "its articles; replace it with the official file (delete it to download it again)") from None
    return questions, candidates


def _parse_articles(articles, path: Path, lang: str, questions: list[dict], candidates: list[dict]) -> None:
    """The rows of ``parse_squad_file``, appended to ``questions`` and ``candidates``."""
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            try:
                context = paragraph["context"]
                breaks = paragraph["sentence_breaks"]
                qas = paragraph["qas"]
            except KeyError as error:
                raise DataError(
                    f"{path}: article {a} paragraph {p} lacks {error}; LAReQA files carry "
                    "'context', 'sentence_breaks' and 'qas'") from error
            paragraph_id = f"{lang}:{a}:{p}"
            first = len(candidates)
            for s, (start, end) in enumerate(breaks):
                candidates.append({"cid": f"{paragraph_id}:{s}", "lang": lang,
                                   "paragraph_id": paragraph_id,
                                   "sentence": context[start:end], "paragraph": context})
            for qa in qas:
                answer_start = qa["answers"][0]["answer_start"]
                inside = [s for s, (start, end) in enumerate(breaks) if start <= answer_start < end]
                if not inside:
                    raise DataError(
                        f"{path}: question {qa['id']} has answer_start {answer_start}, outside "
                        f"every sentence span of its paragraph ({paragraph_id}); the file is "
                        "damaged or not a LAReQA file")
                questions.append({"qid": qa["id"], "lang": lang, "text": qa["question"],
                                  "answer": first + inside[0]})


def load_lareqa(dataset: str, languages: list[str] | None = None, candidate_context: str = "sentence",
                data_dir: str | os.PathLike | None = None, max_questions: int | None = None,
                verify: bool = True) -> RetrievalDataset:
    """Load XQuAD-R or MLQA-R: ``load_lareqa("xquad-r")``.

    ``max_questions`` keeps N question ids (taken in turn from each language's file order) and
    only the paragraphs that hold their answers, in every language: a small but complete
    benchmark for smoke tests (not comparable to published numbers).
    """
    if candidate_context not in CANDIDATE_CONTEXTS:
        raise ValueError(f"candidate_context {candidate_context!r}: expected one of {CANDIDATE_CONTEXTS}")
    languages = sorted(languages) if languages else lareqa_languages(dataset)
    question_rows, candidate_rows = [], []
    for lang in languages:
        q, c = parse_squad_file(lareqa_file(dataset, lang, data_dir, verify=verify), lang)
        offset = len(candidate_rows)
        for row in q:
            row["answer"] += offset
        question_rows += q
        candidate_rows += c
    questions = pd.DataFrame(question_rows)
    candidates = pd.DataFrame(candidate_rows)
    if max_questions is not None:
        questions, candidates = _subset(questions, candidates, max_questions)
    joiner = " " if candidate_context == "paragraph" else None
    candidates["text"] = (candidates.sentence + joiner + candidates.paragraph) if joiner else candidates.sentence
    return RetrievalDataset(dataset, questions, candidates, candidate_context, languages)


def _subset(questions: pd.DataFrame, candidates: pd.DataFrame, max_questions: int):
    # round-robin over languages, each taking its next id in file order: every language stays
    # represented even in MLQA-R, where an id exists in only 2 to 4 of the 7 languages
    queues = [list(dict.fromkeys(group.qid)) for _, group in questions.groupby("lang", sort=True)]
    keep_ids: dict[str, None] = {}
    while len(keep_ids) < max_questions and any(queues):
        for queue in queues:
            while queue and queue[0] in keep_ids:
                queue.pop(0)
            if queue and len(keep_ids) < max_questions:
                keep_ids[queue.pop(0)] = None
    questions = questions[questions.qid.isin(keep_ids)].reset_index(drop=True)
    paragraphs = set(candidates.paragraph_id.iloc[questions.answer])
    keep = candidates.paragraph_id.isin(paragraphs).to_numpy()
    new_index = np.cumsum(keep) - 1
    questions["answer"] = new_index[questions.answer.to_numpy()]
    return questions, candidates[keep].reset_index(drop=True)


@dataclass
class ParallelGroup:
    """One training example across languages: a question id with its query and positive passage
    in each language where it exists, optional hard negatives per language, and its source.

    Translations of one id are never put in the same batch (they would be false negatives).
    """

    qid: str
    source: str
    queries: dict[str, str]
    positives: dict[str, str]
    negatives: dict[str, list[str]] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        """Languages that have both a query and a positive passage."""
        return sorted(set(self.queries) & set(self.positives))
