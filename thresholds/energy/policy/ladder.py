"""The walk: pure functions from (scenario, history) to the next step or the state the loop ends in (`decide`), and
the steps that can be produced at once (`plan_batch`). What the ladder is and how it is walked: rungs.py."""

from __future__ import annotations

from thresholds.core import Final, FinalState
from thresholds.energy.policy.costs import cheapest, relative_cost, train_cost_j
from thresholds.energy.policy.gates import (
    INFERENCE_TARGETS,
    TRAINING_TARGETS,
    closest,
    judge,
    missed_targets,
    train_limit_j,
    why_not,
)
from thresholds.energy.policy.keep import servable
from thresholds.energy.policy.moves import recipe_first
from thresholds.energy.policy.records import Calibration, CandidateResult, Next, Step, StepKind, iterations_used
from thresholds.energy.policy.rungs import DERIVED, RECIPE_VARIANTS, RUNG, RUNGS, SERVING_FORMS, serving_forms
from thresholds.energy.policy.training_moves import training_move
from thresholds.energy.policy.walk import LadderWalk
from thresholds.energy.schema import Scenario


def decide(scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None = None) -> Next | Final:
    """The next step of the loop, or the state it ends in. `calibration` lets it skip rungs
    this machine has shown cannot save energy."""
    if not history:
        return Next(step=Step(kind=StepKind.BASELINE), why="measure the unoptimised baseline")
    baseline = history[0]
    if not baseline.ok:
        return Final(state=FinalState.FAILED, reason=f"baseline could not be trained: {baseline.rejected_reason}")
    walk = LadderWalk.at(scenario, history, calibration)
    # Serially only the latest candidate can newly pass; a parallel batch may hold several: the cheapest wins.
    passing = [c for c in history[1:] if c.ok and judge(scenario, c, baseline).passed]
    used, spent, limit = (
        iterations_used(history),
        sum(c.spent_energy_j for c in history),
        scenario.budget.max_total_energy_j,
    )
    # Refusals cost no iteration, but the rungs that can refuse are finite: twice the budget bounds the loop regardless.
    out_of_iterations = used >= scenario.budget.max_iterations or len(history) >= 2 * scenario.budget.max_iterations
    budget_left = not out_of_iterations and (limit is None or spent < limit)
    if passing:
        best = cheapest(passing, baseline)
        served = _serve_every_form(walk, best) if budget_left else None
        if served is not None:
            return served
        return Final(
            state=FinalState.PASSED,
            reason=f"#{best.index} ({'+'.join(best.lineage)}) meets every target",
            chosen=best.index,
        )
    if out_of_iterations:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            reason=f"used {used} of {scenario.budget.max_iterations} iterations; {why_not(scenario, history)}",
        )
    if limit is not None and spent >= limit:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            reason=f"spent {spent:.1f} J of {limit:g} J; {why_not(scenario, history)}",
        )
    step = _next_rung(walk)
    if step is None:
        nearest = closest(scenario, history)
        misses = missed_targets(scenario, nearest, baseline) if nearest is not None else []
        why = why_not(scenario, history)
        if not misses:
            return Final(state=FinalState.FAILED, reason=f"no rung left on the ladder; {why}")
        return Final(
            state=FinalState.FAILED,
            reason=f"unreachable: {misses[0]}: no rung left on the ladder can reach it; {why}",
            unreachable=misses[0],
        )
    return step


def plan_batch(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None = None, width: int = 1
) -> list[Next] | Final:
    """Up to `width` steps that can be produced at once: `decide`'s next step, then the
    steps of the same rung that do not need its result (e.g. the next pruning ratios).

    Parallel mode trades energy for wall time: the serial ladder stops pruning at the first
    ratio that breaks a target, a batch may already have trained the larger ones. The batch
    never exceeds the remaining iteration budget."""
    first = decide(scenario, history, calibration)
    if isinstance(first, Final) or width <= 1:
        return first if isinstance(first, Final) else [first]
    room = scenario.budget.max_iterations - iterations_used(history)
    walk = LadderWalk.at(scenario, history, calibration)
    steps = [first.step, *RUNG[first.step.kind].alongside(walk, first.step)][: max(1, min(width, room))]
    return [first, *(Next(step=s, why=f"in parallel with {first.step.label}") for s in steps[1:])]


def _next_rung(walk: LadderWalk) -> Next | Final | None:
    """The move for the target the closest candidate misses: compression for inference energy or
    latency, training-cost moves for training energy; a Final when a target is shown unreachable."""
    scenario, history = walk.scenario, walk.history
    kinds = {c.step.kind for c in history}
    if StepKind.EARLY_STOPPING not in kinds:
        return _compression_rung(walk)
    baseline = history[0]
    focus = closest(scenario, history) or baseline
    misses = missed_targets(scenario, focus, baseline)
    inference = [m for m in misses if m in INFERENCE_TARGETS]
    training = [m for m in misses if m in TRAINING_TARGETS]
    if training and not inference:
        found = training_move(walk, focus, training[0])
        return found if found is not None else _within_training(walk, training[0])
    rung = _compression_rung(walk)
    if rung is not None and rung.step.kind in SERVING_FORMS:
        first = _training_before_serving(walk, rung.step)
        if first is not None:
            return first
    if rung is None or rung.target is not None:
        return rung
    if not misses:
        return rung
    target = (inference or training or misses)[0]
    return Next(step=rung.step.model_copy(update={"target": target}), why=f"{target}: {rung.why}", target=target)


def _compression_rung(walk: LadderWalk) -> Next | None:
    """The next rung of the ladder (what lowers inference cost), in ladder order: the recipe's training variants only
    when `recipe_first`."""
    skipped = () if recipe_first(walk.scenario, walk.history) else RECIPE_VARIANTS
    return next((n for rung in RUNGS if rung.kind not in skipped and (n := rung.next(walk)) is not None), None)


def _within_training(walk: LadderWalk, target: str) -> Next | Final | None:
    """With no training-cost move left: the first rung left whose lineage can still come in under the
    training target; a Final naming the target when every rung left derives from too costly a model."""
    scenario, history = walk.scenario, walk.history
    limit = train_limit_j(scenario.targets, history[0])
    floors: list[float] = []
    for rung in RUNGS:
        found = rung.next(walk)
        if found is None:
            continue
        floor = _floor_j(history, found.step)
        if limit is None or floor is None or floor <= limit:
            if found.target is not None:
                return found
            return Next(
                step=found.step.model_copy(update={"target": target}), why=f"{target}: {found.why}", target=target
            )
        floors.append(floor)
    if not floors or limit is None:
        return None  # nothing left at all: `decide` reports the target unreachable
    reason = (
        f"unreachable: {target}: no training-cost move left, and every rung left derives from a model whose "
        f"training already cost {min(floors):.4g} J > {limit:.4g} J allowed; {why_not(scenario, history)}"
    )
    return Final(state=FinalState.FAILED, reason=reason, unreachable=target)


def _floor_j(history: list[CandidateResult], step: Step) -> float | None:
    """The least training energy `step`'s lineage can cost: its parent's, plus for pruning the cheapest
    fine-tune seen so far; None when unknown (a rung that trains from scratch, an unpriced parent)."""
    if step.kind not in DERIVED or step.parent is None:
        return None
    baseline = history[0]
    parent_j = train_cost_j(history[step.parent], baseline)
    if parent_j is None or step.kind != StepKind.PRUNE:
        return parent_j
    extras = [
        pruned_j - (train_cost_j(history[c.step.parent], baseline) or 0.0)
        for c in history
        if c.step.kind == StepKind.PRUNE
        and c.ok
        and c.step.parent is not None
        and (pruned_j := train_cost_j(c, baseline)) is not None
    ]
    return parent_j + max(0.0, min(extras, default=0.0))


def _training_before_serving(walk: LadderWalk, serving: Step) -> Next | None:
    """A serving form serves `best_fp32`, which passes over a model cheaper to run when that one misses a training
    target. A serving form scales its parent's inference cost and keeps its training cost, so before serving the
    costlier model, cut the cheaper one's training cost while a training-cost move for it is left."""
    scenario, history = walk.scenario, walk.history
    baseline = history[0]
    pool = servable(scenario, history)
    if not pool:
        return None
    cheaper = cheapest(pool, baseline)
    mine, theirs = relative_cost(cheaper, baseline), relative_cost(history[serving.parent or 0], baseline)
    if mine is None or theirs is None or mine > theirs * (1 - scenario.ladder.min_gain_pct / 100):
        return None  # the parent served is as cheap to run, within the gain the ladder asks of a rung
    training = [m for m in missed_targets(scenario, cheaper, baseline) if m in TRAINING_TARGETS]
    return training_move(walk, cheaper, training[0]) if training else None


def _serve_every_form(walk: LadderWalk, best: CandidateResult) -> Next | None:
    """Once a model passes, the trained model behind it is served in each form the ladder allows, once each (`decide`
    asks only while the budget allows), and the loop returns the cheapest that passes: which form happened to pass first
    must not decide the model people get (the ladder meets them in a fixed order, and their costs differ by less than
    a run's drift)."""
    scenario, history = walk.scenario, walk.history
    if not scenario.ladder.serve_every_form:
        return None
    parent = history[best.step.parent or 0] if best.step.kind in SERVING_FORMS else best
    left = serving_forms(scenario, history, parent, walk.use)
    if not left:
        return None
    return Next(
        step=left[0],
        why=f"#{best.index} meets every target: serve #{parent.index} as {left[0].label} too, keep the "
        "cheapest that passes",
    )
