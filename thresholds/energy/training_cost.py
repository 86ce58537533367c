"""Training energy priced by work: identical training work costs the same, however the meter drifted.

A lineage is a list of training runs (`TrainSegment`s), each `epochs` epochs of one kind of work
(architecture x batch size x precision x labels). Where the energy figure tracks wall time (as
CodeCarbon's estimate does without RAPL), the same 60 epochs of the same model read 59 J in one run
and 75 J in the next, and that drift, not the recipe, decided the training-energy target. So every
run is priced at the pooled cost per epoch of its kind of work (over every run of that kind in the
loop so far), and the training ratio to the baseline is judged from those prices: work the baseline
also did cancels exactly, and only work it did not do is compared across runs. The measured joules
stay on record beside the priced ratio.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


class TrainSegment(BaseModel):
    """One training run of a lineage: which candidate ran it, what work, how long, what it read."""

    model_config = ConfigDict(frozen=True)

    origin: int  # the candidate whose production ran it
    run: int  # its order within that production
    work: str  # identical work has the same key: architecture, batch size, precision, labels
    epochs: int = Field(ge=0)
    energy_j: float = Field(ge=0)
    energy_sem_j: float = Field(0.0, ge=0)


class EpochPrice(BaseModel):
    """Pooled cost of one epoch of one kind of work, with its standard error."""

    energy_j: float
    sem_j: float
    epochs: int


def distinct_runs(segments: Iterable[TrainSegment]) -> list[TrainSegment]:
    """Each training run once, in first-seen order: lineages that share a run (a parent's, a teacher's) hold it each."""
    return list({(s.origin, s.run): s for s in segments}.values())


def epoch_prices(segments: Iterable[TrainSegment]) -> dict[str, EpochPrice]:
    """J per epoch per kind of work, pooled over distinct runs (a run shared by several lineages counts once)."""
    energy: dict[str, float] = defaultdict(float)
    variance: dict[str, float] = defaultdict(float)
    epochs: dict[str, int] = defaultdict(int)
    for s in distinct_runs(segments):
        energy[s.work] += s.energy_j
        variance[s.work] += s.energy_sem_j**2
        epochs[s.work] += s.epochs
    return {
        w: EpochPrice(energy_j=energy[w] / n, sem_j=math.sqrt(variance[w]) / n, epochs=n)
        for w, n in epochs.items()
        if n > 0
    }


def priced_ratio(
    lineage: list[TrainSegment], baseline: list[TrainSegment], prices: dict[str, EpochPrice]
) -> tuple[float, float] | None:
    """(lineage cost / baseline cost at the pooled prices, its standard error), or None when either is unpriced.

    The error counts only the work the baseline did not do (shared work cancels), relative to the
    baseline's price: (n_w x sem_w) per such work, plus that extra cost times the baseline's relative error.
    """
    if not lineage or not baseline or any(s.work not in prices for s in [*lineage, *baseline]):
        return None
    base_j = sum(s.epochs * prices[s.work].energy_j for s in baseline)
    if base_j <= 0:
        return None
    base_rel = math.sqrt(sum((s.epochs * prices[s.work].sem_j) ** 2 for s in baseline)) / base_j
    shared = {s.work for s in baseline}
    extra_epochs: dict[str, int] = defaultdict(int)
    for s in lineage:
        if s.work not in shared:
            extra_epochs[s.work] += s.epochs
    cost_j = sum(s.epochs * prices[s.work].energy_j for s in lineage)
    extra_j = sum(n * prices[w].energy_j for w, n in extra_epochs.items())
    own = math.sqrt(sum((n * prices[w].sem_j) ** 2 for w, n in extra_epochs.items())) / base_j
    return cost_j / base_j, math.hypot(own, extra_j / base_j * base_rel)
