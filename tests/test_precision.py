"""Training precision on the CPU: ``auto`` follows lib.hardware, bf16 autocasts only the encoder,
the loss stays fp32, and a bf16 run trains (and records its precision)."""

from __future__ import annotations

import pytest
import torch

from lib import hardware
from lib.dual_encoder import batch_loss
from lib.losses import InfoNCELoss
from lib.train import TrainConfig, TrainError

BF16_CPU = "processor\t: 0\nmodel name\t: Xeon with AMX\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
PLAIN_CPU = "processor\t: 0\nmodel name\t: EPYC 7763\nflags\t\t: avx2 fma\n"


@pytest.mark.parametrize("cpuinfo, expected", [(BF16_CPU, "bf16"), (PLAIN_CPU, "fp32")])
def test_auto_precision_on_the_cpu_follows_its_bf16_units(cpuinfo, expected, tmp_path, monkeypatch):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
    assert TrainConfig(backbone="tiny", device="cpu").resolved().precision == expected
    monkeypatch.setattr(hardware, "CPU_AUTO_BF16", False)                # the switch: fp32 on every CPU
    assert TrainConfig(backbone="tiny", device="cpu").resolved().precision == "fp32"
    assert TrainConfig(backbone="tiny", device="cpu", precision="fp32").resolved().precision == "fp32"


def test_fp16_on_the_cpu_is_refused_with_the_fix():
    with pytest.raises(TrainError, match="fp16.*CPU.*bf16"):
        TrainConfig(backbone="tiny", device="cpu", precision="fp16").resolved()


class BatchEncoder(torch.nn.Module):
    """Embeds token ids with one linear layer: a stand-in encoder whose products autocast."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 16)

    def forward(self, features):
        return {"sentence_embedding": self.linear(features["x"])}


class Dual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = BatchEncoder()

    def forward(self, query, positive, negative=None, negative_index=None):
        embed = lambda f: self.encoder(f)["sentence_embedding"]  # noqa: E731
        return embed(query), embed(positive), None, None


def test_under_bf16_autocast_the_encoder_is_bf16_and_the_loss_fp32():
    dual, loss_fn = Dual(), InfoNCELoss(0.05)
    generator = torch.Generator().manual_seed(1)
    batch = {"query": {"x": torch.randn(6, 8, generator=generator)},
             "positive": {"x": torch.randn(6, 8, generator=generator)},
             "negative": None, "negative_index": None, "candidate_keys": None}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        query, positive, _, _ = dual(batch["query"], batch["positive"])
        loss = batch_loss(dual, loss_fn, batch)
    assert query.dtype == torch.bfloat16
    assert loss.dtype == torch.float32
    # the same bf16 embeddings scored outside autocast: the loss is exactly the fp32 one
    assert torch.equal(loss, loss_fn(query, positive))
