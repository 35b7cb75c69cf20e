"""The primary test: seeds as the unit, a t-test on per-seed means with its small-sample df.

Each run (one trained model, one seed) gives one number per metric: its macro metric over the
benchmark's questions (the questions are averaged within the seed). Two systems A and B are
compared on these per-seed values; the benchmark is fixed, so the inference is about what another
seed (another training run) would give on it.

| design      | when                                                          | delta, se, df                                       |
|-------------|---------------------------------------------------------------|-----------------------------------------------------|
| paired      | A and B come from the same trained model of each seed (a debias variant or WiSE-FT of a model against the model) | ``d_s = a_s - b_s``; ``mean(d)``, ``sd(d) / sqrt(n)``, ``n - 1`` |
| one-sample  | B is one deterministic run (zero-shot), A has seeds (or the reverse) | ``a_s - b``; as paired                         |
| welch       | A and B are trained separately                                | ``mean(a) - mean(b)``, ``sqrt(v_a/n_a + v_b/n_b)``, Welch-Satterthwaite |

From ``(delta, se, df)`` with ``T ~ t(df)`` and ``g = direction * delta`` (direction +1 where
higher is better, -1 for rank distance):

* two-sided difference ``p = 2 P(T >= |delta| / se)``; interval ``delta ± t_{1-a/2} se``;
* superiority (H0: ``g <= 0``) ``p = P(T >= g / se)``;
* non-inferiority at margin ``m`` (H0: ``g <= -m``) ``p = P(T >= (g + m) / se)``;
* equivalence (TOST, H0: ``|delta| >= m``) ``p = max(P(T >= (delta + m) / se), P(T >= (m - delta) / se))``,
  whose ``1 - 2a`` interval ``delta ± t_{1-a} se`` lies inside ``(-m, m)`` exactly when ``p < a``;
* minimum detectable effect at power ``1 - b``: ``(t_{1-a/k} + t_{1-b}) se`` (``k`` = 2 two-sided,
  1 one-sided), the approximation of the non-central t that G*Power and ``statsmodels``' power
  module print; for TOST the smallest margin it could show at zero difference,
  ``(t_{1-a} + t_{1-b/2}) se``.

The p-values are exact under normal seed effects (no resampling floor); ``scipy.stats.t`` computes
them. References: Welch (1947); Schuirmann (1987) for TOST; Berger (1982) for the
intersection-union test (:func:`intersection_union`: A non-inferior to every comparator, ``p`` the
largest of the one-sided p-values, no multiplicity correction needed within it).

    estimate = seed_level_estimate([.54, .55, .53], [.52, .53, .52], paired=False)
    estimate.p_difference(), estimate.p_non_inferiority(0.005), estimate.tost(0.005)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

DESIGNS = ("paired", "one-sample", "welch")


@dataclass(frozen=True)
class SeedLevelEstimate:
    """A minus B on per-seed values: the difference, its standard error and degrees of freedom."""

    design: str          # paired | one-sample | welch
    mean_a: float
    mean_b: float
    delta: float         # mean of A - mean of B (paired: mean of the per-seed differences)
    se: float            # standard error of delta (0: no spread; NaN: not estimable)
    df: float            # t degrees of freedom (NaN: not estimable, e.g. one run on each side)
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def testable(self) -> bool:
        return bool(np.isfinite(self.se) and np.isfinite(self.df) and self.df > 0)

    def _upper_tail(self, numerator: float) -> float:
        """``P(T >= numerator / se)``; a zero se gives 0 or 1 (or 0.5 exactly at 0)."""
        if not self.testable:
            return math.nan
        if self.se == 0:
            return 0.0 if numerator > 0 else (0.5 if numerator == 0 else 1.0)
        return float(stats.t.sf(numerator / self.se, self.df))

    def p_difference(self) -> float:
        """Two-sided p of H0: delta = 0."""
        return min(1.0, 2 * self._upper_tail(abs(self.delta))) if self.testable else math.nan

    def p_superiority(self, direction: int = 1) -> float:
        """One-sided p of H0: A is not better (``direction * delta <= 0``)."""
        return self._upper_tail(direction * self.delta)

    def p_non_inferiority(self, margin: float, direction: int = 1) -> float:
        """One-sided p of H0: A is worse by the margin or more (``direction * delta <= -margin``)."""
        return self._upper_tail(direction * self.delta + margin)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Two-sided t interval of delta."""
        if not self.testable:
            return math.nan, math.nan
        half = float(stats.t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return self.delta - half, self.delta + half

    def tost(self, margin: float, alpha: float = 0.05) -> tuple[float, float, float]:
        """``(p_tost, low, high)``: TOST p-value and its ``1 - 2 alpha`` interval."""
        if margin <= 0:
            raise ValueError(f"equivalence margin must be > 0, got {margin}")
        p = max(self._upper_tail(self.delta + margin), self._upper_tail(margin - self.delta))
        low, high = self.interval(1 - 2 * alpha)
        return p, low, high

    def minimum_detectable_effect(self, alpha: float = 0.05, power: float = 0.8, sides: int = 2) -> float:
        """Smallest true |delta| the test finds with probability ``power`` at level ``alpha``."""
        if not self.testable:
            return math.nan
        return float((stats.t.ppf(1 - alpha / sides, self.df) + stats.t.ppf(power, self.df)) * self.se)

    def minimum_equivalence_margin(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """Smallest margin TOST shows with probability ``power`` when the true delta is 0."""
        if not self.testable:
            return math.nan
        return float((stats.t.ppf(1 - alpha, self.df) + stats.t.ppf(1 - (1 - power) / 2, self.df)) * self.se)


def _clean(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0 or np.isnan(values).any():
        raise ValueError(f"{name} must hold at least one per-seed value and no NaN, got {values.tolist()}")
    return values


def seed_level_estimate(a, b, paired: bool = False) -> SeedLevelEstimate:
    """The estimate of A - B from per-seed values ``a`` and ``b`` (see the module's table of designs).

    ``paired=True`` needs the same number of seeds in the same order (seed s of A and of B come from
    one trained model). A side with a single run against a side with several is a one-sample test.
    """
    a, b = _clean(a, "a"), _clean(b, "b")
    if paired and a.size != b.size:
        raise ValueError(f"a paired test needs one value per seed on both sides, got {a.size} and {b.size}: "
                         "keep the seeds both systems share")
    if paired or a.size == 1 or b.size == 1:
        differences = a - b if paired or a.size == b.size else (a - b[0] if b.size == 1 else a[0] - b)
        design = "paired" if paired or a.size == b.size == 1 else "one-sample"
        n = differences.size
        se = differences.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        return SeedLevelEstimate(design, float(a.mean()), float(b.mean()), float(differences.mean()),
                                 float(se), float(n - 1) if n > 1 else math.nan, int(a.size), int(b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if va + vb > 0 else float(a.size + b.size - 2)
    return SeedLevelEstimate("welch", float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), float(se),
                             float(df), int(a.size), int(b.size))


def intersection_union(p_values) -> float:
    """Intersection-union test of "A holds against every comparator": the largest p (Berger 1982)."""
    p = np.asarray(p_values, dtype=float)
    return float(p.max()) if p.size and not np.isnan(p).any() else math.nan


@dataclass(frozen=True)
class CrossedMixedModel:
    """A minus B from a linear mixed model with crossed random effects (the documented alternative)."""

    delta: float                 # the fixed effect of system A
    se: float                    # its model-based standard error
    p_value: float               # two-sided Wald z-test (statsmodels: no small-sample df)
    variances: dict              # variance components: run (seed), question, question x system, residual
    converged: bool

    def as_dict(self) -> dict:
        return asdict(self)


def crossed_mixed_model(table_a, table_b) -> CrossedMixedModel:
    """statsmodels ``MixedLM`` of the per-question metric with crossed random effects.

    ``table_a`` (S_A, C), ``table_b`` (S_B, C): cluster contributions per run
    (:func:`lib.significance.seed_cluster_tables`); ``C * X[s, c]`` is run ``s``'s metric on question
    id ``c``. Model: ``y = mu + delta [A] + u_run + v_question + w_question,system + e``, the
    random effects as variance components of one group (crossed, not nested). Not the primary
    test (docs/statistics.md): its Wald test has no small-sample df, and with one group the design
    matrix is dense (runs x questions rows, questions x 3 columns), so it is meant for subsets of
    questions, not for all 1,190 of XQuAD-R in a report.
    """
    import pandas as pd
    import statsmodels.formula.api as smf

    a, b = np.atleast_2d(np.asarray(table_a, float)), np.atleast_2d(np.asarray(table_b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"tables cover {a.shape[1]} and {b.shape[1]} question ids: align them first")
    clusters = a.shape[1]
    frames = [pd.DataFrame({"y": clusters * table[s], "system": float(label), "run": f"{label}{s}",
                            "question": np.arange(clusters)})
              for label, table in ((1, a), (0, b)) for s in range(len(table))]
    data = pd.concat(frames, ignore_index=True)
    data["interaction"] = data.question.astype(str) + ":" + data.system.astype(str)
    model = smf.mixedlm("y ~ system", data, groups=np.ones(len(data)), re_formula="0",
                        vc_formula={"run": "0 + C(run)", "question": "0 + C(question)",
                                    "interaction": "0 + C(interaction)"})
    fit = model.fit(reml=True)
    names = model.exog_vc.names
    variances = {name: float(value) for name, value in zip(names, fit.vcomp)}
    variances["residual"] = float(fit.scale)
    return CrossedMixedModel(float(fit.fe_params["system"]), float(fit.bse_fe["system"]),
                             float(fit.pvalues["system"]), variances, bool(fit.converged))
