"""Experiment tracking of a training run: TensorBoard or Weights & Biases, or none.

``report_to`` follows the Hugging Face convention (``TrainingArguments.report_to``): ``none``
(the default: ``train_log.csv`` only), ``tensorboard`` (torch's ``SummaryWriter``, event files in
``outputs/<run>/tensorboard/``; open with ``tensorboard --logdir outputs``) or ``wandb`` (needs the
``wandb`` package and a login or ``WANDB_MODE=offline``). Each optimizer step logs

    train/loss, train/learning_rate, train/pairs_per_second, and eval/val_loss when validated.

A resumed run purges the events from its checkpoint's step on (TensorBoard's ``purge_step``),
so the steps a killed run had logged after its last checkpoint are not shown twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPORT_TO = ("none", "tensorboard", "wandb")
TENSORBOARD_FOLDER = "tensorboard"
# train_log.csv column -> tracked scalar
SCALARS = {"loss": "train/loss", "lr": "train/learning_rate", "pairs_per_second": "train/pairs_per_second",
           "val_loss": "eval/val_loss"}


class Tracker:
    """No tracking (``report_to="none"``); the interface of the others."""

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Log the scalars of one ``train_log.csv`` row (missing or None values are left out)."""

    def close(self) -> None:
        pass


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {name: float(row[column]) for column, name in SCALARS.items() if row.get(column) is not None}


class TensorBoardTracker(Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (requirements.txt)

        self.writer = SummaryWriter(log_dir=str(run_path / TENSORBOARD_FOLDER),
                                    purge_step=resume_step + 1 if resume_step else None)
        if not resume_step:
            self.writer.add_text("config", "\n".join(f"    {key}: {value!r}" for key, value in config.items()))

    def log(self, step: int, row: dict[str, Any]) -> None:
        for name, value in _scalars(row).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], resume_step: int = 0):
        self.run = wandb_module().init(project="hybrid-batch", name=config.get("run"), id=config.get("run"),
                                       config=config, dir=str(run_path), resume="allow")

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.run.log(_scalars(row), step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_module():
    try:
        import wandb
    except ImportError as error:
        raise ImportError("report_to='wandb' needs the wandb package, which is not installed: pip install wandb "
                          "(then wandb login, or WANDB_MODE=offline), or use report_to='tensorboard'") from error
    return wandb


def open_tracker(report_to: str, run_path: str | Path, config: dict[str, Any], resume_step: int = 0) -> Tracker:
    """The tracker ``report_to`` names, writing for the run in ``run_path``."""
    trackers = {"none": Tracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}
    if report_to not in trackers:
        raise ValueError(f"report_to {report_to!r}: expected one of {REPORT_TO}")
    if report_to == "none":
        return Tracker()
    return trackers[report_to](Path(run_path), config, resume_step)
