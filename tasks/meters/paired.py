"""Paired (ABBA) measurement: a candidate's energy relative to a reference, from alternating windows.

Two models measured minutes apart differ by drift as much as by design: the machine's thermal
state, other processes, the allocator's history. Measured in alternating windows in the same
process, both members of a pair see the same drift, and the ratio of the pair cancels it. The
order is ABBA (reference, candidate, candidate, reference, ...): within each block of two pairs a
linear trend cancels too. The ratio is judged on the log scale: the mean of the per-pair log
ratios, its standard error and a Student-t 95 % interval, turned back into ratios.

The mean is trimmed (Yuen's trimmed mean): from 10 pairs on, the `TRIM` share of pairs at each end
of the sorted log ratios is left out of the mean, and the standard error comes from the winsorized
variance. A meter that estimates power from sampled load (CodeCarbon without RAPL) puts a pair far
out now and then: two identical MLPs measured in 30 pairs of 1 s windows here read log ratios with
a standard deviation of 0.066 and 0.110, but 0.034 and 0.053 without the three pairs at each end,
and the outliers (+0.31, +0.40) moved the plain mean by 3 %. Below 10 pairs nothing is trimmed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tasks.meters.stats import over_budget, t_quantile_975

REFERENCE, CANDIDATE = "A", "B"
TRIM = 0.1  # share of the sorted log ratios left out at each end of the mean (Yuen's 10 % trimmed mean)


def trimmed(values: tuple[float, ...]) -> int:
    """How many values `TRIM` leaves out at each end (0 below 10)."""
    return int(TRIM * len(values))


def trimmed_mean(values: tuple[float, ...]) -> float:
    k = trimmed(values)
    ordered = sorted(values)
    return statistics.fmean(ordered[k : len(ordered) - k])


def winsorized(values: tuple[float, ...]) -> list[float]:
    """`values` with the `trimmed` lowest set to the next lowest and the highest likewise."""
    k = trimmed(values)
    ordered = sorted(values)
    low, high = ordered[k], ordered[len(ordered) - 1 - k]
    return [min(max(v, low), high) for v in values]


def abba_order(pairs: int) -> list[str]:
    """Window order for `pairs` pairs (rounded up to whole ABBA blocks): A B B A A B B A ..."""
    blocks = math.ceil(pairs / 2)
    return [REFERENCE, CANDIDATE, CANDIDATE, REFERENCE] * blocks


@dataclass(frozen=True)
class PairedRatio:
    """Per-window energies of the reference and the candidate, pair by pair (same units)."""

    reference: tuple[float, ...]
    candidate: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.candidate)

    @property
    def log_ratios(self) -> tuple[float, ...]:
        return tuple(math.log(c / r) for r, c in zip(self.reference, self.candidate, strict=True))

    @property
    def log_mean(self) -> float:
        """Trimmed mean of the per-pair log ratios (the plain mean below 10 pairs)."""
        return trimmed_mean(self.log_ratios)

    @property
    def ratio(self) -> float:
        """Geometric (trimmed) mean of the per-pair ratios (candidate / reference)."""
        return math.exp(self.log_mean)

    @property
    def dof(self) -> int:
        return self.n - 2 * trimmed(self.log_ratios) - 1

    @property
    def log_sem(self) -> float:
        """Standard error of the mean log ratio (about the ratio's relative standard error): Yuen's,
        the winsorized standard deviation over (n - 2k) / sqrt(n)."""
        if self.n < 2:
            return 0.0
        return (
            statistics.stdev(winsorized(self.log_ratios)) * math.sqrt(self.n) / (self.n - 2 * trimmed(self.log_ratios))
        )

    @property
    def log_ci95(self) -> float:
        """Half-width of the 95 % interval of the mean log ratio (inf for one pair: unknown)."""
        return t_quantile_975(self.dof) * self.log_sem if self.n > 1 else math.inf

    @property
    def ci95(self) -> tuple[float, float]:
        mean, half = self.log_mean, self.log_ci95
        return math.exp(mean - half), math.exp(mean + half)


def measure_paired(
    measure_reference: Callable[[], float],
    measure_candidate: Callable[[], float],
    pairs_min: int,
    pairs_max: int,
    target_rel_ci: float,
    budget_s: float | None = None,
) -> PairedRatio:
    """Alternate the two measurements in ABBA blocks until the 95 % interval of the log ratio is
    within `target_rel_ci` (after at least `pairs_min` pairs), or `pairs_max` pairs were measured, or (with
    `budget_s`) another block would end past `budget_s` seconds: one whole block (two pairs) at least, so a slow
    model's figures still carry a spread, and a linear drift still cancels.

    Each callable measures one window and returns a positive energy (e.g. J per 1k predictions).
    """
    if not 1 <= pairs_min <= pairs_max:
        raise ValueError(f"pairs: expected 1 <= pairs_min ({pairs_min}) <= pairs_max ({pairs_max})")
    reference: list[float] = []
    candidate: list[float] = []
    started = time.perf_counter()
    while len(candidate) < pairs_max:
        for who in abba_order(2)[: 4 if pairs_max - len(candidate) >= 2 else 2]:
            value = measure_reference() if who == REFERENCE else measure_candidate()
            if not value > 0:
                raise ValueError(
                    f"paired measurement: a window read {value!r}: expected a positive energy (a meter that reads "
                    "nothing cannot be paired)"
                )
            (reference if who == REFERENCE else candidate).append(value)
        done = PairedRatio(tuple(reference), tuple(candidate))
        if done.n >= max(pairs_min, 2) and done.log_ci95 <= target_rel_ci:
            break
        if done.n >= 2 and over_budget(time.perf_counter() - started, done.n, 2, budget_s):
            break
    return PairedRatio(tuple(reference), tuple(candidate))


@dataclass(frozen=True)
class AcrossSizes:
    """Paired ratios measured at several serving batch sizes, judged as one: the geometric mean of the
    per-size ratios, so each size the workload is served at weighs the same (a gain at batch 1 is not
    drowned by a size where nothing changes, nor the reverse). The sizes share the windows one size
    would get, so each has few pairs: the noise of a log ratio is estimated once, pooled over the
    sizes (each pair's winsorized deviation from its own size's winsorized mean; sum(n - 2k - 1) degrees
    of freedom), as the sizes are measured alike. One size: exactly that size's `PairedRatio` figures. The worst size
    stays on record beside it (`worst`)."""

    parts: tuple[PairedRatio, ...]

    @property
    def n(self) -> int:
        return sum(p.n for p in self.parts)

    @property
    def dof(self) -> int:
        return sum(p.dof for p in self.parts)

    @property
    def ratio(self) -> float:
        return math.exp(statistics.fmean(p.log_mean for p in self.parts))

    @property
    def worst(self) -> float:
        return max(p.ratio for p in self.parts)

    @property
    def log_sem(self) -> float:
        """Standard error of the mean over sizes of the per-size mean log ratios, from the pooled variance."""
        if self.dof < 1:
            return 0.0
        squares = sum(
            (w - statistics.fmean(ws)) ** 2 for ws in (winsorized(p.log_ratios) for p in self.parts) for w in ws
        )
        variance = squares / sum(p.n - 1 for p in self.parts)
        return math.sqrt(variance * sum(p.n / (p.n - 2 * trimmed(p.log_ratios)) ** 2 for p in self.parts)) / len(
            self.parts
        )

    @property
    def log_ci95(self) -> float:
        return t_quantile_975(self.dof) * self.log_sem if self.dof >= 1 else math.inf

    @property
    def ci95(self) -> tuple[float, float]:
        mean, half = math.log(self.ratio), self.log_ci95
        return math.exp(mean - half), math.exp(mean + half)
