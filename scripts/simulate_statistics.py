"""Level, coverage and false equivalence of the report's tests, on data with the README's variances.

    python scripts/simulate_statistics.py                 # 2,000 simulations per cell (the defaults)
    python scripts/simulate_statistics.py --sims 400 --bootstrap-sims 200   # quicker, coarser

Data (a crossed model, seeds x question ids): the per-question metric of run ``s`` of system ``k``
on question ``c`` is ``mu_k + u_{k,s} + q_c + i_{k,c} + e_{k,s,c}`` with the default grid's
values (README, default grid): seed sd ``u`` 0.006 (mono mAP's sd over seeds, the largest of the
three samplers: hybrid .004, cross .001-.002), 1,190 question ids, system x question sd
``i`` = per-run noise sd ``e`` = 0.029 (so that the per-question differences of two systems
averaged over 3 seeds have the sd .047 of the README's paired test: delta -.007 at d_z -0.15;
the split between the two is assumed). ``q_c`` cancels in every paired difference.

Measured, for 3, 5 and 10 seeds per system:

* the primary test (:mod:`lib.seed_tests`): two-sided level at alpha .05 and coverage of its 95%
  interval, Welch (separately trained systems) and paired (one trained model: a debias variant,
  sd of the per-seed differences = the seed sd); the estimand is the difference on this benchmark
  (``i`` fixed); ``--population`` also reports the level for the difference over the population
  of questions (``i`` redrawn), which the t-test does not target;
* its TOST false-equivalence rate when the true difference equals the margin (0.005);
* the two-way bootstrap (:func:`lib.significance.two_way_bootstrap`, the sensitivity analysis):
  coverage of its 95% interval and its TOST false-equivalence rate, on 200 question ids with the
  question-level sds scaled to keep ``sd / sqrt(C)`` (the bootstrap's cost grows with C);
* the setting of ``lib/significance.py``'s earlier header: 3 + 3 seeds, 60 question ids, question
  sd 0.2, noise sd 0.1, seed sd 0, 0.01, 0.02.

Each rate is printed with its Monte-Carlo standard error ``sqrt(r (1 - r) / sims)``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.seed_tests import seed_level_estimate  # noqa: E402
from lib.significance import equivalence_test, two_way_bootstrap  # noqa: E402

SEED_SD, QUESTIONS, INTERACTION_SD, NOISE_SD, MARGIN, ALPHA = 0.006, 1190, 0.029, 0.029, 0.005, 0.05


def run_means(rng, seeds: int, delta: float = 0.0, paired: bool = False, population: bool = False):
    """Per-seed macro metrics of A and B (the question main effect cancels; ``i`` averaged exactly).

    Welch: each system its own seed effects. Paired: B's runs are A's models, A - B has seed sd
    SEED_SD. ``population``: the benchmark's system x question mean is part of the error (else it
    is fixed at 0: the estimand is the difference on this benchmark).
    """
    noise = NOISE_SD / math.sqrt(QUESTIONS)
    fixed = rng.normal(0, INTERACTION_SD * math.sqrt(2 / QUESTIONS)) if population else 0.0
    if paired:
        b = rng.normal(0, SEED_SD, seeds) + rng.normal(0, noise, seeds)
        a = b + delta + fixed + rng.normal(0, SEED_SD, seeds)
        return a, b
    a = delta + fixed + rng.normal(0, SEED_SD, seeds) + rng.normal(0, noise, seeds)
    b = rng.normal(0, SEED_SD, seeds) + rng.normal(0, noise, seeds)
    return a, b


def primary_rates(sims: int, seeds: int, paired: bool, rng, population: bool = False) -> dict[str, float]:
    """Level and coverage (true delta 0) and TOST false equivalence (true delta = margin)."""
    rejected = covered = equivalent = 0
    for _ in range(sims):
        estimate = seed_level_estimate(*run_means(rng, seeds, 0.0, paired, population), paired=paired)
        rejected += estimate.p_difference() < ALPHA
        low, high = estimate.interval(0.95)
        covered += low <= 0 <= high
        at_margin = seed_level_estimate(*run_means(rng, seeds, MARGIN, paired, population), paired=paired)
        equivalent += at_margin.tost(MARGIN, ALPHA)[0] < ALPHA
    return {"level": rejected / sims, "coverage": covered / sims, "false_equivalence": equivalent / sims}


def cluster_tables(rng, seeds: int, delta: float, clusters: int, seed_sd: float, interaction_sd: float,
                   noise_sd: float, question_sd: float = 0.0):
    """Per-run cluster contributions (seeds x clusters) of A and B, row sums = the runs' metric."""
    difficulty = rng.normal(0, question_sd, clusters)

    def system(mean):
        return (mean + rng.normal(0, seed_sd, (seeds, 1)) + difficulty + rng.normal(0, interaction_sd, clusters)
                + rng.normal(0, noise_sd, (seeds, clusters))) / clusters
    return system(delta), system(0.0)


def bootstrap_rates(sims: int, seeds: int, rng, resamples: int, clusters: int = 200, seed_sd: float = SEED_SD,
                    interaction_sd: float | None = None, noise_sd: float | None = None, question_sd: float = 0.0,
                    margin: float | None = MARGIN) -> dict[str, float]:
    """Coverage of the two-way bootstrap's 95% interval (true delta 0) and its TOST false equivalence."""
    scale = math.sqrt(clusters / QUESTIONS)
    interaction_sd = INTERACTION_SD * scale if interaction_sd is None else interaction_sd
    noise_sd = NOISE_SD * scale if noise_sd is None else noise_sd
    covered = equivalent = 0
    for i in range(sims):
        a, b = cluster_tables(rng, seeds, 0.0, clusters, seed_sd, interaction_sd, noise_sd, question_sd)
        low, high = np.quantile(two_way_bootstrap(a, b, resamples=resamples, seed=i), [0.025, 0.975])
        covered += low <= 0 <= high                             # the population difference (questions redrawn)
        if margin:
            a, b = cluster_tables(rng, seeds, margin, clusters, seed_sd, interaction_sd, noise_sd, question_sd)
            replicates = two_way_bootstrap(a, b, resamples=resamples, seed=i)
            equivalent += equivalence_test(replicates, margin, ALPHA)["equivalent"]
    return {"coverage": covered / sims, "false_equivalence": equivalent / sims if margin else math.nan}


def _se(rate: float, sims: int) -> str:
    return f"{rate:.3f} ± {math.sqrt(max(rate * (1 - rate), 1e-12) / sims):.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="simulations per cell of the primary test")
    parser.add_argument("--bootstrap-sims", type=int, default=2000, help="simulations per cell of the bootstrap")
    parser.add_argument("--resamples", type=int, default=500, help="bootstrap resamples per simulated test")
    parser.add_argument("--seeds", default="3,5,10", help="seeds per system, comma-separated")
    parser.add_argument("--population", action="store_true", help="also the level over the question population")
    parser.add_argument("--seed", type=int, default=0, help="of the simulation's generator")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    seeds_list = [int(s) for s in args.seeds.split(",")]
    if args.sims < 1:
        seeds_list_primary = []
    else:
        seeds_list_primary = seeds_list
    print(f"primary test (seed-level t), {args.sims} simulations per cell, alpha {ALPHA}, margin {MARGIN}")
    print("| seeds | design | level (nominal .05) | 95% coverage | TOST false equivalence (nominal <= .05) |")
    print("|---|---|---|---|---|")
    for seeds in seeds_list_primary:
        for paired in (False, True):
            rates = primary_rates(args.sims, seeds, paired, rng)
            print(f"| {seeds} | {'paired' if paired else 'welch'} | {_se(rates['level'], args.sims)} | "
                  f"{_se(rates['coverage'], args.sims)} | {_se(rates['false_equivalence'], args.sims)} |")
            if args.population:
                population = primary_rates(args.sims, seeds, paired, rng, population=True)
                print(f"| {seeds} | {'paired' if paired else 'welch'}, question population | "
                      f"{_se(population['level'], args.sims)} | {_se(population['coverage'], args.sims)} | - |")
    if args.bootstrap_sims < 1:
        return
    print(f"\ntwo-way bootstrap (sensitivity), {args.bootstrap_sims} simulations per cell, {args.resamples} resamples")
    print("| seeds | setting | 95% coverage | TOST false equivalence |")
    print("|---|---|---|---|")
    for seeds in seeds_list:
        rates = bootstrap_rates(args.bootstrap_sims, seeds, rng, args.resamples)
        print(f"| {seeds} | README variances, 200 question ids | {_se(rates['coverage'], args.bootstrap_sims)} | "
              f"{_se(rates['false_equivalence'], args.bootstrap_sims)} |")
    for seed_sd in (0.0, 0.01, 0.02):
        rates = bootstrap_rates(args.bootstrap_sims, 3, rng, args.resamples, clusters=60, seed_sd=seed_sd,
                                interaction_sd=0.0, noise_sd=0.1, question_sd=0.2, margin=None)
        print(f"| 3 | earlier header: 60 questions, seed sd {seed_sd} | {_se(rates['coverage'], args.bootstrap_sims)} | - |")


if __name__ == "__main__":
    main()
