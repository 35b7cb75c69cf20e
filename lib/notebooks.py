"""Execute one notebook with papermill into ``outputs/<run>/``, skipping a complete run.

A run is complete when its marker ``COMPLETE.json`` exists (:mod:`lib.completion`), written
after papermill has written the executed notebook, so after every artefact of the run; a forced
rerun removes it first. An interrupted run is simply executed again (training resumes from its
last checkpoint). Parameters the notebook does not declare are refused before anything runs
(papermill itself would only warn and run the defaults). :func:`execute` runs
papermill in this process, :func:`execute_subprocess` in a fresh one with extra environment (a
grid worker's GPU or thread count). papermill records the parameters in the executed notebook,
:func:`executed_parameters` reads them back. In a subprocess, every cell's output (training's and
encoding's tqdm bars too) is streamed to ``outputs/<run>/runner.log`` as it is printed. Kernels
talk over IPC sockets (:class:`IPCKernelManager`), not TCP on localhost.

    python -m lib.notebooks 04_evaluate.ipynb --run zeroshot-tiny-xquad-r-sentence \
        --parameters '{"backbone": "tiny", "dataset": "xquad-r"}'
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import papermill
from jupyter_client.manager import KernelManager
from traitlets import CaselessStrEnum

from lib.backbones import BackboneError
from lib.cli import run_cli
from lib.completion import check_run_claim, clear_complete, mark_complete, record_run
from lib.completion import is_complete as run_is_complete
from lib.io import PROJECT_ROOT, outputs_dir, remove_orphaned_temporaries, run_dir

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOK_KINDS = {"03_train.ipynb": "train", "04_evaluate.ipynb": "evaluate", "05_bias.ipynb": "bias",
                  "06_report.ipynb": "report"}      # the kind of run each notebook writes (run.json)


RUNTIME_PREFIX = "hbt-kernel-"


class IPCKernelManager(KernelManager):
    """A kernel manager whose kernel talks over local IPC sockets instead of TCP ports on localhost:
    the kernel opens no port, and ipykernel has no cause to print "Kernel is running over TCP
    without encryption" (its warning for TCP without CurveZMQ keys) once per job.

    Each kernel gets its own runtime folder (``$TMPDIR/hbt-kernel-<pid>-<random>/``: the connection
    file and the sockets ``kernel-ipc-N``), removed at shutdown. Without it jupyter_client would put
    every kernel's sockets at the relative path ``kernel-ipc-N`` of the working folder, and two
    kernels starting at once (``--workers 2``, two grids) could pick the same N ("Invalid
    Signature", "Kernel didn't respond")."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    live: list["IPCKernelManager"] = []             # this process's managers with a runtime folder

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime_folder = None
        if not self.connection_file:
            self.runtime_folder = Path(tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-"))
            self.connection_file = str(self.runtime_folder / "kernel.json")   # sockets: kernel-ipc-N beside it
            IPCKernelManager.live.append(self)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            self._remove_runtime_folder()

    def _remove_runtime_folder(self) -> None:
        if self.runtime_folder is not None:
            shutil.rmtree(self.runtime_folder, ignore_errors=True)
        if self in IPCKernelManager.live:
            IPCKernelManager.live.remove(self)

    @classmethod
    def kill_all(cls) -> None:
        """Kill the kernels (with their process groups) this process started and that still run:
        what an interrupted papermill leaves behind."""
        for manager in list(cls.live):
            provisioner = getattr(manager, "provisioner", None)
            pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
            if pgid:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
            manager._remove_runtime_folder()


def remove_stale_kernel_files() -> list[Path]:
    """Remove what killed kernels left: runtime folders of processes that no longer exist, and the
    ``notebooks/kernel-ipc-*`` sockets of the shared relative path earlier versions used."""
    stale = list(NOTEBOOKS_DIR.glob("kernel-ipc-*"))
    for folder in Path(tempfile.gettempdir()).glob(f"{RUNTIME_PREFIX}*"):
        pid = folder.name[len(RUNTIME_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.append(folder)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's process
        return True
    return True


def execute(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
            log_output: bool = False) -> Path:
    """Execute ``notebooks/<notebook>`` with papermill, ``parameters`` plus ``run``, into ``outputs/<run>/``.

    A complete run (its ``COMPLETE.json`` marker exists) is skipped unless ``force``; the marker is
    written once the executed notebook is.
    """
    source = check_parameters(notebook, parameters)
    kind = NOTEBOOK_KINDS.get(source.name, source.stem)
    check_run_claim(outputs_dir() / run, kind, parameters, source.name, force=force, fix="--force")
    path = run_dir(run)
    if not force and is_complete(run):
        print(f"[skip] {run}: complete")
        return path
    record_run(path, kind, parameters, source.name, replace=force)
    clear_complete(path)
    remove_orphaned_temporaries(path)
    remove_stale_kernel_files()
    started = time.perf_counter()
    print(f"[run ] {run}: {notebook} {parameters}", flush=True)
    papermill.execute_notebook(str(source), str(path / source.name), parameters={**parameters, "run": run},
                               cwd=str(source.parent), log_output=log_output, progress_bar=False,
                               kernel_manager_class=IPCKernelManager)
    mark_complete(path, notebook=source.name, parameters={**parameters, "run": run})
    print(f"[done] {run}: {time.perf_counter() - started:.0f} s", flush=True)
    return path


class JobFailed(RuntimeError):
    """A notebook job's process ended with an error; ``error_line`` is the error it printed last."""

    def __init__(self, message: str, error_line: str = "", interrupted: bool = False):
        super().__init__(message)
        self.error_line, self.interrupted = error_line, interrupted


_RUNNING: dict[int, subprocess.Popen] = {}        # the job processes of execute_subprocess, by pid
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()


def error_line(log_text: str) -> str:
    """The last line of a log that names an error (``ValueError: ...``), else its last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^([\w.]+(Error|Exception|Interrupt)|error:|[\w. -]+: error:)", line)]
    return (named or lines or [""])[-1][:300]


def execute_subprocess(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
                       env: dict[str, str] | None = None) -> Path:
    """:func:`execute` in a fresh Python process whose environment adds ``env`` (a worker's GPU or
    thread count); its output goes to ``outputs/<run>/runner.log``. A failure raises
    :class:`JobFailed` with the error's last line and the end of the log;
    :func:`stop_running_jobs` ends every such process (a grid stopped by Ctrl-C or SIGTERM)."""
    check_parameters(notebook, parameters)
    path = run_dir(run)
    if not force and is_complete(run):
        print(f"[skip] {run}: complete")
        return path
    command = [sys.executable, "-m", "lib.notebooks", notebook, "--run", run,
               "--parameters", json.dumps(parameters)] + (["--force"] if force else [])
    log = path / "runner.log"
    with open(log, "w", encoding="utf-8") as handle:
        with _RUNNING_LOCK:
            if _STOPPING.is_set():
                raise JobFailed(f"{notebook} for run {run} was not started: the grid is stopping", interrupted=True)
            process = subprocess.Popen(command, env={**os.environ, **(env or {})}, cwd=str(PROJECT_ROOT),
                                       stdout=handle, stderr=subprocess.STDOUT)
            _RUNNING[process.pid] = process
        try:
            returncode = process.wait()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(process.pid, None)
    if returncode != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        tail = "\n".join(text.splitlines()[-15:])
        raise JobFailed(f"{notebook} for run {run} failed (exit {returncode}); the end of outputs/{run}/runner.log:\n"
                        f"{tail}", error_line(text), interrupted=_STOPPING.is_set())
    return path


def accept_new_jobs() -> None:
    """Undo :func:`stop_running_jobs`'s refusal to start jobs (a new grid in the same process)."""
    _STOPPING.clear()


def stop_running_jobs(timeout: float = 60.0) -> list[int]:
    """Stop every job process of :func:`execute_subprocess` (SIGTERM: each shuts its kernel down; SIGKILL
    after ``timeout`` seconds) and start no new one; returns their pids."""
    _STOPPING.set()
    with _RUNNING_LOCK:
        processes = list(_RUNNING.values())
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.pid for process in processes]


def execute_when_ready(notebook: str, run: str, parameters: dict[str, Any], needs: Sequence[str] = (),
                       force: bool = False, execute: Callable = execute_subprocess) -> str:
    """What a cluster job of the grid runs (``lib.slurm``): check that the runs it needs are
    complete, then ``execute`` the notebook (:func:`execute_subprocess`; any picklable function)."""
    missing = [name for name in needs if not is_complete(name)]
    if missing:
        raise RuntimeError(f"run {run} needs {missing}, which are not complete (no completion marker in "
                           "outputs/<run>/); submit the grid again once they are")
    execute(notebook, run, parameters, force=force)
    return run


def notebook_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in a notebook's ``parameters`` cell (read with ``ast``, as papermill can't
    parse conditional defaults)."""
    path = Path(notebook)
    if not path.is_absolute():
        path = NOTEBOOKS_DIR / path
    names: set[str] = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def check_parameters(notebook: str, parameters: dict[str, Any]) -> Path:
    """The notebook's path, once it exists and declares every name of ``parameters`` (and ``run``)."""
    source = Path(notebook) if Path(notebook).is_absolute() else NOTEBOOKS_DIR / notebook
    if not source.is_file():
        raise FileNotFoundError(f"notebook {notebook} not found (a name in notebooks/ or an absolute path)")
    declared = notebook_parameters(source)
    unknown = sorted(set(parameters) - declared - {"run"})
    if unknown:
        raise ValueError(f"{source.name} has no parameter(s) {unknown} (papermill would ignore them and run "
                         f"the defaults); its parameters: {sorted(declared)}")
    check_parameter_values(source.name, parameters)
    return source


# the step configuration whose checks a notebook's parameters pass before it runs (06_report's is
# lib.report's, a layer above: its values are checked in the notebook)
NOTEBOOK_CONFIGS = {"03_train.ipynb": ("lib.train", "TrainConfig"), "04_evaluate.ipynb": ("lib.evaluate", "EvaluateConfig"),
                    "05_bias.ipynb": ("lib.bias", "BiasConfig")}


def check_parameter_values(notebook: str, parameters: dict[str, Any]) -> None:
    """Types and ranges of a step notebook's parameters, checked by its configuration class before
    a kernel starts (a bad value would otherwise leave a failed notebook behind)."""
    if notebook not in NOTEBOOK_CONFIGS:
        return
    module, name = NOTEBOOK_CONFIGS[notebook]
    config_class = getattr(importlib.import_module(module), name)
    fields = {f.name for f in dataclasses.fields(config_class)}
    config = config_class(**{k: v for k, v in parameters.items() if k in fields})
    if hasattr(config, "check"):
        config.check()


def executed_parameters(run: str, notebook: str) -> dict[str, Any] | None:
    """The parameters papermill recorded in ``outputs/<run>/<notebook>`` (None if absent)."""
    path = outputs_dir() / run / notebook
    if not path.is_file():
        return None
    metadata = nbformat.read(path, as_version=4).metadata
    return dict(metadata.get("papermill", {}).get("parameters", {}) or {})


def is_complete(run: str) -> bool:
    """``outputs/<run>/COMPLETE.json`` exists: every artefact of the run was written (lib.completion)."""
    return run_is_complete(outputs_dir() / run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="a notebook of notebooks/ (03_train.ipynb) or an absolute path")
    parser.add_argument("--run", required=True, help="the output folder, outputs/<run>/")
    parser.add_argument("--parameters", default="{}", help="the notebook's parameters as JSON")
    parser.add_argument("--force", action="store_true", help="execute a complete run again, or write over a run "
                        "folder that holds another kind of run or other parameters")
    args = parser.parse_args(argv)
    # papermill logs each cell's output as it comes (log_output): to stdout, i.e. runner.log
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as error:
        raise ValueError(f"--parameters {args.parameters!r} is not valid JSON ({error.msg} at character "
                         f"{error.pos}); write an object, e.g. '{{\"steps\": 4}}'") from None
    if not isinstance(parameters, dict):
        raise ValueError(f"--parameters {args.parameters!r}: expected a JSON object of name: value, "
                         "e.g. '{\"steps\": 4}'")
    try:
        execute(args.notebook, args.run, parameters, force=args.force, log_output=True)
    except KeyboardInterrupt:             # Ctrl-C or SIGTERM (lib.cli): no kernel may outlive this process
        IPCKernelManager.kill_all()
        raise


if __name__ == "__main__":
    from lib.trainer import TrainError

    sys.exit(run_cli(main, "python -m lib.notebooks", (BackboneError, TrainError)))
