"""The grid's systems beyond the batch samplers: debiasing variants, weight-space models, distillation.

A grid file may add (``lib.grid``)::

    debias: [none, center-pool, lir-k1-pool, center-transductive]   # every evaluation, same embeddings
    wise_ft: {lambdas: [0.5], samplers: [hybrid, mono, cross]}      # default samplers: all but en
    soups: [[mono, cross]]                                          # uniform soup per seed
    distill:                                                        # training objectives (lib.distill)
      - {objective: distill}                                        # "distill" (hybrid batches)
      - {objective: contrastive+distill, sampler: hybrid}           # "hybrid+distill"

* **Debiasing variants** (``lib.debias``) cost no encoding beyond the pool's candidates with the
  query prefix (or the reference sentences): one 04_evaluate execution writes every variant,
  ``<evaluation run>-<variant>`` (``lib.naming.debias_run_name``).
* **WiSE-FT** ``(1 - lam) * zero-shot + lam * fine-tuned`` of every training run of the chosen
  samplers, and **soups** of the named samplers' models of the same seed and mixture: each is a
  ``merge`` job (``lib.weight_systems``) that needs its training runs, then evaluated like a
  trained model.
* **Distillation systems** (``lib.distill``, ``lib.losses.DistillationMSELoss``): training runs
  like a sampler's, with the ``objective`` and ``distill_*`` fields of ``lib.train.TrainConfig``
  an entry sets (``sampler`` default hybrid, ``alpha`` default 0.5, ``seeds`` default the grid's),
  named by ``lib.naming.distill_system_name`` (``distill``, ``hybrid+distill``,
  ``hybrid+distill (mean, centered)``) and ``objective_text`` in run names; evaluated with every
  debias variant like a trained model. They are neither samplers of the samplers' paired tests
  nor ingredients of WiSE-FT or soups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lib.debias_evaluation import parse_variants
from lib.losses import OBJECTIVES
from lib.naming import (budget_system_name, budget_tag, distill_system_name, join_tags, objective_text, soup_run_name,
                        soup_system_name, wise_ft_run_name, wise_ft_system_name)
from lib.sampling import SAMPLERS, option_labels, sampler_class

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
    budget: int | None = None        # budget grids: the training steps of the merged models


def _budget(cell) -> int | None:
    """The training budget of a trained cell (``lib.grid_plan.Cell.budget``; ``None`` outside budget grids)."""
    return getattr(cell, "budget", None)


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
                                        (cell.train_run,), cell.backbone, cell.train_sources, cell.seed, lam,
                                        _budget(cell)))
    groups = {}
    for cell in trained:     # a soup's ingredients share backbone, mixture, seed and budget
        groups.setdefault((cell.backbone, cell.train_sources, cell.seed, _budget(cell)), []).append(cell)
    for (backbone, sources, seed, budget), cells in groups.items():
        for ingredients in soups or []:
            chosen = [next((c for c in cells if c.sampler == s), None) for s in ingredients]
            if all(chosen):
                out.append(WeightSystem("soup", soup_run_name(backbone, ingredients, sources, seed,
                                                              join_tags(tag, budget_tag(budget))),
                                        budget_system_name(soup_system_name(ingredients), budget),
                                        tuple(c.train_run for c in chosen), backbone, sources, seed, None, budget))
    return out


DISTILL_FIELDS = ("distill_weight", "distill_target", "distill_target_centering", "distill_teacher")
DISTILL_KEYS = ("objective", "sampler", "alpha", "seeds", *DISTILL_FIELDS)


@dataclass(frozen=True)
class DistillSystem:
    """One distillation system of a grid: its batches (``sampler``, ``alpha``), ``objective`` and
    the TrainConfig fields it sets (``train``: objective and distill_* pairs)."""

    sampler: str
    alpha: float | None
    objective: str
    train: tuple[tuple[str, Any], ...]
    seeds: tuple[int, ...] | None = None       # None: the grid's seeds

    def _option(self, name: str, default: Any) -> Any:
        return dict(self.train).get(name, default)

    @property
    def options(self) -> dict[str, float]:
        """The sampler's options (``{"alpha": 0.5}`` for hybrid, ``{}`` otherwise)."""
        return {} if self.alpha is None else {"alpha": self.alpha}

    @property
    def labels(self) -> dict[str, float]:
        """The options as run names show them (``{"a": 0.5}``; ``lib.sampling.option_labels``)."""
        return option_labels(self.sampler, self.options)

    @property
    def system(self) -> str:
        """``distill``, ``hybrid+distill``, ``hybrid+distill (mean, centered)`` (lib.naming); the
        sampler's options appear only where they differ from its defaults."""
        declared = sampler_class(self.sampler).params
        changed = {k: v for k, v in self.options.items() if k not in declared or v != declared[k].default}
        return distill_system_name(self.sampler, option_labels(self.sampler, changed) if changed else None,
                                   self.objective, self._option("distill_target", "english"),
                                   self._option("distill_target_centering", False), self._option("distill_weight", 1.0))

    @property
    def run_part(self) -> str:
        """The objective's part of the training run name (``distill``, ``distillonly-mean``)."""
        return objective_text(self.objective, self._option("distill_target", "english"),
                              self._option("distill_target_centering", False), self._option("distill_weight", 1.0))


def distill_systems(distill: Any, where: str = "grid") -> list[DistillSystem]:
    """The grid's ``distill`` list as systems: each entry a mapping of ``objective`` (distill |
    contrastive+distill), optional ``sampler`` (hybrid), ``alpha`` (0.5, hybrid only), ``seeds``
    and the ``distill_*`` fields of ``lib.train.TrainConfig``; two entries may not name one system."""
    systems = []
    for entry in distill or []:
        if not isinstance(entry, dict) or set(entry) - set(DISTILL_KEYS):
            raise GridSystemsError(f"{where}: each distill entry is a mapping of {list(DISTILL_KEYS)}, got {entry!r}")
        objective = entry.get("objective")
        if objective not in OBJECTIVES or objective == "contrastive":
            raise GridSystemsError(f"{where}: distill entry {entry!r}: objective must be 'distill' or "
                                   "'contrastive+distill' (plain contrastive runs are the grid's samplers)")
        sampler = str(entry.get("sampler", "hybrid"))
        if sampler not in SAMPLERS:
            raise GridSystemsError(f"{where}: distill entry {entry!r}: unknown sampler {sampler!r}; expected one of "
                                   f"{SAMPLERS}")
        if "alpha" in entry and sampler != "hybrid":
            raise GridSystemsError(f"{where}: distill entry {entry!r}: alpha is the hybrid sampler's; remove it")
        alpha = float(entry.get("alpha", 0.5)) if sampler == "hybrid" else None
        seeds = entry.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds)):
            raise GridSystemsError(f"{where}: distill entry {entry!r}: seeds must be a non-empty list of integers")
        train = (("objective", objective),) + tuple((k, entry[k]) for k in DISTILL_FIELDS if k in entry)
        systems.append(DistillSystem(sampler, alpha, objective, train, tuple(seeds) if seeds else None))
    names = [s.system for s in systems]
    if len(set(names)) != len(names):
        raise GridSystemsError(f"{where}: distill entries name the same system twice ({names})")
    return systems
