"""Hybrid batch training for multilingual dense retrieval (arXiv 2408.10536), as a library.

One module per step of the flow: raw files -> questions, candidates, training pairs -> batches ->
model -> embeddings -> rankings -> metrics -> tables and figures. ``LAYERS`` below is the declared
order, bottom-up: a module imports only from its own layer or lower ones, and nothing imports in
a cycle (``tests/test_architecture.py`` parses lib/ and enforces both; docs/architecture.md is
the map). Notebooks in ``notebooks/`` are thin stories over these modules.
"""

import warnings

__version__ = "0.1.0"

# In a notebook's kernel without ipywidgets, tqdm.auto (here and in sentence-transformers) falls back
# to text bars, which the executed notebook and runner.log keep; its "IProgress not found" warning
# about that fallback is noise in every executed notebook.
warnings.filterwarnings("ignore", message="IProgress not found")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("hardware", "io", "naming", "validation", "cli", "completion", "parameters", "tracking",
                     "tatoeba_checksums")),
    ("data", ("data", "training_data", "translation", "sources", "sampling", "batch_composition", "data_figures")),
    ("model", ("backbones", "dropout", "encode", "losses", "dual_encoder", "gradcache", "checkpoint", "model_card")),
    ("training", ("distill", "trainer", "train", "weights", "weight_systems", "st_sampler")),
    ("retrieval", ("retrieval", "run_files", "debias", "corpus", "indexes")),
    ("scores", ("metrics", "bias", "significance", "seed_tests", "analysis_plan")),
    ("evaluation", ("mteb_results", "results", "tatoeba", "miracl", "debias_evaluation", "evaluate")),
    ("orchestration", ("notebooks", "progress", "scheduler", "downloads", "grid_systems", "grid_plan", "grid", "slurm")),
    ("report", ("gather", "systems_report", "analysis_report", "report_tables", "report_plots", "report_curves", "report")),
)
