"""One progress line per grid job: job n of N, time elapsed, and the time remaining.

The remaining time starts from the grid's own estimate (``lib.grid_plan.estimate_seconds``: seconds
per training step, minutes per evaluation, ...) and is corrected by the jobs measured so far:

    remaining = (sum of the estimates of the jobs not yet ended) * speed / workers
    speed     = (measured seconds of the jobs done) / (their estimated seconds)   (1 before any)

A job skipped as complete ends at once and leaves the sum. The line, printed when a job starts:

    [job 3/12 | 0:04:10 elapsed | ~0:21:30 left, estimate x1.40 from measured times] evaluate eval-...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable


def clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    return str(timedelta(seconds=round(max(seconds, 0.0))))


@dataclass
class GridProgress:
    """The progress of a grid run; ``estimates``: run -> estimated seconds (0 or absent: unknown)."""

    total: int
    estimates: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    now: Callable[[], float] = time.perf_counter
    started_at: float = field(default=0.0)
    ended: dict[str, float] = field(default_factory=dict)    # run -> seconds it took
    done_measured: float = 0.0
    done_estimated: float = 0.0
    started: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.now()

    @property
    def speed(self) -> float:
        """Measured over estimated seconds of the jobs done (1 before any job with an estimate ends)."""
        return self.done_measured / self.done_estimated if self.done_estimated > 0 else 1.0

    def remaining_s(self) -> float:
        left = sum(s for run, s in self.estimates.items() if run not in self.ended)
        return left * self.speed / max(self.workers, 1)

    def start_line(self, kind: str, run: str) -> str:
        """The line of the job that starts now: job ``n`` of ``total``, where the jobs skipped or
        blocked so far count among the ``n``."""
        self.started.add(run)
        number = len(self.started | set(self.ended))
        correction = f", estimate x{self.speed:.2f} from measured times" if self.done_estimated > 0 else ""
        left = f" | ~{clock(self.remaining_s())} left{correction}" if any(self.estimates.values()) else ""
        return f"[job {number}/{self.total} | {clock(self.now() - self.started_at)} elapsed{left}] {kind} {run}"

    def job_ended(self, run: str, state: str, seconds: float) -> None:
        """Record a job's end; a ``done`` job's measured time updates the speed."""
        self.ended[run] = seconds
        estimate = self.estimates.get(run, 0.0)
        if state == "done" and estimate > 0:
            self.done_measured += seconds
            self.done_estimated += estimate
