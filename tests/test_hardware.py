"""CPU capability detection and the precision it picks, on monkeypatched /proc/cpuinfo files."""

from __future__ import annotations

import warnings

import pytest
import torch

import lib.hardware

from lib import hardware
from lib.hardware import cpu_flags, cpu_has_bf16, cpu_model, hardware_info, resolve_precision

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse2 avx2 fma
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def write(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(hardware, "CPUINFO", path)
    return write


def test_bf16_cpu_detected(cpuinfo, monkeypatch):
    cpuinfo(SAPPHIRE_RAPIDS)
    assert cpu_model() == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512_bf16", "amx_bf16", "amx_tile"} <= cpu_flags()
    assert cpu_has_bf16()
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(lib.hardware, "CPU_AUTO_BF16", False)   # the switch back to fp32 everywhere
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(lib.hardware, "CPU_AUTO_BF16", True)
    assert resolve_precision("fp32", "cpu") == "fp32"
    info = hardware_info("cpu", "auto")
    assert info["precision"] == "bf16" and "amx_bf16" in info["cpu_flags"] and "fpu" not in info["cpu_flags"]
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_cpu_without_bf16_stays_fp32_and_warns_on_explicit_bf16(cpuinfo):
    cpuinfo(ZEN3)
    assert not cpu_has_bf16()
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="without bf16 units.*EPYC 7763"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16.*CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("int8", "cpu")


def test_no_warning_on_bf16_cpu(cpuinfo):
    cpuinfo(SAPPHIRE_RAPIDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"


def test_without_cpuinfo_torch_probes_decide(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    assert cpu_flags() is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not cpu_has_bf16()


def test_gpu_precision_keeps_todays_fallback(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cuda:0") == "fp16"
    monkeypatch.setattr(hardware, "gpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
