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
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import papermill
from jupyter_client.manager import KernelManager
from traitlets import CaselessStrEnum

from lib.backbones import BackboneError
from lib.cli import run_cli
from lib.completion import clear_complete, mark_complete
from lib.completion import is_complete as run_is_complete
from lib.io import PROJECT_ROOT, outputs_dir, remove_orphaned_temporaries, run_dir

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


class IPCKernelManager(KernelManager):
    """A kernel manager whose kernel talks over local IPC sockets (files beside the connection file
    in Jupyter's runtime folder, removed at shutdown) instead of TCP ports on localhost: the
    kernel opens no port, and ipykernel has no cause to print "Kernel is running over TCP
    without encryption" (its warning for TCP without CurveZMQ keys) once per job."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)


def execute(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
            log_output: bool = False) -> Path:
    """Execute ``notebooks/<notebook>`` with papermill, ``parameters`` plus ``run``, into ``outputs/<run>/``.

    A complete run (its ``COMPLETE.json`` marker exists) is skipped unless ``force``; the marker is
    written once the executed notebook is.
    """
    source = check_parameters(notebook, parameters)
    path = run_dir(run)
    if not force and is_complete(run):
        print(f"[skip] {run}: complete")
        return path
    clear_complete(path)
    remove_orphaned_temporaries(path)
    started = time.perf_counter()
    print(f"[run ] {run}: {notebook} {parameters}", flush=True)
    papermill.execute_notebook(str(source), str(path / source.name), parameters={**parameters, "run": run},
                               cwd=str(source.parent), log_output=log_output, progress_bar=False,
                               kernel_manager_class=IPCKernelManager)
    mark_complete(path, notebook=source.name, parameters={**parameters, "run": run})
    print(f"[done] {run}: {time.perf_counter() - started:.0f} s", flush=True)
    return path


def execute_subprocess(notebook: str, run: str, parameters: dict[str, Any], force: bool = False,
                       env: dict[str, str] | None = None) -> Path:
    """:func:`execute` in a fresh Python process whose environment adds ``env`` (a worker's GPU or
    thread count); its output goes to ``outputs/<run>/runner.log``, whose end a failure quotes."""
    check_parameters(notebook, parameters)
    path = run_dir(run)
    if not force and is_complete(run):
        print(f"[skip] {run}: complete")
        return path
    command = [sys.executable, "-m", "lib.notebooks", notebook, "--run", run,
               "--parameters", json.dumps(parameters)] + (["--force"] if force else [])
    log = path / "runner.log"
    with open(log, "w", encoding="utf-8") as handle:
        result = subprocess.run(command, env={**os.environ, **(env or {})}, cwd=str(PROJECT_ROOT),
                                stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{notebook} for run {run} failed (exit {result.returncode}); the end of "
                           f"outputs/{run}/runner.log:\n{tail}")
    return path


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
    return source


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
    parser.add_argument("--force", action="store_true", help="execute a complete run again")
    args = parser.parse_args(argv)
    # papermill logs each cell's output as it comes (log_output): to stdout, i.e. runner.log
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    execute(args.notebook, args.run, json.loads(args.parameters), force=args.force, log_output=True)


if __name__ == "__main__":
    sys.exit(run_cli(main, "python -m lib.notebooks", (BackboneError,)))
