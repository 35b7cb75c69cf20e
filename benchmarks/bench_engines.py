"""Another inference engine against torch bf16 for encoding: OpenVINO, measured in one run.

The speed issue asks whether an engine made for inference (ONNX Runtime, OpenVINO) beats torch bf16
by 1.3x or more at the same fidelity on these CPUs. This script encodes the same prefixed XQuAD-R
candidate sentences as ``bench_speed.py --steps encode`` with

- plain ``SentenceTransformer.encode`` in fp32 (the reference for speed and for fidelity),
- ``lib.encode.encode`` in bf16 (the project's path),
- OpenVINO (the backbone's transformer converted with ``openvino.convert_model``, compiled for
  the CPU with its default inference precision, which is bf16 on CPUs with AMX / AVX512-BF16, and
  with ``INFERENCE_PRECISION_HINT=f32``), mean pooling and normalisation as the backbone's,

in interleaved rounds, and prints texts/s, the ratio to plain fp32 and to lib.encode bf16, and the
min / mean cosine to plain fp32. OpenVINO is not a dependency of the project:

    pip install openvino            # into any environment with the project's packages
    python benchmarks/bench_engines.py --n-texts 512 --repeats 2

Writes ``outputs/bench/engines-<backbone>.json`` with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.backbones import load_model  # noqa: E402
from lib.data import load_lareqa  # noqa: E402
from lib.encode import encode  # noqa: E402
from lib.hardware import hardware_info  # noqa: E402
from lib.io import run_dir, versions, write_json  # noqa: E402


def openvino_encoder(model, texts: list[str], batch_size: int, hint: str | None):
    """A function encoding ``texts`` (already prefixed) with OpenVINO: length-sorted batches padded
    to their longest text, mean pooling over the attention mask, L2 normalisation."""
    import openvino as ov

    transformer = model[0]
    if model[1].pooling_mode != "mean":
        raise SystemExit(f"{model.backbone.name}: pooling {model[1].pooling_mode!r}; this script pools by mean")
    tokenizer, length = transformer.tokenizer, model.max_seq_length
    example = dict(tokenizer(texts[:2], padding=True, truncation=True, max_length=length, return_tensors="pt"))
    converted = ov.convert_model(transformer.auto_model.eval(), example_input=example)
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint} if hint else {})
    order = np.argsort([-len(t) for t in texts])

    def run() -> np.ndarray:
        out = np.zeros((len(texts), transformer.auto_model.config.hidden_size), dtype=np.float32)
        for begin in range(0, len(texts), batch_size):
            rows = order[begin:begin + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=length,
                              return_tensors="np")
            hidden = compiled({k: v for k, v in batch.items() if k in example})[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out
    return run, compiled.get_property("INFERENCE_PRECISION_HINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="me5-small-q4")
    parser.add_argument("--n-texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best time is kept")
    args = parser.parse_args()

    data = load_lareqa("xquad-r")
    rng = np.random.default_rng(0)        # the same texts as bench_speed.py --steps encode
    texts = list(data.candidates.text.iloc[rng.choice(len(data.candidates), args.n_texts, replace=False)])
    model = load_model(args.backbone, device="cpu")
    model.max_seq_length = model.backbone.max_passage_length
    prefixed = [model.backbone.passage_prefix + t for t in texts]
    variants = {
        "plain ST fp32": lambda: model.encode(prefixed, batch_size=args.batch_size, normalize_embeddings=True,
                                              show_progress_bar=False),
        "lib.encode bf16": lambda: encode(model, texts, "passage", batch_size=args.batch_size, cache=False,
                                          precision="bf16", show_progress_bar=False)}
    precisions = {}
    for label, hint in (("OpenVINO default", None), ("OpenVINO f32", "f32")):
        variants[label], precisions[label] = openvino_encoder(model, prefixed, args.batch_size, hint)
    seconds, embeddings = {}, {}
    for name, run in variants.items():   # warm-up (OpenVINO compiles shapes lazily)
        run()
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            embeddings[name] = np.asarray(run(), dtype=np.float32)
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
    rows = []
    for name in variants:
        cosine = np.sum(embeddings[name] * embeddings["plain ST fp32"], axis=1)
        rows.append({"variant": name + (f" ({precisions[name]})" if name in precisions else ""),
                     "texts_per_s": args.n_texts / seconds[name],
                     "ratio_to_plain_fp32": seconds["plain ST fp32"] / seconds[name],
                     "ratio_to_lib_bf16": seconds["lib.encode bf16"] / seconds[name],
                     "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())})
    import openvino
    result = {"rows": rows, "hardware": hardware_info("cpu", "auto"), "args": vars(args),
              "openvino": openvino.__version__, "torch_threads": torch.get_num_threads(),
              "load_average": os.getloadavg(), "versions": versions()}
    write_json(run_dir("bench") / f"engines-{args.backbone}.json", result)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=(".4g", ".4g", ".4g", ".4g", ".6f", ".6f")))
    print({k: result["hardware"][k] for k in ("cpu_model", "cpu_flags")}, f"openvino {openvino.__version__}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
