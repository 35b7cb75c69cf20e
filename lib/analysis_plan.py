"""The primary (confirmatory) analysis of a grid, declared in its file before the run.

A grid file's ``analysis:`` section (or a preregistration file it names) fixes, per research
question, the comparisons, metrics, hypothesis, margins and level; :mod:`lib.analysis_report`
tests exactly these with :mod:`lib.seed_tests` and Holm-adjusts within each question, whatever
else the report holds. Everything else the report tests is exploratory::

    analysis:
      alpha: 0.05                              # family-wise level of each question (Holm)
      margins: {map: 0.005, rank_distance: 1%} # absolute, or % of the better (lower) mean
      questions:
        - name: hybrid non-inferior to mono and cross (the paper's claim)
          hypothesis: non-inferiority          # difference | superiority | non-inferiority
          a: hybrid a=0.5                      # system names as in the report's tables
          b: [mono, cross]                     # several: intersection-union, A against every one
          metrics: [mono map, cross map, multi map, multi rank_distance]

    analysis: {preregistered: params/preregistered.yaml}   # the file's analysis section, and its seeds

``difference`` puts two tests per (metric, comparator) in the family: the two-sided t-test and
the TOST equivalence test at the margin (so "equivalent" is Holm-adjusted like "different").
``superiority`` and ``non-inferiority`` are one-sided; with several comparators one
intersection-union test per metric. Lower is better for rank distance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.io import PROJECT_ROOT, read_yaml_mapping

HYPOTHESES = ("difference", "superiority", "non-inferiority")
DEFAULT_MARGINS = {"map": 0.005, "map@20": 0.005, "recall@1": 0.005, "recall@10": 0.005, "rank_distance": "1%"}
LOWER_IS_BETTER = ("rank_distance",)
SETTINGS = ("mono", "cross", "multi")
QUESTION_KEYS = {"name", "hypothesis", "a", "b", "metrics", "margins"}
PLAN_KEYS = {"alpha", "margins", "questions", "preregistered", "seeds", "note"}


class AnalysisPlanError(ValueError):
    """An analysis section is malformed; the message names the key and the fix."""


def direction(metric: str) -> int:
    """+1 where higher is better, -1 for rank distance (``metric``: ``multi map`` or ``map``)."""
    return -1 if metric.split(" ")[-1] in LOWER_IS_BETTER else 1


@dataclass(frozen=True)
class Question:
    """One research question: its comparisons are one Holm family."""

    name: str
    hypothesis: str
    a: str
    b: tuple[str, ...]
    metrics: tuple[str, ...]
    margins: dict[str, Any] = field(default_factory=dict)

    def margin(self, metric: str, mean_a: float, mean_b: float) -> float:
        """The margin of ``metric`` (``multi map``): absolute, or a percentage of the better mean."""
        value = self.margins[metric.split(" ")[-1]]
        if isinstance(value, str):
            fraction = float(value.rstrip("%")) / 100
            better = min(abs(mean_a), abs(mean_b)) if direction(metric) < 0 else max(abs(mean_a), abs(mean_b))
            return fraction * better
        return float(value)


@dataclass(frozen=True)
class AnalysisPlan:
    """The questions of a grid's primary analysis, their level, and (preregistered) the seeds."""

    questions: tuple[Question, ...]
    alpha: float = 0.05
    seeds: tuple[int, ...] = ()            # a preregistration's seeds: the grid must run exactly these
    source: str = ""

    def question(self, name: str) -> Question:
        return next(q for q in self.questions if q.name == name)


def _margin_value(value, where: str):
    if isinstance(value, str) and value.endswith("%"):
        try:
            if float(value[:-1]) > 0:
                return value
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise AnalysisPlanError(f"{where}: margin {value!r} must be a positive number or a percentage like '1%'")


def _margins(raw, where: str, base: dict) -> dict:
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise AnalysisPlanError(f"{where}: margins must be a mapping metric -> margin, e.g. {{map: 0.005}}")
    return {**base, **{str(k): _margin_value(v, f"{where}.margins.{k}") for k, v in raw.items()}}


def _names(value, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise AnalysisPlanError(f"{where} must be a system name or a list of them, got {value!r}")
    return tuple(values)


def _question(raw, where: str, margins: dict) -> Question:
    if not isinstance(raw, dict) or set(raw) - QUESTION_KEYS or not {"name", "hypothesis", "a", "b", "metrics"} <= set(raw):
        raise AnalysisPlanError(f"{where}: a question is a mapping with keys name, hypothesis, a, b, metrics "
                                f"(and margins), got {raw!r}")
    if raw["hypothesis"] not in HYPOTHESES:
        raise AnalysisPlanError(f"{where}: hypothesis {raw['hypothesis']!r}; expected one of {list(HYPOTHESES)}")
    metrics = _names(raw["metrics"], f"{where}.metrics")
    question = Question(str(raw["name"]), raw["hypothesis"], _names(raw["a"], f"{where}.a")[0],
                        _names(raw["b"], f"{where}.b"), metrics, _margins(raw.get("margins"), where, margins))
    for metric in metrics:
        setting, _, name = metric.partition(" ")
        if setting not in SETTINGS or not name:
            raise AnalysisPlanError(f"{where}: metric {metric!r} must be '<setting> <metric>' with setting one of "
                                    f"{list(SETTINGS)}, e.g. 'multi map'")
        if question.hypothesis != "superiority" and name not in question.margins:
            raise AnalysisPlanError(f"{where}: no margin for {name!r}; add it under margins")
    return question


def parse_analysis(raw, where: str = "analysis") -> AnalysisPlan | None:
    """An :class:`AnalysisPlan` from a grid file's ``analysis`` value (None when there is none)."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict) or set(raw) - PLAN_KEYS:
        raise AnalysisPlanError(f"{where}: expected a mapping with some of {sorted(PLAN_KEYS)}, got {raw!r}")
    if "preregistered" in raw:
        return load_preregistration(raw["preregistered"])
    alpha = raw.get("alpha", 0.05)
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise AnalysisPlanError(f"{where}.alpha must lie in (0, 0.5), got {alpha!r}")
    margins = _margins(raw.get("margins"), where, DEFAULT_MARGINS)
    questions = raw.get("questions")
    if not isinstance(questions, list) or not questions:
        raise AnalysisPlanError(f"{where}.questions must be a non-empty list of questions")
    parsed = tuple(_question(q, f"{where}.questions[{i}]", margins) for i, q in enumerate(questions))
    names = [q.name for q in parsed]
    if len(set(names)) != len(names):
        raise AnalysisPlanError(f"{where}: question names must be unique, got {names}")
    seeds = raw.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise AnalysisPlanError(f"{where}.seeds must be a list of integers, got {seeds!r}")
    return AnalysisPlan(parsed, float(alpha), tuple(seeds), where)


def load_preregistration(path: str | Path) -> AnalysisPlan:
    """The ``analysis`` section of a preregistration file (``params/preregistered.yaml``)."""
    path = Path(path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise AnalysisPlanError(f"preregistration {path.name} not found; expected a file under params/")
    raw = read_yaml_mapping(path, "preregistration keys")
    if "analysis" not in raw:
        raise AnalysisPlanError(f"{path.name}: no analysis section")
    analysis = dict(raw["analysis"])
    analysis.pop("preregistered", None)
    plan = parse_analysis(analysis, f"{path.name}: analysis")
    return AnalysisPlan(plan.questions, plan.alpha, plan.seeds, str(path.relative_to(PROJECT_ROOT))
                        if path.is_relative_to(PROJECT_ROOT) else path.name)


def check_plan_seeds(plan: AnalysisPlan | None, seeds, where: str) -> None:
    """A preregistered plan names its seeds; the grid must run exactly those."""
    if plan is not None and plan.seeds and sorted(int(s) for s in seeds) != sorted(plan.seeds):
        raise AnalysisPlanError(f"{where}: seeds {sorted(seeds)} differ from the preregistered seeds "
                                f"{sorted(plan.seeds)} ({plan.source}); run the preregistered seeds")
