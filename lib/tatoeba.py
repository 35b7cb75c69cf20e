"""Tatoeba sentence retrieval (XTREME, XTREME-R): accuracy of nearest-neighbour translation search.

Data: LASER's Tatoeba test set (facebookresearch/LASER ``data/tatoeba/v1``, 112 languages), one
file pair per language ``tatoeba.XXX-eng.XXX`` / ``tatoeba.XXX-eng.eng``, up to 1000 lines each;
line i of one translates line i of the other. Lines are split on ``\\n`` only and stripped (as
XTREME's ``utils_preprocess.py`` reads them).

Task, per language XXX with n pairs and cosine similarity s(x, e) of normalised embeddings:

    acc(XXX -> eng) = (1/n) * sum_i [ argmax_j s(x_i, e_j) == i ]     (XTREME's Tatoeba score)
    acc(eng -> XXX) = (1/n) * sum_i [ argmax_j s(e_i, x_j) == i ]

A prediction counts only if it is the aligned line (index match, as XTREME and LASER score it):
a duplicate sentence elsewhere in the file counts as an error.

Language sets for the averages (ISO 639-3 codes as in the file names):

* ``XTREME_TATOEBA``: the 36 languages of XTREME's Tatoeba task (google-research/xtreme
  ``evaluate.py``, ``TASK2LANGS["tatoeba"]``);
* ``XTREME_R_TATOEBA``: XTREME-R's 41: those 36 plus az, lt, pl, uk, ro (google-research/xtreme
  ``utils_preprocess.py``, ``tatoeba_preprocess``, whose language table was extended with
  ``aze, lit, pol, ukr, ron`` for XTREME-R's new languages);
* ``XQUAD_R_TATOEBA``: the 10 non-English XQuAD-R languages (ar de el es hi ru th tr vi zh).

Where the files come from: the ``data_dir`` argument, else ``TATOEBA_DIR``, else a cache filled
by downloading the files at the pinned LASER commit. Every file is checked against its pinned
sha256 (``lib.tatoeba_checksums``) unless ``verify=False``; the sha256 of what was read is
recorded with the results either way.

Encoding: both sides use the backbone's *query* side by default (E5 models take "query: " for
symmetric tasks such as bitext mining); the unique sentences of all languages are encoded once,
sorted by length, in resumable shards (``lib.corpus.encode_corpus``).

    evaluation = evaluate_tatoeba(model, languages=["deu", "fra"], data_dir="shared/data/tatoeba/v1")
    evaluation.per_language[["acc_xx_to_eng", "acc_eng_to_xx"]]
    evaluation.summary["tatoeba_xtreme-r-xx2eng_accuracy"]

Summary keys (``lib.results``' scheme): ``tatoeba_{set}-{direction}_accuracy`` for the sets all,
xtreme, xtreme-r, xquad-r and the directions xx2eng, eng2xx and mean (of the two), and
``tatoeba_{set}_n_languages``; the primary metric is XTREME-R's ``tatoeba_xtreme-r-xx2eng_accuracy``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from lib.backbones import BackboneError, load_model
from lib.cli import check_cli_arguments, run_cli
from lib.corpus import encode_corpus
from lib.data import DataError
from lib.encode import model_identity
from lib.mteb_results import bitext_scores
from lib.run_files import TATOEBA_RUN_DEPTH, aligned_runs
from lib.io import atomic_path, cache_dir, fingerprint, outputs_dir, run_dir, sha256_file, write_text
from lib.results import (Evaluation, EvaluationRequest, metric_key, parse_metric_key, register_evaluator,
                         write_evaluation)
from lib.tatoeba_checksums import TATOEBA_SHA256

TATOEBA_COMMIT = "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821"
RAW_URL = "https://raw.githubusercontent.com/facebookresearch/LASER/{commit}/data/tatoeba/v1/{name}"

# ISO 639-1 -> the Tatoeba file code (XTREME's utils_preprocess.py mapping)
ISO1_TO_TATOEBA = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa",
    "et": "est", "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin",
    "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz",
    "ko": "kor", "ml": "mal", "mr": "mar", "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh",
    "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl", "tr": "tur", "ur": "urd", "vi": "vie",
    "zh": "cmn", "az": "aze", "lt": "lit", "pl": "pol", "uk": "ukr", "ro": "ron",
}
TATOEBA_TO_ISO1 = {v: k for k, v in ISO1_TO_TATOEBA.items()}
XTREME_TATOEBA = [ISO1_TO_TATOEBA[c] for c in (
    "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw "
    "zh kk tr et fi hu").split()]
XTREME_R_TATOEBA = XTREME_TATOEBA + [ISO1_TO_TATOEBA[c] for c in ("az", "lt", "pl", "uk", "ro")]
XQUAD_R_TATOEBA = [ISO1_TO_TATOEBA[c] for c in "ar de el es hi ru th tr vi zh".split()]
LANGUAGE_SETS = {"all": None, "xtreme": XTREME_TATOEBA, "xtreme_r": XTREME_R_TATOEBA,
                 "xquad_r": XQUAD_R_TATOEBA}
PINNED_LANGUAGES = sorted({name.split(".")[1].split("-")[0] for name in TATOEBA_SHA256})


def tatoeba_code(lang: str) -> str:
    """The file code of a language: ``"de"`` or ``"deu"`` -> ``"deu"``."""
    code = ISO1_TO_TATOEBA.get(lang, lang)
    if len(code) != 3 or not code.isalpha():
        raise DataError(f"Tatoeba language {lang!r}: expected a 3-letter file code (e.g. 'deu') or one of "
                        f"the ISO 639-1 codes {sorted(ISO1_TO_TATOEBA)}")
    return code


def file_names(lang: str) -> tuple[str, str]:
    """``(non-English file, English file)`` names of one language."""
    code = tatoeba_code(lang)
    return f"tatoeba.{code}-eng.{code}", f"tatoeba.{code}-eng.eng"


def tatoeba_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local folder to read: ``data_dir``, else ``TATOEBA_DIR``, else ``None`` (download)."""
    root = data_dir if data_dir is not None else os.environ.get("TATOEBA_DIR")
    return Path(root) if root else None


def available_languages(data_dir: str | os.PathLike | None = None) -> list[str]:
    """Languages with both files in the local folder, or every pinned language when downloading."""
    root = tatoeba_root(data_dir)
    if root is None:
        return list(PINNED_LANGUAGES)
    if not root.is_dir():
        raise DataError(f"Tatoeba folder {root} does not exist: pass data_dir= or set TATOEBA_DIR to the "
                        "folder holding tatoeba.XXX-eng.{XXX,eng}, or unset both to download them")
    found = []
    for path in sorted(root.glob("tatoeba.*-eng.eng")):
        code = path.name.split(".")[1].split("-")[0]
        if (root / f"tatoeba.{code}-eng.{code}").is_file():
            found.append(code)
    if not found:
        raise DataError(f"no Tatoeba files (tatoeba.XXX-eng.XXX and .eng) in {root}")
    return found


def tatoeba_file(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of one file (``tatoeba.deu-eng.deu``): from the local folder, else the download cache."""
    root = tatoeba_root(data_dir)
    if root is not None:
        path = root / name
        if not path.is_file():
            raise DataError(f"missing file {path}: the Tatoeba folder (data_dir or TATOEBA_DIR={root}) must "
                            f"hold {name}; pick languages from available_languages(), or unset TATOEBA_DIR "
                            "to download the pinned files")
        return path
    path = cache_dir() / "tatoeba" / TATOEBA_COMMIT / name
    if not path.is_file():
        if not download:
            raise DataError(f"missing file {path} and downloading is switched off")
        if name not in TATOEBA_SHA256:
            raise DataError(f"{name} is not a file of the pinned Tatoeba set ({len(PINNED_LANGUAGES)} languages)")
        url = RAW_URL.format(commit=TATOEBA_COMMIT, name=name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, atomic_path(path) as tmp:
                tmp.write_bytes(response.read())
        except (urllib.error.URLError, OSError) as error:
            raise DataError(f"could not download {url} ({error}); without network, set TATOEBA_DIR to a folder "
                            "holding the tatoeba.XXX-eng.{XXX,eng} files") from error
    return path


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 file, split on ``\\n`` only (not on U+2028 and the like) and stripped."""
    text = Path(path).read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


@dataclass
class TatoebaPair:
    """One language's test set: ``sentences[i]`` translates ``english[i]``."""

    lang: str
    sentences: list[str]
    english: list[str]
    sha256: dict[str, str]
    pinned: bool

    @property
    def iso(self) -> str | None:
        return TATOEBA_TO_ISO1.get(self.lang)

    def __len__(self) -> int:
        return len(self.sentences)


def load_tatoeba_pair(lang: str, data_dir: str | os.PathLike | None = None, verify: bool = True,
                      download: bool = True) -> TatoebaPair:
    """Read one language's two files, check line counts and (``verify``) the pinned sha256."""
    code = tatoeba_code(lang)
    paths = [tatoeba_file(name, data_dir, download) for name in file_names(code)]
    hashes = {path.name: sha256_file(path) for path in paths}
    pinned = all(TATOEBA_SHA256.get(name) == digest for name, digest in hashes.items())
    if verify and not pinned:
        bad = {n: d for n, d in hashes.items() if TATOEBA_SHA256.get(n) != d}
        raise DataError(f"checksum mismatch for {sorted(bad)} (sha256 {bad}); expected the files of LASER commit "
                        f"{TATOEBA_COMMIT}: replace them, or evaluate other files on purpose with "
                        "python -m lib.tatoeba --no-verify (verify=False in Python)")
    sentences, english = (read_lines(p) for p in paths)
    if len(sentences) != len(english):
        raise DataError(f"unequal line counts for {code}: {paths[0]} has {len(sentences)} lines, {paths[1]} has "
                        f"{len(english)}; line i of one must translate line i of the other")
    if not sentences:
        raise DataError(f"{paths[0]} is empty")
    return TatoebaPair(code, sentences, english, hashes, pinned)


def load_tatoeba(languages: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None,
                 verify: bool = True, download: bool = True) -> dict[str, TatoebaPair]:
    """Every requested language (default: all available), keyed by file code."""
    codes = available_languages(data_dir) if languages is None else [tatoeba_code(l) for l in languages]
    if not codes:
        raise DataError("no Tatoeba language requested")
    return {code: load_tatoeba_pair(code, data_dir, verify, download) for code in codes}


def retrieval_accuracy(sentence_embeddings: np.ndarray, english_embeddings: np.ndarray) -> tuple[float, float]:
    """``(acc xx->eng, acc eng->xx)`` of nearest-neighbour search over aligned rows (cosine)."""
    if sentence_embeddings.shape != english_embeddings.shape:
        raise ValueError(f"embeddings of {sentence_embeddings.shape} and {english_embeddings.shape} rows: "
                         "both sides need one row per aligned line")
    similarity = sentence_embeddings @ english_embeddings.T
    gold = np.arange(len(similarity))
    return float(np.mean(similarity.argmax(axis=1) == gold)), float(np.mean(similarity.argmax(axis=0) == gold))


DIRECTIONS = {"xx2eng": "xx_to_eng", "eng2xx": "eng_to_xx", "mean": "mean"}   # key part -> pre-scheme name


def tatoeba_key(language_set: str, direction: str) -> str:
    """``tatoeba_{set}-{direction}_accuracy`` (``"xtreme_r", "xx2eng"`` -> ``tatoeba_xtreme-r-xx2eng_accuracy``)."""
    return metric_key("tatoeba", f"{language_set.replace('_', '-')}-{direction}", "accuracy")


def tatoeba_count_key(language_set: str) -> str:
    return metric_key("tatoeba", language_set.replace("_", "-"), "n_languages")


def tatoeba_summary_keys(dataset: str = "tatoeba") -> list[str]:
    return [key for name in LANGUAGE_SETS for key in
            (tatoeba_count_key(name), *(tatoeba_key(name, direction) for direction in DIRECTIONS))]


def tatoeba_legacy_key(key: str) -> str:
    """``tatoeba_xtreme-r-xx2eng_accuracy`` -> ``tatoeba_xtreme_r_xx_to_eng`` (before the key scheme)."""
    _, setting, metric = parse_metric_key(key)
    if metric == "n_languages":
        return f"tatoeba_{setting.replace('-', '_')}_n_languages"
    language_set, _, direction = setting.rpartition("-")
    return f"tatoeba_{language_set.replace('-', '_')}_{DIRECTIONS[direction]}"


def set_averages(per_language: pd.DataFrame) -> dict[str, float]:
    """Mean accuracies over each language set, with how many of its languages were evaluated."""
    summary: dict[str, float] = {}
    for name, members in LANGUAGE_SETS.items():
        rows = per_language if members is None else per_language[per_language.index.isin(members)]
        summary[tatoeba_count_key(name)] = len(rows)
        if len(rows):
            summary[tatoeba_key(name, "xx2eng")] = float(rows.acc_xx_to_eng.mean())
            summary[tatoeba_key(name, "eng2xx")] = float(rows.acc_eng_to_xx.mean())
            summary[tatoeba_key(name, "mean")] = float(rows[["acc_xx_to_eng", "acc_eng_to_xx"]].mean(axis=1).mean())
    return summary


def evaluate_tatoeba(model, languages: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None,
                     batch_size: int = 64, side: str = "query", verify: bool = True,
                     shard_size: int = 4096, work_dir: str | os.PathLike | None = None,
                     run_depth: int = TATOEBA_RUN_DEPTH) -> Evaluation:
    """Tatoeba accuracy in both directions for every requested language -> ``lib.results.Evaluation``.

    ``summary`` holds ``tatoeba_{all,xtreme,xtreme-r,xquad-r}-{xx2eng,eng2xx,mean}_accuracy`` and
    ``tatoeba_{set}_n_languages``;
    ``per_language`` one row per language (file code index): iso code, pairs, both accuracies,
    set membership and the sha256 of the two files read. Embeddings go to resumable shards under
    ``work_dir`` (default ``outputs/cache/tatoeba/<backbone>-<key>``). ``run_files``: TREC runs
    ``xx2eng`` / ``eng2xx`` with the top ``run_depth`` lines of every search (``lib.run_files``; 0: none).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pairs = load_tatoeba(languages, data_dir, verify)
    timings["load_s"] = time.perf_counter() - start

    texts = sorted({t for pair in pairs.values() for t in pair.sentences + pair.english}, key=lambda t: (len(t), t))
    if work_dir is None:
        key = fingerprint(model_identity(model.backbone), side, texts)
        work_dir = outputs_dir() / "cache" / "tatoeba" / f"{model.backbone.name}-{side}-{key}"
    start = time.perf_counter()
    store = encode_corpus(model, texts, work_dir, side=side, shard_size=shard_size, batch_size=batch_size,
                          n_texts=len(texts))
    embeddings = store.embeddings()
    timings["encode_s"] = time.perf_counter() - start
    timings["n_unique_sentences"] = float(len(texts))
    row_of = {text: row for row, text in enumerate(texts)}

    start = time.perf_counter()
    rows, aligned = [], {}
    for code, pair in pairs.items():
        xx = embeddings[[row_of[t] for t in pair.sentences]]
        en = embeddings[[row_of[t] for t in pair.english]]
        aligned[code] = (xx, en)
        xx_to_eng, eng_to_xx = retrieval_accuracy(xx, en)
        mteb = bitext_scores((xx @ en.T).argmax(axis=1))        # mteb's Tatoeba metrics, xx -> eng
        names = file_names(code)
        rows.append({
            "lang": code, "iso": pair.iso, "n_pairs": len(pair), "acc_xx_to_eng": xx_to_eng,
            "acc_eng_to_xx": eng_to_xx, **{f"mteb_{name}": mteb[name] for name in ("precision", "recall", "f1")}, "in_xtreme": code in XTREME_TATOEBA,
            "in_xtreme_r": code in XTREME_R_TATOEBA, "in_xquad_r": code in XQUAD_R_TATOEBA,
            "sha256_xx": pair.sha256[names[0]], "sha256_eng": pair.sha256[names[1]], "pinned": pair.pinned,
        })
    per_language = pd.DataFrame(rows).set_index("lang").sort_index()
    timings["search_s"] = time.perf_counter() - start
    run_files = aligned_runs(aligned, run_depth) if run_depth else []
    return Evaluation(set_averages(per_language), per_language, timings=timings, run_files=run_files)


# what a grid's report shows of each run (lib.gather, lib.report): XTREME-R's set, then the others' means
REPORT_METRICS = ("tatoeba_xtreme-r-xx2eng_accuracy", "tatoeba_xtreme-r-eng2xx_accuracy", "tatoeba_xquad-r-mean_accuracy",
                  "tatoeba_all-mean_accuracy")


@register_evaluator("tatoeba", report_metrics=REPORT_METRICS, primary_metric=REPORT_METRICS[0],
                    summary_keys=tatoeba_summary_keys, legacy_key=tatoeba_legacy_key)
def _evaluate_tatoeba_for_run(model, request: EvaluationRequest) -> tuple[Evaluation, dict]:
    """``lib.evaluate.run_evaluation``'s Tatoeba: exact search, every available language unless ``languages``."""
    evaluation = evaluate_tatoeba(model, languages=request.languages, data_dir=request.data_dir,
                                  batch_size=request.batch_size, run_depth=min(request.run_depth, TATOEBA_RUN_DEPTH))
    return evaluation, {"languages": request.languages,
                        "dataset_revision": f"facebookresearch/LASER@{TATOEBA_COMMIT} data/tatoeba/v1",
                        "index": "exact (lib.tatoeba)"}


def summary_table(per_language: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per language set and direction, the table a report shows."""
    rows = []
    for name, members in LANGUAGE_SETS.items():
        part = per_language if members is None else per_language[per_language.index.isin(members)]
        if len(part):
            rows.append({"languages": name, "n": len(part),
                         "xx->eng": 100 * part.acc_xx_to_eng.mean(), "eng->xx": 100 * part.acc_eng_to_xx.mean()})
    return pd.DataFrame(rows).set_index("languages")


def main(argv: list[str] | None = None) -> None:
    """``python -m lib.tatoeba --backbone me5-small-q4 --run tatoeba-me5-small-q4``: writes
    ``outputs/<run>/{config,versions,metrics}.json`` and ``per_language.csv``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--run", default=None)
    parser.add_argument("--languages", nargs="*", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--side", default="query", choices=("query", "passage"))
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args(argv)
    check_cli_arguments(args.run, args.batch_size)

    start = time.perf_counter()
    model = load_model(args.backbone)
    evaluation = evaluate_tatoeba(model, args.languages, args.data_dir, args.batch_size, args.side,
                                  verify=not args.no_verify)
    evaluation.timings["wall_s"] = time.perf_counter() - start
    run = run_dir(args.run or f"tatoeba-{model.backbone.name}")
    config = {"dataset": "tatoeba", "backbone": model.backbone.as_dict(), "languages": args.languages,
              "data_dir": str(tatoeba_root(args.data_dir)), "commit": TATOEBA_COMMIT, "side": args.side,
              "batch_size": args.batch_size, "verify": not args.no_verify, "device": str(model.device)}
    write_evaluation(run, evaluation, config)
    write_text(run / "per_language.csv", evaluation.per_language.to_csv())
    write_text(run / "summary.md", summary_table(evaluation.per_language).round(2).to_markdown())
    print(summary_table(evaluation.per_language).round(2).to_string())
    print({k: round(v, 1) for k, v in evaluation.timings.items()})


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.tatoeba", (BackboneError,)))
