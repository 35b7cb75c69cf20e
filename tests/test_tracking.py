"""report_to as in HF Trainer: a list, comma-separated names or "all"; MLflow in a local file store
(offline); hyper-parameters and evaluation metrics reach the same tracker run as the training."""

from __future__ import annotations

import pytest

from lib.io import write_json
from lib.tracking import MultiTracker, log_evaluation, mlflow_name, open_tracker, resolve_report_to


def test_report_to_takes_lists_comma_separated_names_and_all():
    assert resolve_report_to("none") == [] and resolve_report_to("tensorboard") == ["tensorboard"]
    assert resolve_report_to("tensorboard, mlflow") == ["tensorboard", "mlflow"]
    assert resolve_report_to(["mlflow", "tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]
    assert {"tensorboard", "mlflow"} <= set(resolve_report_to("all"))       # both installed (requirements.txt)
    with pytest.raises(ValueError, match="report_to 'neptune': expected one of"):
        resolve_report_to("neptune")
    assert mlflow_name("eval/xquad-r_multi_map@20") == "eval/xquad-r_multi_map_at_20"


def _mlflow_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(  # the file store of lib.tracking (MLFLOW_ALLOW_FILE_STORE set by it)
       tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("hybrid-batch")
    return client, client.search_runs([experiment.experiment_id])


def test_training_and_its_evaluation_log_to_one_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HBT_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_path = tmp_path / "train-run"
    config = {"run": "train-run", "learning_rate": 3e-5, "sampler": "hybrid", "report_to": "tensorboard,mlflow"}
    tracker = open_tracker(config["report_to"], run_path, config)
    assert isinstance(tracker, MultiTracker)
    for step in (1, 2):
        tracker.log(step, {"loss": 1.0 / step, "lr": 3e-5, "val_loss": None})
    tracker.close()
    write_json(run_path / "config.json", config)
    write_json(run_path / "metrics.json", {"steps": 2})
    (run_path / "model").mkdir()
    assert log_evaluation(run_path / "model", {"xquad-r_multi_map@20": 0.4, "xquad-r_all_n": 3, "note": "x"}) == [
        "tensorboard", "mlflow"]
    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].data.tags["hbt_run"] == "train-run"
    run = runs[0]
    assert run.data.params["learning_rate"] == "3e-05" and run.data.params["sampler"] == "hybrid"
    assert run.data.metrics["eval/xquad-r_multi_map_at_20"] == 0.4 and run.data.metrics["train/loss"] == 0.5
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert client.get_metric_history(run.info.run_id, "eval/xquad-r_multi_map_at_20")[0].step == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_path / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("eval/xquad-r_multi_map@20")] == pytest.approx([0.4])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]                 # nothing purged


def test_evaluation_of_an_untracked_training_logs_nowhere(tmp_path):
    write_json(tmp_path / "run" / "config.json", {"report_to": "none"})
    assert log_evaluation(tmp_path / "run" / "model", {"a_b_c": 1.0}) == []
    assert log_evaluation(tmp_path / "elsewhere" / "model", {"a_b_c": 1.0}) == []
