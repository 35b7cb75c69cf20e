"""Experiment tracking of a training run and its evaluations: TensorBoard, Weights & Biases, MLflow.

``report_to`` follows the Hugging Face convention (``TrainingArguments.report_to``): ``none``
(the default: ``train_log.csv`` only), one backend, several (a list, or comma-separated:
``tensorboard,mlflow``) or ``all`` (every installed backend of ``BACKENDS``):

* ``tensorboard``: torch's ``SummaryWriter``, event files in ``outputs/<run>/tensorboard/``
  (``tensorboard --logdir outputs``);
* ``wandb``: needs the ``wandb`` package and a login or ``WANDB_MODE=offline``; the project is
  ``WANDB_PROJECT`` (default ``hybrid-batch``), the run id the run name;
* ``mlflow``: ``mlflow-skinny`` (requirements.txt); ``MLFLOW_TRACKING_URI``, else a local file
  store ``outputs/mlruns`` (offline; MLflow 3 keeps that store in maintenance mode and asks for
  ``MLFLOW_ALLOW_FILE_STORE=true``, which is set for it; ``mlflow ui --backend-store-uri
  outputs/mlruns`` with the full ``mlflow`` package); experiment ``MLFLOW_EXPERIMENT_NAME`` (default ``hybrid-batch``), one MLflow
  run per training run (tag ``hbt_run`` = the run name), the run's configuration as parameters.

Each optimizer step logs

    train/loss, train/learning_rate, train/pairs_per_second, and eval/val_loss when validated.

The run's configuration goes to each backend once (TensorBoard: a text, wandb: ``config``, MLflow:
parameters). An evaluation of a trained model folder (``lib.evaluate.run_evaluation``) logs its
summary metrics as ``eval/<key>`` into the same run of each backend its training reported to
(``log_evaluation``). A resumed run purges the TensorBoard events from its checkpoint's step on
(``purge_step``), so the steps a killed run had logged after its last checkpoint are not shown twice.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

from lib.io import outputs_dir, read_json

BACKENDS = ("tensorboard", "wandb", "mlflow")
REPORT_TO = ("none", "all", *BACKENDS)
BACKEND_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
TENSORBOARD_FOLDER = "tensorboard"
# train_log.csv column -> tracked scalar
SCALARS = {"loss": "train/loss", "lr": "train/learning_rate", "pairs_per_second": "train/pairs_per_second",
           "val_loss": "eval/val_loss"}


class Tracker:
    """No tracking (``report_to="none"``); the interface of the others."""

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Log the scalars of one ``train_log.csv`` row (missing or None values are left out)."""
        self.log_metrics(_scalars(row), step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log named numbers (an evaluation's summary) at ``step``."""

    def close(self) -> None:
        pass


class MultiTracker(Tracker):
    """Several backends at once (``report_to="tensorboard,mlflow"``)."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {name: float(row[column]) for column, name in SCALARS.items() if row.get(column) is not None}


class TensorBoardTracker(Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (requirements.txt)

        self.writer = SummaryWriter(log_dir=str(run_path / TENSORBOARD_FOLDER),
                                    purge_step=resume_step + 1 if resume_step else None)
        if resume_step == 0:
            self.writer.add_text("config", "\n".join(f"    {key}: {value!r}" for key, value in config.items()))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step or 0)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], resume_step: int = 0):
        self.run = wandb_module().init(project=os.environ.get("WANDB_PROJECT", "hybrid-batch"), name=config.get("run"),
                                       id=config.get("run"), config=config, dir=str(run_path), resume="allow")

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is None:
            self.run.summary.update(metrics)
        else:
            self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def wandb_module():
    try:
        import wandb
    except ImportError as error:
        raise ImportError("report_to='wandb' needs the wandb package, which is not installed: pip install wandb "
                          "(then wandb login, or WANDB_MODE=offline), or use report_to='tensorboard'") from error
    return wandb


def mlflow_name(name: str) -> str:
    """A metric or parameter name MLflow accepts (``map@20`` -> ``map_at_20``; no other signs)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


class MLflowTracker(Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], resume_step: int | None = 0):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # mlflow 3 refuses its file store unless asked (a database needs sqlalchemy, not in skinny)
            uri = (outputs_dir() / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "hybrid-batch")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run_name = str(config.get("run") or Path(run_path).name)
        found = self.client.search_runs([experiment_id], filter_string=f"tags.hbt_run = '{run_name}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags={"hbt_run": run_name}).info.run_id
            from mlflow.entities import Param

            params = [Param(mlflow_name(k), str(v)[:500]) for k, v in config.items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_name(k), float(v), now, step or 0)
                                                    for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MLflowTracker}


def resolve_report_to(report_to: str | Sequence[str]) -> list[str]:
    """The backends ``report_to`` names: a name, a list, comma-separated names, ``all`` (every
    installed backend) or ``none``; an unknown name raises ValueError naming the choices."""
    names = [n.strip() for n in (report_to.split(",") if isinstance(report_to, str) else report_to) if n.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown or not names:
        raise ValueError(f"report_to {report_to!r}: expected one of {REPORT_TO}, a list of them or comma-separated "
                         "names (tensorboard,mlflow)")
    if "all" in names:
        return [b for b in BACKENDS if importlib.util.find_spec(BACKEND_PACKAGES[b]) is not None]
    return [n for n in dict.fromkeys(names) if n != "none"]


def open_tracker(report_to: str | Sequence[str], run_path: str | Path, config: dict[str, Any],
                 resume_step: int | None = 0) -> Tracker:
    """The trackers ``report_to`` names, writing for the run in ``run_path``; ``resume_step``: the
    step a resumed run continues from, None to append to the run (an evaluation: nothing purged,
    no configuration logged again)."""
    backends = resolve_report_to(report_to)
    if "wandb" in backends:
        wandb_module()
    trackers = [TRACKERS[name](Path(run_path), config, resume_step) for name in backends]
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


def log_evaluation(model_dir: str | Path, summary: dict[str, Any]) -> list[str]:
    """Log an evaluation's numeric ``summary`` (as ``eval/<key>``) into the tracker runs of the
    training that wrote ``model_dir`` (``outputs/<run>/model``), at its last step; the backends
    logged to ([] when the training reported to none)."""
    train_dir = Path(model_dir).resolve().parent
    if not (train_dir / "config.json").is_file():
        return []
    config = read_json(train_dir / "config.json")
    backends = resolve_report_to(config.get("report_to") or "none")
    if not backends:
        return []
    step = (read_json(train_dir / "metrics.json").get("steps") if (train_dir / "metrics.json").is_file() else None)
    tracker = open_tracker(backends, train_dir, config, resume_step=None)
    try:
        tracker.log_metrics({f"eval/{key}": float(value) for key, value in summary.items()
                             if isinstance(value, (int, float)) and not isinstance(value, bool)}, step)
    finally:
        tracker.close()
    return backends
