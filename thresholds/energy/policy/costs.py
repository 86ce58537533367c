"""What a candidate costs, as the policy reasons with it: to run (inference energy, or latency when the meter reads
nothing) and to train (its lineage, priced by work against the baseline: thresholds/energy/training_cost.py)."""

from __future__ import annotations

from thresholds.energy.policy.records import CandidateResult
from thresholds.energy.training_cost import epoch_prices, priced_ratio


def cost(c: CandidateResult) -> float | None:
    """What compression must lower: inference energy, or latency when the meter reads nothing."""
    if c.inference_energy_j_per_1k:
        return c.inference_energy_j_per_1k
    return c.latency_ms_per_batch


def relative_cost(c: CandidateResult, baseline: CandidateResult) -> float | None:
    """`cost` over the baseline's, for ranking candidates: the paired ratio where measured so (windows
    measured apart drift more than the candidates differ), else the quotient of the two costs."""
    if c.index == baseline.index:
        return 1.0
    if c.inference_ratio_vs_baseline is not None:
        return c.inference_ratio_vs_baseline
    mine, theirs = cost(c), cost(baseline)
    return None if mine is None or not theirs else mine / theirs


def cost_err(c: CandidateResult) -> float:
    """Standard error of `cost` (0 where only latency, a median, is available)."""
    return c.inference_energy_sem_j_per_1k if c.inference_energy_j_per_1k else 0.0


def gain_pct(parent: CandidateResult, child: CandidateResult) -> float | None:
    before, after = cost(parent), cost(child)
    if before is None or after is None or before <= 0:
        return None
    return (1 - after / before) * 100


def cheapest(candidates: list[CandidateResult], baseline: CandidateResult) -> CandidateResult:
    """The candidate with the lowest `relative_cost` (the earliest on a tie)."""
    return min(candidates, key=lambda c: (relative_cost(c, baseline) or float("inf"), c.index))


def price_training(history: list[CandidateResult], c: CandidateResult) -> CandidateResult:
    """`c` with its training cost priced by work against the baseline (`history[0]`, or `c` itself
    when it is the baseline), at the per-epoch prices pooled over every run so far."""
    baseline = history[0] if history else c
    prices = epoch_prices(s for r in [*history, c] for s in r.train_segments)
    priced = priced_ratio(c.train_segments, baseline.train_segments, prices)
    if priced is None:
        return c
    ratio, sem = priced
    return c.model_copy(update={"train_ratio_vs_baseline": ratio, "train_ratio_sem": sem})


def train_cost_j(c: CandidateResult, baseline: CandidateResult) -> float | None:
    """The lineage's training energy the policy reasons with: priced by work in the baseline's joules
    when priced (`price_training`), else as measured."""
    if c.train_ratio_vs_baseline is not None and baseline.train_energy_j is not None:
        return c.train_ratio_vs_baseline * baseline.train_energy_j
    return c.train_energy_j
