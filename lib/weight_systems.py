"""Weight-space systems of a grid as runs: a WiSE-FT or soup model written to ``outputs/<run>/``.

A grid job (``kind="merge"``, :mod:`lib.grid`) builds each model with :mod:`lib.weights` from
training runs that are complete, then the model is evaluated like a trained one:

* ``wise-ft``: ``(1 - lam) * zero-shot + lam * fine-tuned`` (Wortsman et al., arXiv 2109.01903),
  ``models`` = [the fine-tuned model folder], ``zero_shot`` = the registry backbone;
* ``soup``: the uniform parameter mean of ``models`` (e.g. the mono and the cross model of a seed).

The run folder holds ``<model_folder>/`` (a ``SentenceTransformer`` folder), ``config.json`` and,
last, ``metrics.json`` (what makes the run complete for the scheduler).

    build_weight_system("wise-l0.5-train-tiny-mono-mlqa-r-s0", {"method": "wise-ft", "lam": 0.5,
                        "zero_shot": "tiny", "models": ["outputs/train-tiny-mono-mlqa-r-s0/model"]})
    python -m lib.weight_systems --run <run> --parameters '{"method": "soup", "models": [...]}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lib.completion import clear_complete, is_complete, mark_complete
from lib.io import run_dir, write_json, write_provenance
from lib.weights import WeightsError, soup, wise_ft

METHODS = ("wise-ft", "soup")


def build_weight_system(run: str, parameters: dict[str, Any], force: bool = False) -> Path:
    """Write the model of ``parameters`` (method, models, lam, zero_shot, model_folder) to ``outputs/<run>/``."""
    path = run_dir(run)
    if not force and is_complete(path):
        print(f"[skip] {run}: complete", flush=True)
        return path
    clear_complete(path)
    method = parameters.get("method")
    models = [str(m) for m in parameters.get("models") or []]
    target = path / str(parameters.get("model_folder", "model"))
    missing = [m for m in models if not Path(m).is_dir()]
    if method not in METHODS:
        raise WeightsError(f"run {run}: method {method!r}, expected one of {METHODS}")
    if missing:
        raise WeightsError(f"run {run}: model folders {missing} do not exist; complete their training runs first")
    started = time.perf_counter()
    if method == "wise-ft":
        if len(models) != 1 or "zero_shot" not in parameters or "lam" not in parameters:
            raise WeightsError(f"run {run}: wise-ft needs one fine-tuned model, zero_shot and lam; got {parameters}")
        wise_ft(str(parameters["zero_shot"]), models[0], float(parameters["lam"]), target, name=run)
    else:
        soup(models, target, name=run)
    write_provenance(path, {"task": "merge", "run": run, **parameters})
    write_json(path / "metrics.json", {"summary": {"method": method, "models": len(models)},
                                       "timings": {"total_s": time.perf_counter() - started}})
    mark_complete(path, task="merge", method=method)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the output folder, outputs/<run>/")
    parser.add_argument("--parameters", required=True, help="method, models, lam, zero_shot, model_folder as JSON")
    parser.add_argument("--force", action="store_true", help="build a complete run again")
    args = parser.parse_args(argv)
    build_weight_system(args.run, json.loads(args.parameters), force=args.force)


if __name__ == "__main__":
    main()
