"""Every evaluation's results also in MTEB's result format (``mteb.TaskResult`` JSON), so that
``mteb``'s own result objects, its leaderboard tooling and its users can read them.

``outputs/<run>/mteb/<task_name>.json`` holds ``dataset_revision``, ``task_name``,
``mteb_version``, ``evaluation_time`` and ``scores`` = ``{split: [one dict per hf_subset]}``, each
dict with ``hf_subset``, ``languages`` (ISO 639-3 + script, as mteb tags them), the metrics
(mteb's names: ``ndcg_at_10``, ``map_at_20``) and ``main_score``. Per dataset:

* ``tatoeba`` -> mteb's task ``Tatoeba`` (split ``test``, subsets ``xxx-eng``): mteb mines from
  the ``xxx`` side into English, so the scores are the xx->eng direction: ``accuracy`` (this
  project's ``acc_xx_to_eng``, XTREME's Tatoeba score) and, from the same nearest neighbours,
  ``precision``, ``recall`` and ``f1`` weighted over gold lines as mteb computes them
  (``main_score`` = ``f1``, mteb's). ``dataset_revision`` names the LASER commit read, not
  mteb's copy of the same files (``mteb/tatoeba-bitext-mining``).
* ``miracl`` -> mteb's task ``MIRACLRetrieval`` (split ``dev``, subsets = languages):
  ``ndcg_at_10`` (``main_score``, mteb's) and ``recall_at_100``, trec_eval semantics as mteb's
  pytrec_eval. Same topics and qrels; mteb's corpus (``mteb/MIRACLRetrieval``) and its instruction
  prompt differ from the full ``miracl/miracl-corpus`` and the backbone's prefix used here.
* ``xquad-r`` / ``mlqa-r`` -> tasks ``LAReQA-XQuAD-R`` / ``LAReQA-MLQA-R``, which mteb does not
  ship (its ``XQuADRetrieval`` and ``MLQARetrieval`` retrieve paragraphs, not LAReQA's answer
  sentences from a multilingual pool): subsets ``mono``, ``cross``, ``multi`` with ``map``,
  ``map_at_20``, ``recall_at_1`` / ``recall_at_10``, ``rank_distance``; ``main_score`` = ``map``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from lib.io import write_json

MTEB_FOLDER = "mteb"
# mteb's language tags (ISO 639-3 + script) of Tatoeba's 112 file codes, as mteb's task declares them
TATOEBA_SCRIPTS = dict(tag.split("-") for tag in """
afr-Latn amh-Ethi ang-Latn ara-Arab arq-Arab arz-Arab ast-Latn awa-Deva aze-Latn bel-Cyrl ben-Beng ber-Tfng
bos-Latn bre-Latn bul-Cyrl cat-Latn cbk-Latn ceb-Latn ces-Latn cha-Latn cmn-Hans cor-Latn csb-Latn cym-Latn
dan-Latn deu-Latn dsb-Latn dtp-Latn ell-Grek epo-Latn est-Latn eus-Latn fao-Latn fin-Latn fra-Latn fry-Latn
gla-Latn gle-Latn glg-Latn gsw-Latn heb-Hebr hin-Deva hrv-Latn hsb-Latn hun-Latn hye-Armn ido-Latn ile-Latn
ina-Latn ind-Latn isl-Latn ita-Latn jav-Latn jpn-Jpan kab-Latn kat-Geor kaz-Cyrl khm-Khmr kor-Hang kur-Latn
kzj-Latn lat-Latn lfn-Latn lit-Latn lvs-Latn mal-Mlym mar-Deva max-Deva mhr-Cyrl mkd-Cyrl mon-Cyrl nds-Latn
nld-Latn nno-Latn nob-Latn nov-Latn oci-Latn orv-Cyrl pam-Latn pes-Arab pms-Latn pol-Latn por-Latn ron-Latn
rus-Cyrl slk-Latn slv-Latn spa-Latn sqi-Latn srp-Cyrl swe-Latn swg-Latn swh-Latn tam-Taml tat-Cyrl tel-Telu
tgl-Latn tha-Thai tuk-Latn tur-Latn tzl-Latn uig-Arab ukr-Cyrl urd-Arab uzb-Latn vie-Latn war-Latn wuu-Hans
xho-Latn yid-Hebr yue-Hant zsm-Latn""".split())
# ISO 639-1 (LAReQA, MIRACL) -> mteb's tag
ISO1_TAGS = {"ar": "ara-Arab", "bn": "ben-Beng", "de": "deu-Latn", "el": "ell-Grek", "en": "eng-Latn",
             "es": "spa-Latn", "fa": "fas-Arab", "fi": "fin-Latn", "fr": "fra-Latn", "hi": "hin-Deva",
             "id": "ind-Latn", "ja": "jpn-Jpan", "ko": "kor-Kore", "ru": "rus-Cyrl", "sw": "swa-Latn",
             "te": "tel-Telu", "th": "tha-Thai", "tr": "tur-Latn", "vi": "vie-Latn", "yo": "yor-Latn",
             "zh": "zho-Hans"}
LAREQA_TASKS = {"xquad-r": "LAReQA-XQuAD-R", "mlqa-r": "LAReQA-MLQA-R"}


def mteb_metric(name: str) -> str:
    """This project's metric name -> mteb's: ``map@20`` -> ``map_at_20``."""
    return name.replace("@", "_at_")


def bitext_scores(predictions: np.ndarray) -> dict[str, float]:
    """mteb's bitext-mining metrics of nearest-neighbour ``predictions`` (row i's gold is line i):
    accuracy, and precision / recall / f1 weighted over gold lines (sklearn, as mteb computes them)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold = np.arange(len(predictions))
    options = dict(zero_division=0, average="weighted")
    return {"precision": float(precision_score(gold, predictions, **options)),
            "recall": float(recall_score(gold, predictions, **options)),
            "f1": float(f1_score(gold, predictions, **options)), "accuracy": float(accuracy_score(gold, predictions))}


def _tatoeba(evaluation, config) -> tuple[str, str, str, list[dict[str, Any]]]:
    rows = []
    for code, row in evaluation.per_language.iterrows():
        scores = {name: float(row[f"mteb_{name}"]) for name in ("precision", "recall", "f1")
                  if f"mteb_{name}" in row}
        scores["accuracy"] = float(row["acc_xx_to_eng"])
        scores["main_score"] = scores.get("f1", scores["accuracy"])
        rows.append({**scores, "hf_subset": f"{code}-eng",
                     "languages": [f"{code}-{TATOEBA_SCRIPTS.get(code, 'Zyyy')}", "eng-Latn"]})
    return "Tatoeba", config.get("dataset_revision", "LASER data/tatoeba/v1"), "test", rows


def _miracl(evaluation, config) -> tuple[str, str, str, list[dict[str, Any]]]:
    rows = [{"ndcg_at_10": float(row["ndcg@10"]), "recall_at_100": float(row["recall@100"]),
             "main_score": float(row["ndcg@10"]), "hf_subset": lang, "languages": [ISO1_TAGS.get(lang, lang)]}
            for lang, row in evaluation.per_language.iterrows()]
    return "MIRACLRetrieval", config.get("dataset_revision", "miracl/miracl"), "dev", rows


def _lareqa(evaluation, config) -> tuple[str, str, str, list[dict[str, Any]]]:
    languages = [ISO1_TAGS.get(lang, lang) for lang in config.get("languages") or []]
    by_setting: dict[str, dict[str, Any]] = {}
    for key, value in evaluation.summary.items():
        _, setting, metric = key.split("_", 2)          # lib.results' {dataset}_{setting}_{metric}
        by_setting.setdefault(setting, {})[mteb_metric(metric)] = float(value)
    rows = [{**scores, "main_score": scores["map"], "hf_subset": setting, "languages": languages}
            for setting, scores in by_setting.items()]
    dataset = config["dataset"]
    return LAREQA_TASKS[dataset], config.get("dataset_revision", "google-research-datasets/lareqa"), "test", rows


BUILDERS = {"tatoeba": _tatoeba, "miracl": _miracl, "xquad-r": _lareqa, "mlqa-r": _lareqa}


def mteb_task_result(evaluation, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``mteb.TaskResult`` dict of an evaluation of ``config["dataset"]`` (None: no mapping)."""
    builder = BUILDERS.get(str(config.get("dataset")))
    if builder is None:
        return None
    task_name, revision, split, rows = builder(evaluation, config)
    try:
        version = metadata.version("mteb")
    except metadata.PackageNotFoundError:
        version = None
    return {"dataset_revision": revision, "task_name": task_name, "mteb_version": version,
            "scores": {split: rows}, "evaluation_time": evaluation.timings.get("total_s"),
            "kg_co2_emissions": None}


def write_mteb_result(run_path: str | Path, evaluation, config: dict[str, Any]) -> Path | None:
    """``<run_path>/mteb/<task_name>.json`` (None when the dataset has no MTEB mapping)."""
    result = mteb_task_result(evaluation, config)
    if result is None:
        return None
    path = Path(run_path) / MTEB_FOLDER / f"{result['task_name']}.json"
    write_json(path, result)
    return path
