"""Machine translation of training groups (NLLB or M2M-100), as the paper did for its English QA sets.

``translate_groups(groups, ["de", "ar"])`` translates each English group's query, positive and
hard negatives into the target languages with a pinned seq2seq model (``DEFAULT_MT_MODEL`` at
``MT_REVISIONS``), batched, on a GPU when present, through a sha256-keyed cache on disk
(``TranslationCache``) so that an interrupted translation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from lib.data import ParallelGroup
from lib.io import atomic_path, cache_dir as default_cache_dir


DEFAULT_MT_MODEL = "facebook/nllb-200-distilled-600M"
# Hub commits of translation models, loaded and part of the translation cache key (a public pin of
# the repository names it; not checked against the hub from here). Another model: add it here.
MT_REVISIONS = {DEFAULT_MT_MODEL: "f8d333a098d19b4fd9a8b18f94170487ad3f821d"}
# Sentences per generate() call of the grid's translation job (``translate: {batch_size: N}``); batches
# are sorted by length, so padding stays small. A default, not a measurement: raise it until the
# GPU's memory is nearly full (NLLB-600M in fp16 at 512 input tokens fits 64 on a 24 GB card by the
# usual rule of thumb; benchmarks/gpu_check.py does not time translation).
DEFAULT_TRANSLATION_BATCH = 64
# What loading a translation model downloads (GB; the hub's file listing, float32 weights + tokenizer).
MT_DOWNLOAD_GB = {DEFAULT_MT_MODEL: 2.5}

# ISO 639-1 -> FLORES-200 codes (NLLB's language tokens).
NLLB_CODES = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng",
    "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "gu": "guj_Gujr", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "kn": "kan_Knda",
    "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "ml": "mal_Mlym", "mr": "mar_Deva",
    "ms": "zsm_Latn", "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn",
    "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sk": "slk_Latn", "sl": "slv_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn",
    "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn", "yo": "yor_Latn", "zh": "zho_Hans",
    "zu": "zul_Latn",
}
TRANSLATION_FAMILIES = ("nllb", "m2m100")
# A randomly initialised NLLB-shaped model for offline tests and smoke grids (like the ``tiny``
# backbone): its "translations" are random words after the target's language code, never empty.
TINY_MT_MODEL = "tiny-mt"
TINY_MT_WORDS = ("the a of to in is was for on with by at from as that this which who where when what how "
                 "question answer city river year name people water film book war king team music song "
                 "language country world history school house").split()


def translation_codes(lang: str, family: str) -> tuple[str, str]:
    """(value for ``tokenizer.src_lang``, target language token forced as first output token).

    NLLB uses FLORES-200 codes for both (``ar -> arb_Arab``); M2M-100 takes the bare ISO code as
    ``src_lang`` and the token ``__ar__`` as target.
    """
    if family == "nllb":
        if lang not in NLLB_CODES:
            raise ValueError(f"no NLLB code for language {lang!r}; known: {sorted(NLLB_CODES)} "
                             "(add its FLORES-200 code to NLLB_CODES)")
        return NLLB_CODES[lang], NLLB_CODES[lang]
    if family == "m2m100":
        return lang, f"__{lang}__"
    raise ValueError(f"translation family {family!r}: expected one of {TRANSLATION_FAMILIES}")


def tiny_translation_dir(seed: int = 0) -> Path:
    """Folder of ``tiny-mt``: an M2M-100/NLLB-shaped seq2seq model (one layer, d_model 16, random
    weights from ``seed``) with a word-level tokenizer over ``TINY_MT_WORDS`` plus the FLORES-200
    codes of ``NLLB_CODES`` as ordinary tokens, so that the forced target code starts every output.
    Built once into the cache; nothing is downloaded."""
    target = default_cache_dir() / "translation-models" / f"tiny-mt-seed{seed}"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate([*specials, *TINY_MT_WORDS, *sorted(NLLB_CODES.values())])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    config = M2M100Config(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                          eos_token_id=3, decoder_start_token_id=3, init_std=1.0)  # inputs change outputs
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config)
    torch.random.set_rng_state(generator_state)
    with atomic_path(target) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return target


def _detect_family(tokenizer) -> str:
    for family, probe in (("nllb", "eng_Latn"), ("m2m100", "__en__")):
        token_id = tokenizer.convert_tokens_to_ids(probe)
        if token_id is not None and token_id != tokenizer.unk_token_id:
            return family
    raise ValueError("the tokenizer has neither NLLB (eng_Latn) nor M2M-100 (__en__) language tokens; "
                     "pass family='nllb' or 'm2m100', or use one of those models")


class Seq2SeqTranslator:
    """An NLLB or M2M-100 checkpoint (hub id or folder) as ``translator(texts, source, target)``.

    Greedy decoding by default (``num_beams=1``); fp16 on a GPU unless ``half_precision=False``.

        translator = Seq2SeqTranslator("facebook/nllb-200-distilled-600M")
        translator(["Where is the station?"], "en", "de")
    """

    def __init__(self, model_name: str = DEFAULT_MT_MODEL, device: str | None = None, family: str | None = None,
                 max_input_length: int = 512, max_new_tokens: int = 256, num_beams: int = 1,
                 half_precision: bool | None = None, revision: str | None = None):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.name = str(model_name)
        self.revision = revision or MT_REVISIONS.get(self.name)
        if self.name == TINY_MT_MODEL:
            model_name, family = tiny_translation_dir(), family or "nllb"
            max_new_tokens = min(max_new_tokens, 8)   # random weights rarely stop by themselves
        # torch's accelerator (cuda, mps, ...) when there is one: the device lib.backbones would pick
        accelerator = torch.accelerator.current_accelerator()
        self.device = device or (accelerator.type if accelerator is not None else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_name, revision=self.revision)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_name, revision=self.revision)
        if half_precision is None:
            half_precision = str(self.device).startswith("cuda")
        if half_precision:
            self.model = self.model.to(torch.float16)
        self.model.to(self.device).eval()
        self.family = family or _detect_family(self.tokenizer)
        self.max_input_length = max_input_length
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams

    def __call__(self, texts: Sequence[str], source_language: str, target_language: str) -> list[str]:
        import torch

        source_code, _ = translation_codes(source_language, self.family)
        _, target_token = translation_codes(target_language, self.family)
        target_id = self.tokenizer.convert_tokens_to_ids(target_token)
        if target_id is None or target_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{self.name} has no language token {target_token} for {target_language!r}")
        self.tokenizer.src_lang = source_code
        inputs = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_input_length).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(**inputs, forced_bos_token_id=target_id,
                                         max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]


def translation_cache_key(text: str) -> str:
    """Cache key of a source text: the first 32 hex digits of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class TranslationCache:
    """Append-only jsonl of translations, one ``{"model", "source_lang", "target_lang", "key", "text"}``
    per line, looked up by (model, source language, target language,
    ``translation_cache_key(source)``).

    Each ``add`` is one ``write`` of complete lines to a file opened with ``O_APPEND``, then
    ``fsync``: a killed run loses at most the batch being written. A torn last line is skipped
    when reading and closed with a newline before the next append.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries: dict[tuple[str, str, str, str], str] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        key = (record["model"], record["source_lang"], record["target_lang"], record["key"])
                        self.entries[key] = record["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by a killed run: its batch is translated again

    def get(self, model: str, source_language: str, target_language: str, text: str) -> str | None:
        return self.entries.get((model, source_language, target_language, translation_cache_key(text)))

    def add(self, model: str, source_language: str, target_language: str,
            sources: Sequence[str], translations: Sequence[str]) -> None:
        lines = []
        for source, translation in zip(sources, translations, strict=True):
            key = translation_cache_key(source)
            self.entries[(model, source_language, target_language, key)] = translation
            lines.append(json.dumps({"model": model, "source_lang": source_language,
                                     "target_lang": target_language, "key": key, "text": translation},
                                    ensure_ascii=False) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            prefix = b""
            if size:
                with open(self.path, "rb") as handle:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        prefix = b"\n"
            os.write(fd, prefix + "".join(lines).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def _model_slug(model_name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)


def translate_texts(texts: Sequence[str], source_language: str, target_language: str,
                    translator: Callable[[Sequence[str], str, str], list[str]], cache: TranslationCache,
                    model: str, batch_size: int = 16) -> dict[str, str]:
    """{source text: translation} for the distinct ``texts``; only those missing from ``cache`` are
    translated, in batches of similar length, each batch appended to the cache as it finishes."""
    distinct = list(dict.fromkeys(texts))
    missing = [text for text in distinct if cache.get(model, source_language, target_language, text) is None]
    missing.sort(key=len)
    batches = [missing[start:start + batch_size] for start in range(0, len(missing), batch_size)]
    for batch in tqdm(batches, desc=f"translate {source_language}->{target_language}", leave=False,
                      disable=not batches):
        translations = translator(batch, source_language, target_language)
        if len(translations) != len(batch):
            raise RuntimeError(f"translator returned {len(translations)} texts for a batch of {len(batch)}")
        cache.add(model, source_language, target_language, batch, translations)
    return {text: cache.get(model, source_language, target_language, text) for text in distinct}


def translate_groups(groups: Sequence[ParallelGroup], target_languages: Sequence[str],
                     model_name: str = DEFAULT_MT_MODEL, cache_path: str | os.PathLike | None = None,
                     batch_size: int = 16, source_language: str = "en",
                     translator: Callable[[Sequence[str], str, str], list[str]] | None = None,
                     **translator_options) -> list[ParallelGroup]:
    """Machine-translate each group's ``source_language`` query, positive and negatives into
    ``target_languages``; resumable: every translation is cached (``TranslationCache``, default
    ``<cache>/translations/<model>.jsonl``) and a rerun translates only what is missing.

    Returns new groups (same qid and source); a language a group already has is kept as it is
    (human text wins over MT); groups without ``source_language`` come back unchanged. The
    model is loaded only if something is missing. ``translator`` replaces the model by any
    ``callable(texts, source, target) -> list[str]`` (cached under ``model_name``);
    ``translator_options`` go to ``Seq2SeqTranslator`` (device, max_new_tokens, num_beams...).

        groups = translate_groups(english_groups, ["ar", "de", "zh"])
        groups[0].queries["de"]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r}: expected an integer >= 1")
    targets = [lang for lang in dict.fromkeys(target_languages) if lang != source_language]
    cache_path = Path(cache_path) if cache_path is not None else (
        default_cache_dir() / "translations" / f"{_model_slug(model_name)}.jsonl")
    cache = TranslationCache(cache_path)
    texts: list[str] = []
    for group in groups:
        if source_language in group.queries:
            texts.append(group.queries[source_language])
        if source_language in group.positives:
            texts.append(group.positives[source_language])
        texts.extend(group.negatives.get(source_language, []))

    loaded: list = []

    def lazy_translator(batch, source, target):
        if not loaded:
            loaded.append(translator if translator is not None else Seq2SeqTranslator(model_name, **translator_options))
        return loaded[0](batch, source, target)

    revision = translator_options.get("revision") or MT_REVISIONS.get(model_name)
    cache_model = f"{model_name}@{revision}" if revision else model_name  # another commit, other entries
    translated = {target: translate_texts(texts, source_language, target, lazy_translator, cache,
                                          cache_model, batch_size) for target in targets}
    result = []
    for group in groups:
        new = ParallelGroup(qid=group.qid, source=group.source, queries=dict(group.queries),
                            positives=dict(group.positives),
                            negatives={lang: list(texts) for lang, texts in group.negatives.items()})
        for target, table in translated.items():
            if source_language in group.queries and target not in new.queries:
                new.queries[target] = table[group.queries[source_language]]
            if source_language in group.positives and target not in new.positives:
                new.positives[target] = table[group.positives[source_language]]
            if group.negatives.get(source_language) and target not in new.negatives:
                new.negatives[target] = [table[text] for text in group.negatives[source_language]]
        result.append(new)
    return result
