"""OpenVINO as the encoder's inference engine on CPU: the same model, compiled for the CPU's units.

``lib.encode.encode(..., engine="openvino")`` runs the backbone's transformer through OpenVINO
(``openvino.convert_model`` of the loaded weights, compiled for the CPU: for precision bf16,
OpenVINO's default, which is bf16 on CPUs with AMX / AVX512-BF16 and f32 elsewhere; f32 for fp32) and everything after it (pooling, dense
layers, normalisation) in sentence-transformers as before, so any backbone works. It is for
inference only (evaluation, bias); training stays in torch. ``benchmarks/bench_engines.py``
measures it against torch; README "Speed" has the figures and the fidelity guard.

    with openvino_transformer(model, "bf16"):     # model: a SentenceTransformer on CPU
        embeddings = model.encode(texts)

OpenVINO is an optional package (``pip install openvino``); without it ``engine="openvino"`` is
a clear error before anything is encoded.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Iterator

import numpy as np
import torch
from torch import nn

ENGINES = ("torch", "openvino")
_HINTS = {"bf16": None, "fp32": "f32"}   # bf16: OpenVINO's CPU default (bf16 where the CPU has it, else f32)


def check_engine(engine: str, device: str | torch.device) -> None:
    """A ValueError naming the fix when ``engine`` cannot run on ``device`` here."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {ENGINES}")
    if engine == "openvino":
        if torch.device(device).type != "cpu":
            raise ValueError(f"engine 'openvino' runs on CPU, not {device}: use engine=torch on GPUs")
        if importlib.util.find_spec("openvino") is None:
            raise ValueError("engine 'openvino' needs the openvino package: pip install openvino "
                             "(or use engine=torch)")


class _Compiled(nn.Module):
    """Stands in for a transformers model inside sentence-transformers' ``Transformer`` module:
    takes its keyword inputs, returns ``last_hidden_state`` from the compiled OpenVINO model."""

    def __init__(self, compiled, inputs: list[str], config):
        super().__init__()
        self.compiled, self.inputs, self.config = compiled, inputs, config

    def forward(self, **features) -> dict[str, torch.Tensor]:
        arrays = {name: features[name].cpu().numpy() for name in self.inputs if name in features}
        hidden = self.compiled(arrays)[0]
        return {"last_hidden_state": torch.from_numpy(np.asarray(hidden, dtype=np.float32))}


def compile_transformer(model, precision: str):
    """The model's transformer compiled by OpenVINO in ``precision`` (bf16 | fp32), kept on the
    model for the next call (one conversion per loaded model and precision)."""
    import openvino as ov

    cache = model.__dict__.setdefault("_openvino", {})
    if precision not in cache:
        transformer = model[0]
        example = dict(transformer.tokenizer(["a", "b c"], padding=True, return_tensors="pt"))
        converted = ov.convert_model(transformer.auto_model.eval(), example_input=example)
        hint = _HINTS[precision]
        compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint} if hint else {})
        cache[precision] = _Compiled(compiled, list(example), transformer.auto_model.config)
    return cache[precision]


@contextlib.contextmanager
def openvino_transformer(model, precision: str) -> Iterator[None]:
    """Within the block, ``model`` (a SentenceTransformer on CPU) runs its transformer in OpenVINO."""
    if precision not in _HINTS:
        raise ValueError(f"engine 'openvino': precision {precision!r} not supported; expected one of {tuple(_HINTS)}")
    transformer = model[0]
    original = transformer.model      # sentence-transformers' Transformer: auto_model is this attribute
    transformer.model = compile_transformer(model, precision)
    try:
        yield
    finally:
        transformer.model = original
