"""One run-naming scheme for every step: the folder names under ``outputs/``.

Names are deterministic, so a grid stopped and started again finds its runs, and a table can
name a configuration without reading its files. This module imports nothing from ``lib``: the
training step (:mod:`lib.train`), the grid (:mod:`lib.grid`) and the report all name runs here.

* training     ``train-<backbone>-<sampler>[-<label><value>...][-<objective>]-<sources>-s<seed>[-<tag>]``
  (sources joined by ``+``; one ``<label><value>`` per option the sampler declares, with the label
  it declares: ``lib.sampling.option_labels``), e.g. ``train-me5-small-q4-hybrid-a0.5-mlqa-r-s0``;
  the objective part only when distilling (:func:`objective_text`):
  ``...-hybrid-a0.5-distill-mlqa-r-s0`` (InfoNCE + distillation, table name ``hybrid+distill``),
  ``...-hybrid-a0.5-distillonly-...`` (distillation alone, batches of the hybrid sampler:
  ``distill``); a budget grid's runs carry ``b<steps>`` in the tag (``...-s0-b160``) and their
  systems `` @<steps>``;
* evaluation   ``eval-<training run>-<dataset>[-paragraph]``;
  zero-shot    ``zeroshot-<backbone>-<dataset>-<candidate context>``;
* bias         ``bias-<evaluation run>``; the samplers side by side:
  ``bias-<grid>-<backbone>-<sources>-<dataset>[-<tag>]``;
* debiased     ``<evaluation run>-<variant>`` (``lib.debias``: ``...-xquad-r-center-pool``), written
  by the same 04_evaluate execution from the same embeddings; variant ``none`` is the run itself;
* weight space ``wise-l<lambda>-<training run>`` (WiSE-FT of one trained model) and
  ``soup-<backbone>-<sampler>+<sampler>-<sources>-s<seed>[-<tag>]`` (uniform soup), each then
  evaluated as ``eval-<that run>-<dataset>``.
"""

from __future__ import annotations

from typing import Mapping


def number_text(value: float) -> str:
    """``0.5`` -> ``"0.5"``, ``1.0`` -> ``"1"`` (shortest exact form, as in run names and tables)."""
    return f"{float(value):g}"


def _labels(options: Mapping[str, float] | None) -> Mapping[str, float]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"sampler options must be a mapping of labels to values (lib.sampling.option_labels), "
                        f"got {options!r}")
    return options


def system_name(sampler: str, options: Mapping[str, float] | None = None) -> str:
    """How a configuration is named in tables: ``mono``, ``hybrid a=0.5`` (``options``: the sampler's
    option labels and values, ``lib.sampling.option_labels``), ``zero-shot``."""
    return " ".join([sampler, *(f"{label}={number_text(value)}" for label, value in _labels(options).items())])


def budget_tag(steps: int | None) -> str:
    """``b160``: the run-name part of a grid's training budget (``budgets:``); empty without one."""
    return f"b{int(steps)}" if steps else ""


def budget_system_name(system: str, steps: int | None) -> str:
    """``hybrid a=0.5 @160``: a system trained at one budget of a budget grid; unchanged without one."""
    return f"{system} @{int(steps)}" if steps else system


def join_tags(*tags: str) -> str:
    """``"paper" + "b160"`` -> ``"paper-b160"``: run-name tags joined, empty ones dropped."""
    return "-".join(t for t in tags if t)


DISTILL_DEFAULTS = {"target": "english", "centering": False, "weight": 1.0}


def _distill_options(target: str, centering: bool, weight: float | None) -> list[str]:
    """What differs from the default distillation (english target, no centering, weight 1)."""
    options = [] if target == DISTILL_DEFAULTS["target"] else [str(target)]
    options += ["centered"] if centering else []
    options += [] if weight is None or float(weight) == DISTILL_DEFAULTS["weight"] else [f"w{number_text(weight)}"]
    return options


def objective_text(objective: str, target: str = "english", centering: bool = False, weight: float | None = 1.0) -> str:
    """The run-name part of a training objective: ``""`` (contrastive), ``distill`` (InfoNCE +
    distillation), ``distillonly`` (distillation alone), then the non-default options:
    ``distill-mean-centered-w2`` (target mean, centred targets, weight 2)."""
    if objective == "contrastive":
        return ""
    head = "distillonly" if objective == "distill" else "distill"
    return "-".join([head, *_distill_options(target, centering, weight if objective != "distill" else None)])


def distill_system_name(sampler: str, options: Mapping[str, float] | None, objective: str, target: str = "english",
                        centering: bool = False, weight: float | None = 1.0) -> str:
    """How a distillation system is named in tables: ``hybrid+distill`` (InfoNCE with the hybrid
    sampler at its default options, plus distillation), ``distill`` (alone, hybrid batches),
    ``mono+distill``, ``distill (mono batches, mean)``, ``hybrid a=0.7+distill (mean, centered, w=2)``.
    ``options``: the sampler's option labels and values where they differ from its defaults."""
    batches = system_name(sampler, options)
    extra = [o.replace("w", "w=", 1) if o.startswith("w") else o
             for o in _distill_options(target, centering, weight if objective != "distill" else None)]
    if objective != "distill":
        name = f"{batches}+distill"
    else:
        name, extra = "distill", ([] if batches == "hybrid" else [f"{batches} batches"]) + extra
    return name + (f" ({', '.join(extra)})" if extra else "")


def train_run_name(backbone: str, sampler: str, options: Mapping[str, float] | None, sources: str, seed: int,
                   tag: str = "", objective: str = "") -> str:
    """``train-me5-small-q4-hybrid-a0.5-mlqa-r-s0``: one ``<label><value>`` per sampler option
    (``options``: labels and values, ``lib.sampling.option_labels``), sources joined by ``+``;
    ``objective``: :func:`objective_text` of a distillation run (``distill``)."""
    parts = ["train", backbone, sampler, *(f"{label}{number_text(value)}" for label, value in _labels(options).items())]
    if objective:
        parts.append(objective)
    parts += ["+".join(s.strip() for s in sources.split(",") if s.strip()), f"s{seed}"]
    if tag:
        parts.append(tag)
    return "-".join(parts)


def eval_run_name(train_run: str, dataset: str, candidate_context: str = "sentence") -> str:
    """``eval-<train run>-<dataset>``, ``-paragraph`` appended for paragraph candidates."""
    return f"eval-{train_run}-{dataset}" + ("" if candidate_context == "sentence" else f"-{candidate_context}")


def zero_shot_run_name(backbone: str, dataset: str, candidate_context: str = "sentence") -> str:
    """``zeroshot-me5-small-q4-xquad-r-sentence``: the untrained backbone on one dataset."""
    return f"zeroshot-{backbone}-{dataset}-{candidate_context}"


def bias_run_name(eval_run: str) -> str:
    """``bias-<evaluation run>``: the language-bias analysis (05_bias) of one evaluation."""
    return f"bias-{eval_run}"


def comparison_run_name(grid_name: str, backbone: str, sources: str, dataset: str, tag: str = "") -> str:
    """``bias-<grid>-<backbone>-<sources>-<dataset>[-<tag>]``: one 05_bias run comparing the samplers."""
    return f"bias-{grid_name}-{backbone}-{sources.replace(',', '+')}-{dataset}" + (f"-{tag}" if tag else "")


def debias_run_name(eval_run: str, variant: str) -> str:
    """``<evaluation run>-<variant>``; variant ``none`` (no debiasing) is the evaluation run itself."""
    return eval_run if variant in ("", "none") else f"{eval_run}-{variant}"


def debias_system_name(system: str, variant: str) -> str:
    """``mono + center-pool``; ``none`` leaves the system's name as it is; a transductive variant
    (statistics from the test queries) is labelled ``(upper bound)``."""
    if variant in ("", "none"):
        return system
    return f"{system} + {variant}" + (" (upper bound)" if variant.endswith("-transductive") else "")


def wise_ft_run_name(train_run: str, lam: float) -> str:
    """``wise-l0.5-train-me5-small-q4-mono-mlqa-r-s0``: WiSE-FT of one training run."""
    return f"wise-l{number_text(lam)}-{train_run}"


def wise_ft_system_name(system: str, lam: float) -> str:
    """``mono WiSE-FT 0.5``: a trained system interpolated towards the zero-shot backbone."""
    return f"{system} WiSE-FT {number_text(lam)}"


def soup_run_name(backbone: str, samplers, sources: str, seed: int, tag: str = "") -> str:
    """``soup-me5-small-q4-mono+cross-mlqa-r-s0``: the uniform soup of the samplers' models of one seed."""
    parts = ["soup", backbone, "+".join(samplers), "+".join(s.strip() for s in sources.split(",") if s.strip()),
             f"s{seed}"]
    return "-".join(parts + ([tag] if tag else []))


def soup_system_name(samplers) -> str:
    """``soup mono+cross``."""
    return "soup " + "+".join(samplers)
