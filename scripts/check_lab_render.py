"""Check, in a real headless browser, that an executed notebook shows its parameters, tables and figures.

Needs Chromium (``apt-get install chromium``); ``tests/test_notebooks.py`` runs it on an executed
notebook when Chromium is installed and skips otherwise. Two views:

* ``lab``: JupyterLab as the user meets it (``make lab``): a server on a free local port serving
  the notebook's folder, the notebook opened at ``/lab/tree/...`` in headless Chromium, the
  rendered page read back;
* ``html``: the notebook converted by nbconvert and rendered by Chromium.

Each must show the first line of the parameters cell and as many tables (``<table>``) and figures
(``<img>`` of a PNG) as the notebook's outputs hold. A screenshot of each view is written to the
output folder.

    python scripts/check_lab_render.py outputs/<run>/04_evaluate.ipynb [--views lab,html] [--out DIR]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# JupyterLab 4 renders only the cells in view ("full" windowing); "none" renders every cell
LAB_SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}


def expected_outputs(notebook: Path) -> tuple[int, int]:
    """(tables, figures) among the notebook's outputs: HTML with a <table>, and PNG images."""
    tables = figures = 0
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            tables += "<table" in "".join(data.get("text/html", ""))
            figures += "image/png" in data
    return tables, figures


def parameters_line(notebook: Path) -> str:
    """The first line of the notebook's parameters cell (what the page must show as text)."""
    for cell in nbformat.read(notebook, as_version=4).cells:
        if "parameters" in cell.metadata.get("tags", []):
            return cell.source.splitlines()[0]
    return ""


def shows_text(dom: str, line: str) -> bool:
    """``line`` in the page's text (tags removed: highlighted code is split into spans)."""
    text = html.unescape(re.sub(r"<[^>]+>", "", dom)).replace("\u00a0", " ")
    return " ".join(line.split()) in " ".join(text.split())


def chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def rendered_dom(url: str, screenshot: Path, wait_ms: int) -> str:
    """The page's DOM after ``wait_ms`` of virtual time, and a screenshot."""
    browser = chromium()
    if browser is None:
        sys.exit("no Chromium found: apt-get install chromium")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,6000", f"--virtual-time-budget={wait_ms}", "--hide-scrollbars"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=300, check=True).stdout
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=300, check=False)
    return dom


def count_rendered(dom: str) -> tuple[int, int]:
    tables = len(re.findall(r"<table\b", dom))
    figures = len(re.findall(r"<img\b[^>]*src=\"data:image/png", dom))
    return tables, figures


def html_view(notebook: Path, out: Path) -> str:
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir", str(out),
                    str(notebook)], check=True, capture_output=True)
    page = out / f"{notebook.stem}.html"
    return rendered_dom(page.as_uri(), out / f"{notebook.stem}-html.png", 5000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_view(notebook: Path, out: Path) -> str:
    """Serve the notebook's folder with JupyterLab (no token, local only), open it, read the page."""
    port = free_port()
    settings = Path(tempfile.mkdtemp(prefix="lab-settings-"))
    for name, values in LAB_SETTINGS.items():
        path = settings / name.split("/")[0] / name.split("/")[1] / name.split("/")[2]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
                               f"--ServerApp.root_dir={notebook.resolve().parent}",
                               *(["--allow-root"] if os.geteuid() == 0 else [])],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(out / "lab-server.log", "w"))
    try:
        for _ in range(120):
            if server.poll() is not None:
                sys.exit(f"jupyter lab stopped (exit {server.returncode}): see {out / 'lab-server.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2)
                break
            except OSError:
                time.sleep(1)
        return rendered_dom(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}", out / f"{notebook.stem}-lab.png",
                            60000)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(settings, ignore_errors=True)


def check(notebook: Path, view: str, out: Path) -> dict:
    """What ``view`` (lab or html) rendered of ``notebook``: tables, figures, and whether the
    parameters cell's first line shows, beside what the notebook's outputs hold."""
    dom = {"lab": lab_view, "html": html_view}[view](notebook, out)
    tables, figures = count_rendered(dom)
    want_tables, want_figures = expected_outputs(notebook)
    parameters = shows_text(dom, parameters_line(notebook))
    return {"view": view, "tables": tables, "figures": figures, "parameters": parameters,
            "expected_tables": want_tables, "expected_figures": want_figures,
            "ok": parameters and tables >= want_tables and figures >= want_figures and want_tables + want_figures > 0,
            "screenshot": out / f"{notebook.stem}-{view}.png"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", help="an executed notebook; default: the newest of outputs/*/")
    parser.add_argument("--views", default="lab,html", help="lab, html or both")
    parser.add_argument("--out", default=None, help="folder for the HTML and screenshots (default: a temporary one)")
    args = parser.parse_args(argv)
    notebook = Path(args.notebook) if args.notebook else max(
        (PROJECT_ROOT / "outputs").glob("*/*.ipynb"), key=lambda p: p.stat().st_mtime)
    out = Path(args.out or tempfile.mkdtemp(prefix="lab-render-"))
    out.mkdir(parents=True, exist_ok=True)
    want = expected_outputs(notebook)
    print(f"{notebook}: {want[0]} tables and {want[1]} figures in its outputs")
    failures = 0
    for view in args.views.split(","):
        result = check(notebook, view, out)
        failures += not result["ok"]
        print(f"{view}: {'ok' if result['ok'] else 'FAILED'}: {result['tables']} tables and {result['figures']} "
              f"figures rendered, parameters cell {'shown' if result['parameters'] else 'MISSING'} "
              f"(screenshot: {result['screenshot']})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
