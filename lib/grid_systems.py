"""The grid's systems beyond the batch samplers: debiasing variants and weight-space models.

A grid file may add (``lib.grid``)::

    debias: [none, center-pool, lir-k1-pool, center-transductive]   # every evaluation, same embeddings
    wise_ft: {lambdas: [0.5], samplers: [hybrid, mono, cross]}      # default samplers: all but en
    soups: [[mono, cross]]                                          # uniform soup per seed

* **Debiasing variants** (``lib.debias``) cost no encoding beyond the pool's candidates with the
  query prefix (or the reference sentences): one 04_evaluate execution writes every variant,
  ``<evaluation run>-<variant>`` (``lib.naming.debias_run_name``).
* **WiSE-FT** ``(1 - lam) * zero-shot + lam * fine-tuned`` of every training run of the chosen
  samplers, and **soups** of the named samplers' models of the same seed and mixture: each is a
  ``merge`` job (``lib.weight_systems``) that needs its training runs, then evaluated like a
  trained model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lib.debias_evaluation import parse_variants
from lib.naming import soup_run_name, soup_system_name, wise_ft_run_name, wise_ft_system_name

MERGE_JOB = "lib.weight_systems"       # the "notebook" of a merge job: a module, run in-process


class GridSystemsError(ValueError):
    """A grid's debias, wise_ft or soups key is malformed; the message names it and the fix."""


def debias_variants(debias: Any, where: str = "grid") -> list[str]:
    """The grid's ``debias`` list as variant names, ``none`` first (``lib.debias_evaluation.parse_variants``)."""
    try:
        return [spec.name for spec in parse_variants(debias)]
    except ValueError as error:
        raise GridSystemsError(f"{where}: debias: {error}") from error


@dataclass(frozen=True)
class WeightSystem:
    """One merged model: ``method`` wise-ft | soup, its inputs (training runs) and its run name."""

    method: str
    run: str
    system: str
    inputs: tuple[str, ...]          # training runs whose models are merged
    backbone: str
    sources: str
    seed: int
    lam: float | None = None


def check_weight_space(wise_ft: Any, soups: Any, samplers: Sequence[str], where: str = "grid") -> None:
    """``wise_ft: {lambdas: [...], samplers: [...]}`` and ``soups: [[a, b], ...]`` name the grid's samplers."""
    if wise_ft:
        if not isinstance(wise_ft, dict) or set(wise_ft) - {"lambdas", "samplers"} or not wise_ft.get("lambdas"):
            raise GridSystemsError(f"{where}: wise_ft must be {{lambdas: [0.5], samplers: [...]}}, got {wise_ft!r}")
        for lam in wise_ft["lambdas"]:
            if not 0 < float(lam) < 1:
                raise GridSystemsError(f"{where}: wise_ft lambda {lam!r} must lie in (0, 1): 0 is the zero-shot "
                                       "model, 1 the fine-tuned one, both already in the grid")
        unknown = sorted(set(wise_ft.get("samplers") or []) - set(samplers))
        if unknown:
            raise GridSystemsError(f"{where}: wise_ft samplers {unknown} are not samplers of the grid {list(samplers)}")
    for ingredients in soups or []:
        if not isinstance(ingredients, list) or len(ingredients) < 2 or set(ingredients) - set(samplers):
            raise GridSystemsError(f"{where}: each soups entry lists two or more of the grid's samplers "
                                   f"{list(samplers)}, got {ingredients!r}")


def weight_systems(trained: Sequence, wise_ft: Any, soups: Any, tag: str = "") -> list[WeightSystem]:
    """The merged models of the grid, from its trained cells (``lib.grid.Cell``: backbone,
    sampler, system, seed, train_sources, train_run), in the cells' order: for each seed the
    WiSE-FT models, then the soups whose every ingredient was trained with that seed."""
    out = []
    wise_samplers = set((wise_ft or {}).get("samplers") or {c.sampler for c in trained} - {"en"})
    for cell in trained:
        if wise_ft and cell.sampler in wise_samplers:
            for lam in (float(x) for x in wise_ft["lambdas"]):
                out.append(WeightSystem("wise-ft", wise_ft_run_name(cell.train_run, lam),
                                        wise_ft_system_name(cell.system, lam),
                                        (cell.train_run,), cell.backbone, cell.train_sources, cell.seed, lam))
    groups = {}
    for cell in trained:
        groups.setdefault((cell.backbone, cell.train_sources, cell.seed), []).append(cell)
    for (backbone, sources, seed), cells in groups.items():
        for ingredients in soups or []:
            chosen = [next((c for c in cells if c.sampler == s), None) for s in ingredients]
            if all(chosen):
                out.append(WeightSystem("soup", soup_run_name(backbone, ingredients, sources, seed, tag),
                                        soup_system_name(ingredients), tuple(c.train_run for c in chosen),
                                        backbone, sources, seed))
    return out
