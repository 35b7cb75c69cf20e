"""A GPU check that needs no network: training throughput and memory at the paper's batch size.

An XLM-R-shaped encoder with random weights is built locally (``transformers.XLMRobertaConfig``:
hidden 768, 12 layers, 12 heads, FFN 3072, vocab 250,002: XLM-R base's shapes and parameter
count), so only throughput and memory are measured with it, never quality. On it:

1. bf16 training steps/s at batch 100 (query 64, passage 128 tokens, one hard negative each: random
   token ids, full length), AdamW over every weight, InfoNCE (``lib.losses.InfoNCELoss``), once
   with the whole batch in one forward (``mini_batch_size`` 0) and once with gradient caching
   (``lib.gradcache.cached_backward``, ``--mini-batch-size`` pairs per chunk);
2. peak GPU memory of each (``torch.cuda.max_memory_allocated``, reset between them);
3. encoding passages/s (128 tokens, bf16, inference);
4. the me5-small-q4 path when its cache is present (``HBT_CACHE``'s ``backbones/me5-small-q4``, built
   once by ``lib.backbones`` from PyPI elsewhere and carried): a real LAReQA evaluation (XQuAD-R,
   ``--max-questions``) needs ``LAREQA_DIR`` as well; neither faiss nor ir_measures is imported.

What a GPU machine needs: this repository, its Python packages (torch with CUDA, transformers,
sentence-transformers, numpy, pandas; requirements.txt), and nothing else; optionally the
me5-small-q4 cache folder (about 0.5 GB) and the LAReQA json files (32 MB) for step 4.

    python benchmarks/gpu_check.py --dry-run            # on CPU: what it would measure
    python benchmarks/gpu_check.py --steps 20           # on a GPU: writes outputs/bench/gpu-check.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

XLMR_SHAPE = dict(vocab_size=250_002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
QUERY_TOKENS, PASSAGE_TOKENS = 64, 128


def plan(args: argparse.Namespace) -> list[str]:
    """What the check measures, in words (``--dry-run`` prints it)."""
    cache = me5_cache()
    return [
        f"backbone: xlmr-shaped, random weights built locally (hidden 768, 12 layers, vocab 250,002; "
        f"{args.steps} steps after {args.warmup} warm-up steps)",
        f"train: bf16 autocast, batch {args.batch_size} (query {QUERY_TOKENS}, passage {PASSAGE_TOKENS} tokens, one hard "
        f"negative each), AdamW, InfoNCE: steps/s and pairs/s with mini_batch_size 0 and {args.mini_batch_size} "
        "(gradient caching)",
        "memory: peak GPU memory (torch.cuda.max_memory_allocated) of each training variant",
        f"encode: passages/s at {PASSAGE_TOKENS} tokens, batch {args.encode_batch_size}, bf16 inference",
        f"me5-small-q4: {'cache found at ' + str(cache) + ': XQuAD-R evaluation' if cache else 'cache absent: skipped'}"
        f"{'' if os.environ.get('LAREQA_DIR') else ' (LAREQA_DIR unset: evaluation skipped)'}",
    ]


def me5_cache() -> Path | None:
    from lib.io import cache_dir

    folder = cache_dir() / "backbones" / "me5-small-q4"
    return folder if (folder / "model.safetensors").is_file() else None


class MeanPoolEncoder:
    """The XLM-R-shaped model as the dual encoder ``lib.gradcache`` expects: (query, positive,
    negative, negative_index) -> embeddings (mean pooling, L2-normalised)."""

    def __init__(self, model):
        import torch

        self.model, self.torch = model, torch

    def embed(self, features):
        hidden = self.model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return self.torch.nn.functional.normalize(pooled.float(), dim=-1)

    def __call__(self, query, positive, negative=None, negative_index=None):
        q, p = self.embed(query), self.embed(positive)
        if negative_index is None:
            return q, p, None, None
        mask = self.torch.zeros(q.shape[0], dtype=self.torch.bool, device=q.device)
        n = p.new_zeros(p.shape).index_copy(0, negative_index, self.embed(negative))
        mask[negative_index] = True
        return q, p, n, mask


def random_batch(pairs: int, device: str, generator) -> dict:
    import torch

    def features(length):
        ids = torch.randint(5, XLMR_SHAPE["vocab_size"], (pairs, length), generator=generator).to(device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return {"pairs": pairs, "query": features(QUERY_TOKENS), "positive": features(PASSAGE_TOKENS),
            "negative": features(PASSAGE_TOKENS), "negative_index": torch.arange(pairs, device=device),
            "candidate_keys": None}


def train_speed(model, args, mini_batch_size: int) -> dict:
    import torch

    from lib.gradcache import cached_backward
    from lib.losses import InfoNCELoss

    encoder, loss_fn = MeanPoolEncoder(model), InfoNCELoss(0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    precision = lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    torch.cuda.reset_peak_memory_stats() if args.device.startswith("cuda") else None
    timings = []
    for step in range(args.warmup + args.steps):
        batch = random_batch(args.batch_size, args.device, generator)
        _sync(args.device)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if mini_batch_size:
            cached_backward(encoder, loss_fn, batch, mini_batch_size, precision=precision)
        else:
            with precision():
                loss = loss_fn(*encoder(batch["query"], batch["positive"], batch["negative"], batch["negative_index"]), None)
            loss.backward()
        optimizer.step()
        _sync(args.device)
        if step >= args.warmup:
            timings.append(time.perf_counter() - started)
    seconds = sum(timings) / len(timings)
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    del optimizer
    return {"mini_batch_size": mini_batch_size, "steps_per_s": 1 / seconds,
            "pairs_per_s": args.batch_size / seconds, "peak_gpu_memory_gib": peak}


def encode_speed(model, args) -> float:
    import torch

    encoder, generator = MeanPoolEncoder(model), torch.Generator().manual_seed(1)
    batches = [random_batch(args.encode_batch_size, args.device, generator)["positive"] for _ in range(args.warmup + 5)]
    with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
        for features in batches[:args.warmup]:
            encoder.embed(features)
        _sync(args.device)
        started = time.perf_counter()
        for features in batches[args.warmup:]:
            encoder.embed(features)
        _sync(args.device)
    return 5 * args.encode_batch_size / (time.perf_counter() - started)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def me5_evaluation(args) -> dict | None:
    """me5-small-q4 on XQuAD-R (LAReQA: neither faiss nor ir_measures needed) when its cache and the
    LAReQA files are present; nothing is downloaded."""
    if me5_cache() is None or not os.environ.get("LAREQA_DIR"):
        return None
    from lib.evaluate import run_evaluation

    started = time.perf_counter()
    evaluation, _ = run_evaluation("me5-small-q4", "xquad-r", batch_size=256, device=args.device,
                                   run="gpu-check-me5-small-q4-xquad-r", max_questions=args.max_questions)
    return {"seconds": time.perf_counter() - started, **evaluation.summary}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would be measured; runs on CPU")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (CUDA kernels, allocator)")
    parser.add_argument("--batch-size", type=int, default=100, help="pairs per contrastive batch (the paper's 100)")
    parser.add_argument("--mini-batch-size", type=int, default=16, help="pairs per chunk of the cached variant")
    parser.add_argument("--encode-batch-size", type=int, default=256, help="passages per encoding batch")
    parser.add_argument("--max-questions", type=int, default=None, help="me5-small-q4 XQuAD-R: questions per language")
    parser.add_argument("--device", default="cuda", help="cuda (the check); cpu only to try the script itself")
    args = parser.parse_args(argv)
    lines = plan(args)
    if args.dry_run:
        print("gpu_check would measure:\n" + "\n".join(f"  - {line}" for line in lines))
        return
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run it on a machine with a GPU (or --dry-run)")
    torch.manual_seed(0)
    model = XLMRobertaModel(XLMRobertaConfig(**XLMR_SHAPE), add_pooling_layer=False).to(args.device).train()
    rows = [train_speed(model, args, mini) for mini in (0, args.mini_batch_size)]
    model.eval()
    result = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "parameters": sum(p.numel() for p in model.parameters()), "train": rows,
              "encode_passages_per_s": encode_speed(model, args), "me5_small_q4_xquad_r": me5_evaluation(args),
              "arguments": vars(args)}
    from lib.io import run_dir, versions, write_json

    result["versions"] = versions()
    print(f"device: {result['device']}, parameters: {result['parameters']:,}")
    for row in rows:
        print(f"train bf16 batch {args.batch_size}, mini_batch_size {row['mini_batch_size']}: "
              f"{row['steps_per_s']:.3f} steps/s, {row['pairs_per_s']:.1f} pairs/s, "
              f"peak GPU memory {row['peak_gpu_memory_gib']:.2f} GiB")
    print(f"encode: {result['encode_passages_per_s']:.0f} passages/s ({PASSAGE_TOKENS} tokens, bf16)")
    print(f"me5-small-q4 XQuAD-R: {result['me5_small_q4_xquad_r'] or 'skipped (no cache or no LAREQA_DIR)'}")
    write_json(run_dir("bench") / "gpu-check.json", result)


if __name__ == "__main__":
    main()
