"""How much of the machine other processes used while this one measured: a busy machine is named, not hidden.

Inference windows are judged against each other, and a second process on the same cores makes
torch's threads stall (a batch that takes 0.3 ms alone took 100 ms beside two test runs), so
figures measured beside other work are not results. The paired windows cancel much of it in the
ratio, not all, and nothing in a window's own reading says it happened. So the measurement of each
candidate is bracketed: the machine's busy CPU seconds minus this process's own (its threads, and
the children it waits on) give what others used, as a share of the machine's capacity over the
stretch. The reading is `CpuSample` pairs; the judgement is the pure `busy_warning`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from thresholds.energy.keys import MEASUREMENT_OTHER_CPU_SHARE


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds spent so far: by the whole machine (all cores, not idle) and by this process."""

    wall_s: float
    machine_busy_s: float
    own_s: float
    cores: int


def sample() -> CpuSample:
    import psutil

    machine = psutil.cpu_times()
    busy_s = sum(getattr(machine, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    own = psutil.Process().cpu_times()
    return CpuSample(time.perf_counter(), busy_s, own.user + own.system, psutil.cpu_count() or os.cpu_count() or 1)


def other_cpu_share(before: CpuSample, after: CpuSample) -> float:
    """Share of the machine's CPU capacity that other processes used between the two samples (0 to 1)."""
    wall_s = after.wall_s - before.wall_s
    if wall_s <= 0:
        return 0.0
    others_s = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return min(max(others_s / (wall_s * after.cores), 0.0), 1.0)


def busy_warning(what: str, share: float, limit: float) -> str | None:
    """The one line a person gets when other processes used more than `limit` of the machine, else None."""
    if share <= limit:
        return None
    return (
        f"{what}: other processes used {share:.0%} of this machine's CPU while it was measured (limit {limit:.0%}): "
        "its inference figures are not reliable; measure with the machine to itself"
    )


@dataclass
class Watched:
    """Other processes' CPU share over a `watched()` block: set when the block ends."""

    share: float = 0.0


@contextmanager
def watched() -> Iterator[Watched]:
    """`with watched() as others:` ... `others.share` is other processes' CPU share over the block, once it ends."""
    result = Watched()
    before = sample()
    try:
        yield result
    finally:
        result.share = other_cpu_share(before, sample())


def max_other_share(tags: Iterable[Mapping[str, str]]) -> float | None:
    """The largest share other processes took while any of these candidates was measured (None: none recorded)."""
    shares = [float(t[MEASUREMENT_OTHER_CPU_SHARE]) for t in tags if MEASUREMENT_OTHER_CPU_SHARE in t]
    return max(shares) if shares else None
