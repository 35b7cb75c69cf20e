"""Grids with real processes: two notebook jobs at once, one grid per outputs folder, Ctrl-C / SIGTERM.

Each kernel talks over IPC sockets in its own runtime folder (``lib.notebooks.IPCKernelManager``),
so kernels started together cannot share sockets; the outputs folder is locked while a grid runs;
a stopped grid stops its notebook job (and that job's kernel) and records it as ``interrupted``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from lib.grid import outputs_lock, run_grid
from lib.grid_plan import GridError, load_grid
from lib.io import PROJECT_ROOT, outputs_dir, read_json
from lib.notebooks import NOTEBOOKS_DIR, RUNTIME_PREFIX, execute_subprocess
from lib.scheduler import Job, run_jobs


def _runtime_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*")}


def test_two_real_notebook_jobs_run_at_once(tmp_path):
    """Two 04_evaluate kernels started together (tiny backbone, 3 questions, two languages) both
    complete; no socket is left in notebooks/ and no runtime folder in the temporary folder."""
    before = _runtime_folders()
    parameters = {"backbone": "tiny", "dataset": "xquad-r", "max_questions": 3, "languages": "de,en",
                  "run_depth": 0, "device": "cpu", "batch_size": 64}
    jobs = [Job("evaluate", "04_evaluate.ipynb", f"two-{i}", {**parameters, "run": f"two-{i}"}) for i in range(2)]
    table = run_jobs(jobs, execute_subprocess, outputs_dir() / "two", workers=2, devices=[])
    assert table.status.tolist() == ["done", "done"], table
    first, second = (read_json(outputs_dir() / f"two-{i}" / "metrics.json")["summary"] for i in range(2))
    assert first == second and 0 < first["xquad-r_multi_map"] <= 1
    assert list(NOTEBOOKS_DIR.glob("kernel-ipc-*")) == []
    assert _runtime_folders() <= before


def test_a_second_grid_on_the_same_outputs_folder_is_refused(tmp_path):
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono"], "seeds": [0], "train_datasets": ["mlqa-r"],
            "eval_datasets": ["xquad-r"], "zero_shot": False, "train": {"steps": 2, "batch_size": 4}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    loaded = load_grid(tmp_path / "g.yaml")
    with outputs_lock(loaded):
        with pytest.raises(GridError, match=rf"outputs folder {outputs_dir()} is in use by another grid \(pid "
                           rf"{os.getpid()} on .*, grid .*g.yaml, started .*\); wait for it to end, or point "
                           "HBT_OUTPUTS at another folder"):
            run_grid(loaded, execute=lambda *a, **k: None)
    assert not (outputs_dir() / "g").exists()


SLEEPER = """
import os, time
open(os.environ["HBT_TEST_PID_FILE"], "w").write(str(os.getpid()))
print("kernel started", flush=True)
time.sleep(300)
"""


def test_a_stopped_grid_stops_its_job_and_records_it_interrupted(tmp_path):
    """``python -m lib.grid`` (its training notebook replaced by one that sleeps, with 03_train's
    parameters): SIGTERM while the job runs ends the job's kernel, writes ``interrupted`` to
    status.csv and exits with 143 (Ctrl-C takes the same path: ``test_ctrl_c_ends_a_command_with_130``)."""
    signum = signal.SIGTERM
    train = nbformat.read(NOTEBOOKS_DIR / "03_train.ipynb", as_version=4)
    parameters = next(c for c in train.cells if "parameters" in c.metadata.get("tags", []))
    book = nbformat.v4.new_notebook()
    book.cells = [parameters, nbformat.v4.new_code_cell(SLEEPER)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(book, tmp_path / "sleeper.ipynb")
    grid = {"name": "g", "backbones": ["tiny"], "samplers": ["mono"], "seeds": [0], "train_datasets": ["mlqa-r"],
            "eval_datasets": ["xquad-r"], "zero_shot": False, "train": {"steps": 2, "batch_size": 4}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    script = ("import sys, lib.grid_plan, lib.grid\nfrom lib.cli import run_cli\n"
              f"lib.grid_plan.NOTEBOOKS['train'] = {str(tmp_path / 'sleeper.ipynb')!r}\n"
              f"sys.exit(run_cli(lib.grid.main, 'python -m lib.grid', (), [{str(tmp_path / 'g.yaml')!r}, "
              "'--only', 'train']))\n")
    pid_file = tmp_path / "kernel.pid"
    env = {**os.environ, "HBT_TEST_PID_FILE": str(pid_file), "PYTHONPATH": str(PROJECT_ROOT)}
    grid_process = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        assert grid_process.poll() is None, grid_process.communicate()
        time.sleep(0.5)
    kernel = int(pid_file.read_text())
    grid_process.send_signal(signum)
    _, stderr = grid_process.communicate(timeout=120)
    assert grid_process.returncode == 128 + signum, stderr
    assert f"python -m lib.grid: interrupted ({signal.Signals(signum).name})" in stderr
    assert "Traceback" not in stderr
    status = pd.read_csv(outputs_dir() / "g" / "status.csv")
    assert status[["kind", "status"]].values.tolist() == [["train", "interrupted"]]
    for _ in range(20):                # the kernel is gone (killed with its process group)
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"kernel {kernel} still runs")
    assert not (outputs_dir() / status.run[0] / "COMPLETE.json").exists()


def test_ctrl_c_ends_a_command_with_130(capsys):
    from lib.cli import run_cli

    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(interrupted, "python -m lib.grid", (), []) == 130
    assert capsys.readouterr().err == "python -m lib.grid: interrupted (SIGINT)\n"


def test_a_failed_job_prints_its_error_line(capsys):
    """The grid names the error a job ended with, not only where its log is: on stderr, in
    status.csv's error column."""
    from lib.notebooks import JobFailed, error_line

    log = "step 1\nTraceback (most recent call last):\n  File x\nValueError: batch_size 9 is larger than the pool\n"
    assert error_line(log) == "ValueError: batch_size 9 is larger than the pool"
    assert error_line("just text\nlast line\n") == "last line"

    def failing(notebook, run, parameters, force=False, env=None):
        raise JobFailed(f"{notebook} for run {run} failed (exit 1)", error_line(log))

    table = run_jobs([Job("train", "03_train.ipynb", "r", {})], failing, outputs_dir() / "g")
    assert table.status.tolist() == ["failed"]
    assert ("[failed] r: ValueError: batch_size 9 is larger than the pool (the end of the log: outputs/r/runner.log)"
            in capsys.readouterr().err)
    assert pd.read_csv(outputs_dir() / "g" / "status.csv").error.tolist() == [
        "ValueError: batch_size 9 is larger than the pool"]
