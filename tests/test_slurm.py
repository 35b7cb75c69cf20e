"""The grid on a cluster through submitit: one job per run, dependencies respected, complete runs
not submitted; run with submitit's local executor (each job its own process), offline."""

from __future__ import annotations

import json
import sys
import time

import cloudpickle
import pytest
import yaml
from submitit.slurm.slurm import _make_sbatch_string

from lib.grid_plan import load_grid, plan_jobs
from lib.completion import mark_complete
from lib.io import outputs_dir, run_dir, write_json
from lib.slurm import make_executor, slurm_dependency, submit_grid

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake runner travels to the jobs by value
KINDS = ("train", "evaluate", "report")


def fake_execute(notebook, run, parameters, force=False):
    """A notebook run that takes a moment, records when it ran, and writes the completion marker
    (``COMPLETE.json``, as lib.notebooks' runner does);
    the training of seed 1 fails."""
    started = time.time()
    if parameters.get("seed") == 1:
        raise RuntimeError("training broke")
    time.sleep(1.0)
    path = run_dir(run)
    (path / "ran.json").write_text(json.dumps({"start": started, "end": time.time(), "notebook": notebook}))
    write_json(path / "metrics.json", {"summary": {}})
    mark_complete(path, notebook=notebook)


def small_grid(tmp_path, seed=0):
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono"], "seeds": [seed],
            "train_datasets": ["mlqa-r"], "eval_datasets": ["xquad-r"], "zero_shot": False,
            "train": {"steps": 2, "batch_size": 4}, "evaluate": {"max_questions": 6, "device": "cpu"},
            "report": {"run": "report-g", "resamples": 100}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    return load_grid(path)


def ran(run):
    return json.loads((outputs_dir() / run / "ran.json").read_text())


def test_local_executor_runs_each_job_after_what_it_needs(tmp_path):
    grid = small_grid(tmp_path)
    executor = make_executor("local", folder=tmp_path / "submitit" / "%j", timeout_min=5, gpus_per_node=0)
    submitted = submit_grid(grid, executor, kinds=KINDS, execute=fake_execute)
    jobs = [job for job in plan_jobs(grid) if job.kind in KINDS]
    assert list(submitted) == [job.run for job in jobs] and len(jobs) == 3   # training, evaluation, report
    for job in submitted.values():
        assert job.result()
    for job in jobs:
        for needed in job.needs:
            assert ran(job.run)["start"] >= ran(needed)["end"], (job.run, needed)
    report = ran("report-g")
    assert all(report["start"] >= ran(job.run)["end"] for job in jobs if job.kind != "report")

    again = submit_grid(grid, make_executor("local", folder=tmp_path / "submitit" / "%j", gpus_per_node=0),
                        kinds=KINDS, execute=fake_execute)
    assert list(again) == ["report-g"]                 # the completion marker: nothing else is submitted
    again["report-g"].result()


def test_a_failed_training_fails_the_jobs_that_need_it(tmp_path):
    grid = small_grid(tmp_path, seed=1)                # fake_execute fails the training of seed 1
    submitted = submit_grid(grid, make_executor("local", folder=tmp_path / "submitit" / "%j", gpus_per_node=0),
                            kinds=("train", "evaluate"), execute=fake_execute)
    train, evaluate = [job for job in plan_jobs(grid) if job.kind in ("train", "evaluate")][:2]
    assert "training broke" in str(submitted[train.run].exception())
    assert "not complete" in str(submitted[evaluate.run].exception())


def test_slurm_jobs_carry_their_dependencies(tmp_path):
    assert slurm_dependency("evaluate", []) is None
    assert slurm_dependency("evaluate", ["12", "13"]) == "afterok:12:13"
    assert slurm_dependency("report", ["12"]) == "afterany:12"
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path,
                                 dependency=slurm_dependency("evaluate", ["12", "13"]))
    assert "#SBATCH --dependency=afterok:12:13" in script


@pytest.mark.parametrize("cluster", ["debug"])
def test_executor_parameters_are_submitits(tmp_path, cluster):
    executor = make_executor(cluster, folder=tmp_path, timeout_min=7, slurm_partition="gpu")
    assert executor.cluster == cluster
