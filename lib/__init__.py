"""Hybrid batch training for multilingual dense retrieval (arXiv 2408.10536), as a library.

One module per step. The layers, in order; a module imports only from layers before its own
(one exception left: ``train.plot_loss_curves`` draws with ``report``):

1. foundations: ``io`` (paths, atomic writes, provenance), ``backbones`` (registry, loading);
2. data: ``data`` (LAReQA questions and candidates), ``training_data`` (training groups, the
   split by question id, leakage against the evaluation set);
3. encoding and training: ``encode`` (texts -> embeddings with a backbone's prefixes),
   ``sampling`` (batch samplers), ``losses`` (InfoNCE), ``train`` (the loop);
4. retrieval: ``retrieval`` (LAReQA rankings), ``corpus`` (sharded corpus embeddings), ``indexes``
   (faiss index types over them);
5. scores: ``metrics`` (mAP, mAP@20, recall, rank distance), ``bias`` (language preference),
   ``significance`` (paired tests);
6. evaluation: ``results`` (the ``Evaluation`` record, run folders, the dataset -> evaluator
   registry), ``tatoeba`` and ``miracl`` (datasets that register their evaluators),
   ``evaluate`` (LAReQA's evaluator and ``run_evaluation`` for any registered dataset);
7. reporting and orchestration: ``report`` (tables, figures), ``runner`` (notebooks via
   papermill), ``grid`` (the whole experiment).

Notebooks in ``notebooks/`` are thin stories over these modules.
"""

__version__ = "0.1.0"
