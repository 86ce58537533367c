"""The keep rule: whether a candidate may be the base of later rungs. Nothing is assumed to save energy: a rung is
kept only on a measured gain beyond the noise, at quality. And the bases it decides: the recipe compression starts
from, and the best fp32 model that serving forms and students start from."""

from __future__ import annotations

import math

from thresholds.core import significantly_less
from thresholds.energy.policy.costs import cheapest, cost, cost_err, gain_pct, train_cost_j
from thresholds.energy.policy.gates import QUALITY_TARGETS, TRAINING_TARGETS, missed_targets, quality_ok
from thresholds.energy.policy.records import CandidateResult, StepKind
from thresholds.energy.policy.rungs import RECIPE_VARIANTS, REFERENCES, SERVING_FORMS
from thresholds.energy.schema import Scenario


def kept(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    """Whether a candidate may serve as the base of later rungs, and why."""
    if not c.ok:
        return False, f"rejected: {c.rejected_reason}"
    if c.step.kind in REFERENCES:
        return True, "reference"
    baseline = history[0]
    if not quality_ok(scenario.targets, c, baseline):
        return False, "breaks an accuracy target"
    if c.step.kind in RECIPE_VARIANTS:
        return _training_gain(scenario, history, c)
    if c.step.kind == StepKind.SCRATCH and c.step.parent is not None:
        return _retrained_cheaper(scenario, history, c)
    parent = history[c.step.parent] if c.step.parent is not None else baseline
    paired = _paired_gain(scenario, parent, c)
    if paired is not None:
        return paired
    gain = gain_pct(parent, c)
    if gain is None:
        return False, "no inference cost measured"
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% inference cost vs #{parent.index} on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    sigmas = scenario.measurement.significance_sigmas
    if not significantly_less(cost(c) or 0.0, cost_err(c), cost(parent) or 0.0, cost_err(parent), sigmas):
        return (
            False,
            f"saved {gain:.1f}% vs #{parent.index}, within {sigmas:g} combined standard errors: noise, not a gain",
        )
    return True, f"saved {gain:.1f}% inference cost vs #{parent.index}"


def _paired_gain(scenario: Scenario, parent: CandidateResult, c: CandidateResult) -> tuple[bool, str] | None:
    """`kept`'s inference test on the paired ratios (both measured against the baseline), when there are."""
    mine, theirs = c.inference_ratio_vs_baseline, parent.inference_ratio_vs_baseline
    if parent.index == 0 and mine is not None:
        theirs = 1.0
    if mine is None or theirs is None or mine <= 0 or theirs <= 0:
        return None
    gain = (1 - mine / theirs) * 100
    sigmas = scenario.measurement.significance_sigmas
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% inference cost vs #{parent.index} (paired) on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    their_sem = parent.inference_ratio_log_sem if parent.index else 0.0
    if not math.log(mine) + sigmas * math.hypot(c.inference_ratio_log_sem, their_sem) < math.log(theirs):
        return (
            False,
            f"saved {gain:.1f}% vs #{parent.index} (paired), within {sigmas:g} combined standard errors: "
            "noise, not a gain",
        )
    return True, f"saved {gain:.1f}% inference cost vs #{parent.index} (paired)"


def _retrained_cheaper(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    """`kept` for `scratch`: its parent's architecture, so no inference gain over it to show; it is kept when its
    lineage cost at least `min_gain_pct` less to train than the parent's, both priced by work (no noise test yet,
    unlike `_training_gain`)."""
    parent, baseline = history[c.step.parent or 0], history[0]
    mine, theirs = train_cost_j(c, baseline), train_cost_j(parent, baseline)
    if mine is None or theirs is None or theirs <= 0:
        return False, f"no training cost to compare with #{parent.index}'s"
    gain = (1 - mine / theirs) * 100
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{parent.index} (needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    return True, f"saved {gain:.1f}% training energy vs #{parent.index}, same architecture"


def _training_gain(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    recipe = next((h for h in history if h.step.kind == StepKind.EARLY_STOPPING and h.ok), None)
    if recipe is None or recipe.train_energy_j is None or c.train_energy_j is None or recipe.train_energy_j <= 0:
        return False, "no recipe training energy to compare with"
    gain = (1 - c.train_energy_j / recipe.train_energy_j) * 100
    sigmas = scenario.measurement.significance_sigmas
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{recipe.index} on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    if not significantly_less(
        c.train_energy_j, c.train_energy_sem_j, recipe.train_energy_j, recipe.train_energy_sem_j, sigmas
    ):
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{recipe.index}, within {sigmas:g} combined standard errors: "
            "noise, not a gain",
        )
    return True, f"saved {gain:.1f}% training energy vs #{recipe.index}"


def recipe(scenario: Scenario, history: list[CandidateResult]) -> CandidateResult:
    """The base of compression: the kept training variant (mixed precision, larger batch) that cost
    least to train, else early stopping, else the baseline."""
    variants = [c for c in history if c.step.kind in RECIPE_VARIANTS and c.ok and kept(scenario, history, c)[0]]
    if variants:
        return min(variants, key=lambda c: (c.train_energy_j or float("inf"), c.index))
    for c in history:
        if c.step.kind == StepKind.EARLY_STOPPING and c.ok:
            return c
    return history[0]


def servable(scenario: Scenario, history: list[CandidateResult]) -> list[CandidateResult]:
    """Kept candidates that are not serving forms: the models a serving form or a student can start from."""
    return [c for c in history[1:] if c.step.kind not in SERVING_FORMS and kept(scenario, history, c)[0]]


def best_fp32(scenario: Scenario, history: list[CandidateResult]) -> CandidateResult:
    """Lowest-cost kept candidate that is not a serving form (serving forms do not stack), among those
    within the training and quality targets when any is: a derived model only adds training to its
    parent's, and does not win back accuracy."""
    pool = servable(scenario, history)
    within = [
        c
        for c in pool
        if not any(m in TRAINING_TARGETS + QUALITY_TARGETS for m in missed_targets(scenario, c, history[0]))
    ]
    if not pool:
        return history[0]
    return cheapest(within or pool, history[0])
