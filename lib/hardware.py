"""What the machine can do fast, and the numeric precision chosen from it.

bf16 halves the bytes of every activation and, on CPUs with bf16 units (Intel AVX512-BF16 or
AMX, AMD Zen 4+ AVX512-BF16, Arm's BF16 extension), runs matrix products several times faster
than fp32 (a bf16 matrix product ran about 4x faster on one Xeon core; a sentence-transformers
encode about 1.7x, with cosine to fp32 >= 0.9999). On CPUs without these units torch emulates
bf16 and is *slower* than fp32, so the choice is made by detection, never assumed:

==========  ===========================================  ==========================
precision   CUDA                                         CPU
==========  ===========================================  ==========================
auto        bf16 where supported, fp16 otherwise         bf16 with bf16 units, else fp32 (CPU_AUTO_BF16)
fp32        fp32                                         fp32
bf16        bf16                                         bf16 (warns without bf16 units)
fp16        fp16                                         error (no fast fp16 on CPUs)
==========  ===========================================  ==========================

Capabilities come from ``/proc/cpuinfo`` flags on Linux and, where that file is missing,
from torch's own probes (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``).

    resolve_precision("bf16", "cpu")       # "bf16" (fast on a Sapphire Rapids Xeon, warns on a Zen 3 EPYC)
    hardware_info("cpu", "auto")           # CPU model, flags, torch capability, precision: provenance
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Whether ``auto`` picks bf16 on CPUs with bf16 units. On since the fidelity guard was measured
# (README, Speed; Intel Xeon with AMX): a zero-shot evaluation of the full XQuAD-R in bf16 is
# within 0.0005 mAP of fp32 (rank distance 0.29%), and the default grid's 40-step trainings in
# bf16 against the earlier fp32 grid's (same seeds, same batches) are compared with the seed
# standard deviation there. False makes every CPU run fp32 unless precision=bf16 is asked for.
CPU_AUTO_BF16 = True
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")   # x86 AVX512-BF16, x86 AMX, Arm BF16 ("Features")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "bf16")


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what ``platform`` knows."""
    fields = _cpuinfo_fields()
    return fields.get("model name") or fields.get("hardware") or platform.processor() or platform.machine()


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``features``), or ``None`` without /proc/cpuinfo."""
    fields = _cpuinfo_fields()
    line = fields.get("flags", fields.get("features"))
    return None if line is None else set(line.split())


def _torch_cpu_probe(name: str) -> bool | None:
    probe = getattr(torch.cpu, name, None)
    return None if probe is None else bool(probe())


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16, AMX-BF16 or Arm BF16).

    Reads /proc/cpuinfo; where it is missing (macOS, Windows) asks torch's own probes.
    """
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & set(BF16_FLAGS))
    return bool(_torch_cpu_probe("_is_avx512_bf16_supported") or _torch_cpu_probe("_is_amx_tile_supported"))


def device_type(device: str | torch.device) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``"cpu"`` for ``"cpu"``."""
    return torch.device(device).type


def gpu_has_bf16() -> bool:
    """Whether a CUDA GPU is present and supports bf16 (compute capability 8.0+)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for a requested ``precision`` on ``device`` (table above)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    kind = device_type(device)
    if kind == "cuda":
        if precision == "auto":
            return "bf16" if gpu_has_bf16() else "fp16"
        return precision
    if kind != "cpu":
        if precision in ("auto", "fp32"):
            return "fp32"
        raise ValueError(f"precision {precision!r} on device {str(device)!r}: only CUDA and CPU autocast are "
                         "supported; use precision='fp32' or 'auto'")
    if precision == "auto":
        return "bf16" if CPU_AUTO_BF16 and cpu_has_bf16() else "fp32"
    if precision == "fp16":
        raise ValueError("precision 'fp16' on the CPU: CPUs have no fast fp16 matrix units; use 'bf16' or 'auto'")
    if precision == "bf16" and not cpu_has_bf16():
        warnings.warn(f"precision 'bf16' on a CPU without bf16 units ({cpu_model()}): torch emulates it, "
                      "slower than fp32; use precision='auto' or 'fp32' here", stacklevel=2)
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (``None`` for fp32: no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def hardware_info(device: str | torch.device = "cpu", precision: str | None = None) -> dict[str, Any]:
    """Provenance of a timing or a result: CPU model and flags, torch's CPU capability, threads,
    the GPU, and (given ``precision``) the precision it resolves to on ``device``."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(flags & set(REPORTED_FLAGS)) if flags is not None else None,
        "cpu_has_bf16": cpu_has_bf16(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "gpu_has_bf16": gpu_has_bf16(),
        "device": str(device),
    }
    if precision is not None:
        info["precision_requested"] = precision
        info["precision"] = resolve_precision(precision, device)
    return info
