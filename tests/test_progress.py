"""Progress you can see: one line per grid job with the time left, each job's output streamed to
its runner.log, and kernels without the TCP warning."""

from __future__ import annotations

import re

import nbformat
import yaml

from lib.grid import run_grid
from lib.grid_plan import load_grid, plan_jobs
from lib.io import run_dir, write_json
from lib.notebooks import execute_subprocess
from lib.progress import GridProgress, clock


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_remaining_time_starts_from_the_estimate_and_follows_measured_times():
    now = FakeClock()
    progress = GridProgress(4, {"a": 10.0, "b": 10.0, "c": 20.0, "d": 0.0}, now=now)
    assert progress.start_line("train", "a") == "[job 1/4 | 0:00:00 elapsed | ~0:00:40 left] train a"
    now.t += 20                                        # a took twice its estimate
    progress.job_ended("a", "done", 20.0)
    progress.job_ended("b", "skipped", 0.0)            # complete: leaves the sum, not the speed
    assert progress.speed == 2.0
    assert progress.start_line("evaluate", "c") == (
        "[job 3/4 | 0:00:20 elapsed | ~0:00:40 left, estimate x2.00 from measured times] evaluate c")
    progress.job_ended("c", "failed", 5.0)             # a failure says nothing about speed
    assert progress.speed == 2.0 and progress.remaining_s() == 0.0
    assert GridProgress(2, {"a": 30.0, "b": 30.0}, workers=2).remaining_s() == 30.0
    assert GridProgress(1).start_line("bias", "x") == "[job 1/1 | 0:00:00 elapsed] bias x"  # no estimate
    assert clock(3725.4) == "1:02:05"


def test_grid_prints_one_progress_line_per_job(tmp_path, capsys):
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono"], "seeds": [0],
            "train_datasets": ["mlqa-r"], "eval_datasets": ["xquad-r"], "zero_shot": True,
            "train": {"steps": 2, "batch_size": 4}, "evaluate": {"max_questions": 6, "device": "cpu"},
            "report": {"run": "report-g", "resamples": 100},
            "estimate": {"seconds_per_step": 30, "evaluation_minutes": {"xquad-r": 1}, "bias_s": 10, "report_s": 5}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid), encoding="utf-8")
    grid = load_grid(path)

    def execute(notebook, run, parameters, force=False, env=None):
        write_json(run_dir(run) / "metrics.json", {"summary": {}})
        return run_dir(run)

    run_grid(grid, execute=execute)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[job ")]
    jobs = plan_jobs(grid)
    assert len(lines) == len(jobs)
    for number, (line, job) in enumerate(zip(lines, jobs), start=1):
        assert re.match(rf"\[job {number}/{len(jobs)} \| \d:\d\d:\d\d elapsed \| ~\d:\d\d:\d\d left.*\] "
                        rf"{job.kind} {job.run} \(worker 0\)$", line), line
    # before any job, the grid's estimate: 2 evaluations (60 s each), 1 training (2 steps * 30 s), 2 bias
    # analyses (10 s), their comparison (2 runs * 10 s) and the report (5 s)
    assert lines[0].split("| ~")[1].startswith("0:03:45 left")


def test_job_output_is_streamed_to_runner_log_without_the_tcp_warning(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell("run = ''", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("import sys\nprint('stdout of the cell')\n"
                                                "print('stderr of the cell', file=sys.stderr)")]
    source = tmp_path / "echo.ipynb"
    nbformat.write(notebook, source)
    path = execute_subprocess(str(source), "echo", {})
    log = (path / "runner.log").read_text(encoding="utf-8")
    assert "stdout of the cell" in log and "stderr of the cell" in log
    assert "without encryption" not in log
