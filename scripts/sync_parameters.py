"""Regenerate the parameters cell of every step notebook from its configuration dataclass.

    python scripts/sync_parameters.py          # rewrite the cells that are out of date
    python scripts/sync_parameters.py --check  # exit 1 if any is (what tests/test_parameters.py checks)

One source of truth: a field added to ``DataConfig``, ``SamplingConfig``, ``TrainConfig``,
``EvaluateConfig``, ``BiasConfig`` or ``ReportConfig`` reaches its notebook (papermill) through
this script and the grid through the dataclass itself. The cells are plain constants (the
defaults); the smoke profile is applied by the cell after them (``lib.parameters.notebook_config``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import batch_composition, bias, data_figures, evaluate, report, train  # noqa: E402
from lib.io import PROJECT_ROOT  # noqa: E402
from lib.parameters import notebook_parameters  # noqa: E402

# each step notebook and the dataclass of its parameters
CONFIGS = {"01_data": data_figures.DataConfig, "02_sampling": batch_composition.SamplingConfig,
           "03_train": train.TrainConfig, "04_evaluate": evaluate.EvaluateConfig, "05_bias": bias.BiasConfig,
           "06_report": report.ReportConfig}


def sync(check: bool = False) -> list[str]:
    """The notebooks whose parameters cell differed (rewritten unless ``check``)."""
    stale = []
    for name, config in CONFIGS.items():
        path = PROJECT_ROOT / "notebooks" / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        source = notebook_parameters(config)
        if cell.source != source:
            stale.append(name)
            if not check:
                cell.source = source
                nbformat.write(notebook, path)
    return stale


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale cells, change nothing")
    args = parser.parse_args()
    stale = sync(check=args.check)
    print(("stale: " if args.check else "rewritten: ") + (", ".join(stale) or "none"))
    sys.exit(1 if args.check and stale else 0)
