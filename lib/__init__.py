"""Hybrid batch training for multilingual dense retrieval (arXiv 2408.10536), as a library.

One module per step of the flow: raw files -> questions, candidates, training pairs -> batches ->
model -> embeddings -> rankings -> metrics -> tables and figures. ``LAYERS`` below is the declared
order, bottom-up: a module imports only from its own layer or lower ones, and nothing imports in
a cycle (``tests/test_architecture.py`` parses lib/ and enforces both; docs/architecture.md is
the map). Notebooks in ``notebooks/`` are thin stories over these modules.
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("hardware", "io", "naming", "tatoeba_checksums")),
    ("data", ("data", "training_data", "sampling", "batch_composition", "data_figures")),
    ("model", ("backbones", "encode", "losses", "dual_encoder", "checkpoint")),
    ("training", ("trainer", "train", "weights")),
    ("retrieval", ("retrieval", "debias", "corpus", "indexes")),
    ("scores", ("metrics", "bias", "significance")),
    ("evaluation", ("results", "tatoeba", "miracl", "evaluate")),
    ("orchestration", ("notebooks", "scheduler", "grid")),
    ("report", ("gather", "report")),
)
