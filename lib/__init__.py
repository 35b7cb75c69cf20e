"""Hybrid batch training for multilingual dense retrieval (arXiv 2408.10536), as a library.

One module per step of the flow: data -> sampling -> model -> train -> retrieval -> metrics ->
bias -> report. Notebooks in ``notebooks/`` are thin stories over these modules.
"""

__version__ = "0.1.0"
