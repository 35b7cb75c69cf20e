"""Training data for contrastive fine-tuning: every source becomes a list of ``ParallelGroup``.

A ``ParallelGroup`` is one question id with its query and positive passage in each language
where it exists, plus hard negatives per language. Sources:

* ``lareqa_groups("mlqa-r")``: MLQA-R or XQuAD-R questions -> their answer sentence per
  language; hard negatives are the other sentences of the answer's paragraph. This is the
  offline experiment: train on MLQA-R, evaluate zero-shot on XQuAD-R, and the reverse.
* ``load_mmarco_groups(["en", "de"], max_groups=10_000)``: mMARCO training triples, whose
  queries and passages are parallel across 14 languages by id.
* ``lib.translation.translate_groups(groups, ["de", "ar"])``: machine translation (NLLB or
  M2M-100) of English groups into more languages, as the paper did, cached and resumable.

Around them: ``split_by_qid`` (a validation split by question id, never by language),
``leakage_report`` (exact and near duplicates between training texts and an evaluation set),
``save_groups`` / ``load_groups`` (jsonl).

    groups = lareqa_groups("mlqa-r", max_negatives=3)
    train, validation = split_by_qid(groups, validation_fraction=0.05, seed=0)
    report = leakage_report(train, load_lareqa("xquad-r"))
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.data import CANDIDATE_CONTEXTS, DataError, ParallelGroup, RetrievalDataset, load_lareqa
from lib.io import atomic_path, cache_dir as default_cache_dir

# --------------------------------------------------------------------------------------------
# LAReQA (MLQA-R, XQuAD-R) -> groups


def lareqa_groups(dataset: str | RetrievalDataset, candidate_context: str = "sentence",
                  max_negatives: int = 3, data_dir: str | os.PathLike | None = None) -> list[ParallelGroup]:
    """One group per question id of an LAReQA benchmark: query -> answer sentence, per language.

    The positive is the sentence that holds ``answer_start`` (``lib.data`` semantics); with
    ``candidate_context="paragraph"`` it is that sentence followed by a space and its paragraph,
    the text ``load_lareqa`` encodes as a candidate. Hard negatives are the other sentences of
    the same paragraph in the same language (same context rule), nearest to the answer first
    (ties: the earlier sentence), without repeats and never equal to the positive; at most
    ``max_negatives``, and a language without any gets no entry in ``negatives``.
    ``source`` is the dataset's name. Groups come in order of first appearance.

        groups = lareqa_groups("mlqa-r")           # 1148 groups, 2 to 4 languages each
        groups[0].positives["en"]                  # the English answer sentence
        groups[0].negatives["en"]                  # up to 3 sentences of its paragraph
    """
    if candidate_context not in CANDIDATE_CONTEXTS:
        raise ValueError(f"candidate_context {candidate_context!r}: expected one of {CANDIDATE_CONTEXTS}")
    if not isinstance(max_negatives, (int, np.integer)) or max_negatives < 0:
        raise ValueError(f"max_negatives {max_negatives!r}: expected an integer >= 0")
    if isinstance(dataset, RetrievalDataset):
        benchmark = dataset
    elif isinstance(dataset, str):
        benchmark = load_lareqa(dataset, candidate_context=candidate_context, data_dir=data_dir)
    else:
        raise TypeError(f"dataset {dataset!r}: expected a name ('mlqa-r', 'xquad-r') or a RetrievalDataset")

    candidates = benchmark.candidates
    sentences = candidates.sentence.tolist()
    paragraphs = candidates.paragraph.tolist()
    paragraph_ids = candidates.paragraph_id.tolist()
    # The text rule of load_lareqa, applied here so that a dataset loaded either way gives the
    # candidate_context asked for.
    texts = sentences if candidate_context == "sentence" else [
        f"{sentence} {paragraph}" for sentence, paragraph in zip(sentences, paragraphs)]
    rows_of_paragraph: dict[str, list[int]] = defaultdict(list)
    for row, paragraph_id in enumerate(paragraph_ids):
        rows_of_paragraph[paragraph_id].append(row)

    groups: dict[str, ParallelGroup] = {}
    questions = benchmark.questions
    for qid, lang, question, answer in zip(questions.qid, questions.lang, questions.text, questions.answer):
        answer = int(answer)
        group = groups.setdefault(qid, ParallelGroup(qid=qid, source=benchmark.name, queries={}, positives={}))
        if lang in group.queries:
            raise DataError(f"{benchmark.name}: question {qid} appears twice in language {lang}; "
                            "each (question id, language) must be unique")
        group.queries[lang] = question
        group.positives[lang] = texts[answer]
        siblings = sorted((row for row in rows_of_paragraph[paragraph_ids[answer]] if row != answer),
                          key=lambda row: (abs(row - answer), row))
        negatives: list[str] = []
        for row in siblings:
            if len(negatives) >= max_negatives:
                break
            if sentences[row] == sentences[answer] or texts[row] in negatives:
                continue
            negatives.append(texts[row])
        if negatives:
            group.negatives[lang] = negatives
    return list(groups.values())


def language_counts(groups: Sequence[ParallelGroup]) -> pd.DataFrame:
    """Per language: groups (query and positive there), hard negatives, and groups by source.

        language_counts(groups)   # index lang; columns groups, negatives, <source>...
    """
    rows = []
    for group in groups:
        for lang in group.languages:
            rows.append({"lang": lang, "source": group.source,
                         "negatives": len(group.negatives.get(lang, []))})
    if not rows:
        return pd.DataFrame(columns=["groups", "negatives"]).rename_axis("lang")
    table = pd.DataFrame(rows)
    counts = table.groupby("lang").agg(groups=("source", "size"), negatives=("negatives", "sum"))
    by_source = table.groupby(["lang", "source"]).size().unstack(fill_value=0)
    if by_source.shape[1] > 1:
        counts = counts.join(by_source)
    return counts


def languages_per_group(groups: Sequence[ParallelGroup]) -> dict[int, int]:
    """Number of languages -> number of groups with that many (MLQA-R: {2: 65, 3: 263, 4: 820})."""
    return dict(sorted(Counter(len(group.languages) for group in groups).items()))


# --------------------------------------------------------------------------------------------
# mMARCO -> groups

MMARCO_REPO = "unicamp-dl/mmarco"
# A commit of the dataset repo with the data/google/... layout below, as pinned by a public
# download script (MMARCO_REV in a third-party acquisition script); verify it online before a
# long run, and change it here only.
MMARCO_REVISION = "6d039c4638c0ba3e46a9cb7b498b145e7edc6230"
# File layout of huggingface.co/datasets/unicamp-dl/mmarco, as used by the repo's own loading
# script mmarco.py (_BASE_URLS: data/google/collections/, data/google/queries/train/,
# data/triples.train.ids.small.tsv; LANGUAGES: arabic ... vietnamese) and by ir_datasets'
# mmarco v2 (the same paths, with md5 and sizes: collections 2.7 to 7.6 GB, triples 905 MB).
MMARCO_TRIPLES = "data/triples.train.ids.small.tsv"
MMARCO_LANGUAGES = {
    "ar": "arabic", "de": "german", "en": "english", "es": "spanish", "fr": "french",
    "hi": "hindi", "id": "indonesian", "it": "italian", "ja": "japanese", "nl": "dutch",
    "pt": "portuguese", "ru": "russian", "vi": "vietnamese", "zh": "chinese",
}


def mmarco_queries_file(lang: str) -> str:
    """Repo path of the train queries of one language (``id<TAB>text`` per line)."""
    return f"data/google/queries/train/{_mmarco_name(lang)}_queries.train.tsv"


def mmarco_collection_file(lang: str) -> str:
    """Repo path of the passage collection of one language (``id<TAB>text`` per line)."""
    return f"data/google/collections/{_mmarco_name(lang)}_collection.tsv"


def _mmarco_name(lang: str) -> str:
    if lang not in MMARCO_LANGUAGES:
        raise DataError(f"mMARCO has no language {lang!r}; it has {sorted(MMARCO_LANGUAGES)} (ISO 639-1 codes)")
    return MMARCO_LANGUAGES[lang]


def mmarco_file(relative: str, local_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, revision: str = MMARCO_REVISION) -> Path:
    """A file of the mMARCO dataset repo: ``local_dir/relative`` if given, else downloaded once
    with ``huggingface_hub.hf_hub_download`` at ``revision`` into ``cache_dir`` (default
    ``<cache>/huggingface``)."""
    if local_dir is not None:
        path = Path(local_dir) / relative
        if not path.is_file():
            raise DataError(f"missing file {path}: local_dir={local_dir} must mirror the layout of the "
                            f"{MMARCO_REPO} dataset repo ({relative})")
        return path
    from huggingface_hub import hf_hub_download

    target = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "huggingface"
    try:
        return Path(hf_hub_download(repo_id=MMARCO_REPO, repo_type="dataset", filename=relative,
                                    revision=revision, cache_dir=str(target)))
    except Exception as error:  # network, HTTP and missing-file errors alike
        raise DataError(
            f"could not download {relative} of {MMARCO_REPO}@{revision} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}); without network, pass "
            "local_dir=<folder with the same layout>") from None


def _read_id_texts(path: Path, wanted: set[str], what: str) -> dict[str, str]:
    """``id<TAB>text`` lines -> {id: text} for the ids in ``wanted``; stops once all are found."""
    found: dict[str, str] = {}
    wanted_bytes = {key.encode() for key in wanted}
    if not wanted_bytes:
        return found
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"mMARCO {what}", leave=False) as progress:
        pending = 0
        for line_number, raw in enumerate(handle, 1):
            pending += len(raw)
            if pending > 1 << 22:
                progress.update(pending)
                pending = 0
            key, tab, rest = raw.partition(b"\t")
            if key in wanted_bytes:
                if not tab:
                    raise DataError(f"{path}:{line_number}: expected 'id<TAB>text'")
                found[key.decode()] = rest.decode("utf-8").strip()
                if len(found) == len(wanted_bytes):
                    break
        progress.update(pending)
    return found


def load_mmarco_groups(languages: Sequence[str], max_groups: int, cache_dir: str | os.PathLike | None = None,
                       revision: str = MMARCO_REVISION, local_dir: str | os.PathLike | None = None,
                       max_negatives: int = 3) -> list[ParallelGroup]:
    """The first ``max_groups`` query ids of mMARCO's training triples, parallel in ``languages``.

    ``triples.train.ids.small.tsv`` (``query id<TAB>positive id<TAB>negative id``) is read line by
    line and stops at the first new query id past ``max_groups``; a query keeps its first
    positive and the distinct negatives of the triples read so far (at most ``max_negatives``).
    Then each language's train queries and collection are scanned once, keeping only the
    needed ids. A language where a text is missing is left out of that group. Ids are the
    same across languages (the translations are parallel by id); ``qid`` is ``mmarco:<id>``.

        groups = load_mmarco_groups(["en", "de", "ar"], max_groups=10_000)
        groups = load_mmarco_groups(["en"], 100, local_dir="mirror/")   # offline, same layout
    """
    if not languages:
        raise ValueError("languages is empty: pass ISO codes, e.g. ['en', 'de']")
    for lang in languages:
        _mmarco_name(lang)
    if not isinstance(max_groups, (int, np.integer)) or max_groups < 1:
        raise ValueError(f"max_groups {max_groups!r}: expected an integer >= 1")
    fetch = lambda relative: mmarco_file(relative, local_dir, cache_dir, revision)  # noqa: E731

    triples = fetch(MMARCO_TRIPLES)
    positive_of: dict[str, str] = {}
    negatives_of: dict[str, list[str]] = defaultdict(list)
    with open(triples, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise DataError(f"{triples}:{line_number}: expected 'query id<TAB>positive id<TAB>negative id', "
                                f"got {line[:80]!r}")
            query_id, positive_id, negative_id = fields
            if query_id not in positive_of:
                if len(positive_of) >= max_groups:
                    break
                positive_of[query_id] = positive_id
            negatives = negatives_of[query_id]
            if (len(negatives) < max_negatives and negative_id not in negatives
                    and negative_id != positive_of[query_id]):
                negatives.append(negative_id)

    passage_ids = set(positive_of.values()) | {pid for ids in negatives_of.values() for pid in ids}
    queries: dict[str, dict[str, str]] = {}
    passages: dict[str, dict[str, str]] = {}
    for lang in languages:
        queries[lang] = _read_id_texts(fetch(mmarco_queries_file(lang)), set(positive_of), f"{lang} queries")
        passages[lang] = _read_id_texts(fetch(mmarco_collection_file(lang)), passage_ids, f"{lang} passages")

    groups = []
    for query_id, positive_id in positive_of.items():
        group = ParallelGroup(qid=f"mmarco:{query_id}", source="mmarco", queries={}, positives={})
        for lang in languages:
            query, positive = queries[lang].get(query_id), passages[lang].get(positive_id)
            if not query or not positive:
                continue
            group.queries[lang] = query
            group.positives[lang] = positive
            negatives = [passages[lang][pid] for pid in negatives_of[query_id] if pid in passages[lang]]
            if negatives:
                group.negatives[lang] = negatives
        if group.languages:
            groups.append(group)
    return groups


# --------------------------------------------------------------------------------------------
# Leakage between training texts and an evaluation set

LEAKAGE_KINDS = ("question", "passage")


def normalize_text(text: str) -> str:
    """Unicode NFKC, casefold, runs of whitespace -> one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _training_texts(groups: Iterable[ParallelGroup]) -> dict[tuple[str, str], list[str]]:
    texts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for group in groups:
        for lang, query in group.queries.items():
            texts["question", lang].append(query)
        for lang, positive in group.positives.items():
            texts["passage", lang].append(positive)
        for lang, negatives in group.negatives.items():
            texts["passage", lang].extend(negatives)
    return texts


def _nearest(eval_texts: list[str], train_texts: list[str], max_cells: int = 4_000_000):
    """Character 3-5-gram TF-IDF cosine of each eval text to its nearest train text: (sim, index)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=False,
                                 sublinear_tf=True, dtype=np.float32)
    matrix = vectorizer.fit_transform(eval_texts + train_texts)
    eval_matrix = matrix[:len(eval_texts)]
    train_matrix_t = matrix[len(eval_texts):].T.tocsc()
    best = np.zeros(len(eval_texts), dtype=np.float32)
    best_index = np.zeros(len(eval_texts), dtype=np.int64)
    chunk = max(1, max_cells // max(1, len(train_texts)))
    for start in range(0, len(eval_texts), chunk):
        similarity = (eval_matrix[start:start + chunk] @ train_matrix_t).tocsr()
        best[start:start + chunk] = similarity.max(axis=1).toarray().ravel()
        best_index[start:start + chunk] = np.asarray(similarity.argmax(axis=1)).ravel()
    return best, best_index


def leakage_report(train_groups: Sequence[ParallelGroup], eval_dataset: RetrievalDataset,
                   near_threshold: float = 0.9, n_examples: int = 10, return_examples: bool = False):
    """Exact and near duplicates between training texts and an evaluation set, per language and kind.

    For each evaluation language and kind (``question``: ``eval_dataset.questions.text`` against
    the groups' queries; ``passage``: ``eval_dataset.candidates.text`` against positives and
    negatives), every evaluation row is compared with the training texts of the same language:
    * exact: equal after ``normalize_text`` (NFKC, casefold, whitespace);
    * near: cosine >= ``near_threshold`` between character 3-5-gram TF-IDF vectors (sklearn
      ``char_wb``, sublinear tf, fitted on both sides) of the normalised texts; exact duplicates
      count as near too.
    Shares are over evaluation rows; ``lang == "all"`` rows sum the languages. Translations are
    not detected (same-language comparison only).

    Columns: kind, lang, n_eval (evaluation rows), n_train (distinct normalised training texts),
    exact, near (evaluation rows with a duplicate), exact_share, near_share, near_threshold.
    With ``return_examples=True`` also returns, per kind, the ``n_examples`` evaluation texts
    most similar to a training text (kind, lang, exact, similarity, eval_text, train_text).

        report = leakage_report(lareqa_groups("mlqa-r"), load_lareqa("xquad-r"))
        report, examples = leakage_report(groups, dataset, return_examples=True)
    """
    if not 0 < near_threshold <= 1:
        raise ValueError(f"near_threshold {near_threshold!r}: expected a cosine in (0, 1]")
    training = _training_texts(train_groups)
    evaluation = {
        "question": eval_dataset.questions.groupby("lang").text.apply(list).to_dict(),
        "passage": eval_dataset.candidates.groupby("lang").text.apply(list).to_dict(),
    }
    rows, examples = [], []
    for kind in LEAKAGE_KINDS:
        for lang in eval_dataset.languages:
            eval_originals = evaluation[kind].get(lang, [])
            eval_rows = [normalize_text(text) for text in eval_originals]
            eval_first = dict(zip(reversed(eval_rows), reversed(eval_originals)))  # first original per text
            train_first: dict[str, str] = {}
            for text in training.get((kind, lang), []):
                train_first.setdefault(normalize_text(text), text)
            train_distinct = list(train_first)
            eval_distinct = list(dict.fromkeys(eval_rows))
            if train_distinct and eval_distinct:
                similarity, nearest = _nearest(eval_distinct, train_distinct)
            else:
                similarity = np.zeros(len(eval_distinct), dtype=np.float32)
                nearest = np.zeros(len(eval_distinct), dtype=np.int64)
            is_exact = {text: text in train_first for text in eval_distinct}
            # an exact duplicate is near by definition (its TF-IDF cosine can round a hair below 1)
            is_near = {text: is_exact[text] or bool(sim >= near_threshold)
                       for text, sim in zip(eval_distinct, similarity)}
            rows.append({"kind": kind, "lang": lang, "n_eval": len(eval_rows), "n_train": len(train_distinct),
                         "exact": sum(is_exact[text] for text in eval_rows),
                         "near": sum(is_near[text] for text in eval_rows)})
            if not train_distinct:
                continue
            for position, text in enumerate(eval_distinct):
                match = text if is_exact[text] else train_distinct[nearest[position]]
                examples.append({"kind": kind, "lang": lang, "exact": is_exact[text],
                                 "similarity": 1.0 if is_exact[text] else float(similarity[position]),
                                 "eval_text": eval_first[text], "train_text": train_first[match]})
    counts = ["n_eval", "n_train", "exact", "near"]
    report = pd.DataFrame(rows, columns=["kind", "lang", *counts])
    totals = report.groupby("kind", sort=False)[counts].sum().reset_index()
    totals.insert(1, "lang", "all")
    report = pd.concat([report, totals], ignore_index=True)
    evaluated = report.n_eval.where(report.n_eval > 0)
    report["exact_share"] = (report.exact / evaluated).fillna(0.0)
    report["near_share"] = (report.near / evaluated).fillna(0.0)
    report["near_threshold"] = near_threshold
    if not return_examples:
        return report
    example_table = pd.DataFrame(examples, columns=["kind", "lang", "exact", "similarity", "eval_text", "train_text"])
    example_table = (example_table.sort_values(["kind", "similarity"], ascending=[True, False], kind="stable")
                     .groupby("kind", sort=False).head(n_examples).reset_index(drop=True))
    return report, example_table


# --------------------------------------------------------------------------------------------
# Split and storage


def split_by_qid(groups: Sequence[ParallelGroup], validation_fraction: float = 0.05,
                 seed: int = 0) -> tuple[list[ParallelGroup], list[ParallelGroup]]:
    """(train, validation): ``round(fraction * #qids)`` question ids (at least one when the
    fraction is positive and there are two or more ids) drawn with ``np.random.default_rng(seed)``
    from the sorted distinct ids. All groups of an id, and so all its languages, land on the
    same side: no translation of a validation question is trained on. Order is kept.

        train, validation = split_by_qid(groups, validation_fraction=0.05, seed=0)
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction {validation_fraction!r}: expected a number in [0, 1)")
    qids = sorted({group.qid for group in groups})
    n_validation = int(round(validation_fraction * len(qids)))
    if validation_fraction > 0 and n_validation == 0 and len(qids) > 1:
        n_validation = 1
    order = np.random.default_rng(seed).permutation(len(qids))
    validation_ids = {qids[i] for i in order[:n_validation]}
    train = [group for group in groups if group.qid not in validation_ids]
    validation = [group for group in groups if group.qid in validation_ids]
    return train, validation


def save_groups(path: str | os.PathLike, groups: Iterable[ParallelGroup]) -> Path:
    """Write groups as jsonl (one ``asdict(group)`` per line), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for group in groups:
            handle.write(json.dumps(asdict(group), ensure_ascii=False) + "\n")
    return path


def load_groups(path: str | os.PathLike) -> list[ParallelGroup]:
    """Read groups written by ``save_groups``; a bad line is reported by file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing groups file {path}; write it with save_groups(path, groups)")
    groups = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                groups.append(ParallelGroup(qid=record["qid"], source=record["source"],
                                            queries=dict(record["queries"]), positives=dict(record["positives"]),
                                            negatives={lang: list(texts) for lang, texts
                                                       in record.get("negatives", {}).items()}))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
                raise DataError(f"{path}:{line_number}: not a ParallelGroup record ({error}); "
                                "expected keys qid, source, queries, positives, negatives") from error
    return groups
