"""Repeated measurement windows and noise-aware comparison.

A phase is measured in repeated windows until the 95 % confidence half-width of the mean is
below `target_rel_ci` of the mean, or `max_repeats` is reached. Two figures differ only when
the gap exceeds `sigmas` combined standard errors.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def t_quantile_975(dof: int) -> float:
    """Two-sided 95 % Student-t quantile."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


@dataclass(frozen=True)
class Repeated:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean (0 for a single window: unknown, not zero noise)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else 0.0

    @property
    def ci95(self) -> float:
        return t_quantile_975(self.n - 1) * self.sem if self.n > 1 else math.inf

    @property
    def rel_ci95(self) -> float:
        return self.ci95 / abs(self.mean) if self.mean else math.inf


def over_budget(elapsed_s: float, done: int, more: int, budget_s: float | None) -> bool:
    """Whether `more` measurements, at the mean time of the `done` so far, would end past `budget_s`."""
    return budget_s is not None and done > 0 and elapsed_s * (done + more) / done > budget_s


def repeat_until_stable(
    measure_once: Callable[[], float],
    min_repeats: int,
    max_repeats: int,
    target_rel_ci: float,
    budget_s: float | None = None,
) -> Repeated:
    """Call `measure_once` at least `min_repeats` times, stopping once the relative CI is small enough; with
    `budget_s`, also once another call would end past it (after two calls at least: a spread needs two)."""
    if not 1 <= min_repeats <= max_repeats:
        raise ValueError(f"repeats: expected 1 <= min_repeats ({min_repeats}) <= max_repeats ({max_repeats})")
    values: list[float] = []
    started = time.perf_counter()
    while len(values) < max_repeats:
        values.append(measure_once())
        if len(values) >= max(min_repeats, 2) and Repeated(tuple(values)).rel_ci95 <= target_rel_ci:
            break
        if len(values) >= min(2, max_repeats) and over_budget(time.perf_counter() - started, len(values), 1, budget_s):
            break
    return Repeated(tuple(values))
