"""Moves that answer a missed training-energy target: they cut what the lineage costs to train, not what the model
costs to run (the recipe's training variants, then `prune-early`, `prune-es`, `distill:f/Nep` and `scratch`: their
entries in rungs.py)."""

from __future__ import annotations

import math

from thresholds.energy.policy.costs import train_cost_j
from thresholds.energy.policy.gates import train_limit_j
from thresholds.energy.policy.records import CandidateResult, Next, Step, StepKind
from thresholds.energy.policy.rungs import COMPRESSED, RECIPE_VARIANTS, RUNG
from thresholds.energy.policy.walk import LadderWalk
from thresholds.energy.schema import Scenario


def fine_tune_budget_epochs(scenario: Scenario, history: list[CandidateResult], derived: CandidateResult) -> int | None:
    """Training epochs the training target leaves after `derived`'s parent (a pruned model's fine-tune, a
    student's distillation), at the cost per epoch `derived` showed (80 % of what is left, for the gate's
    noise margin), at most the scenario's epochs for that training; None when unknown."""
    baseline = history[0]
    limit = train_limit_j(scenario.targets, baseline)
    derived_j = train_cost_j(derived, baseline)
    if limit is None or derived.step.parent is None or derived_j is None:
        return None
    parent_j = train_cost_j(history[derived.step.parent], baseline)
    if parent_j is None:
        return None
    cap = scenario.training.max_epochs if derived.step.kind == StepKind.DISTILL else scenario.training.fine_tune_epochs
    steps = scenario.ladder.pruning_iterative_steps if derived.step.kind == StepKind.PRUNE else 1
    epochs_run = (derived.epochs_run or cap) * steps
    per_epoch_j = (derived_j - parent_j) / max(1, epochs_run)
    if per_epoch_j <= 0:
        return None
    return min(cap, math.floor(0.8 * (limit - parent_j) / per_epoch_j))


def training_move(walk: LadderWalk, focus: CandidateResult, target: str) -> Next | None:
    """The next move that can cut the training cost of `focus`'s lineage, or None when none is left."""
    scenario, history = walk.scenario, walk.history
    ladder = scenario.ladder

    def move(step: Step, why: str) -> Next:
        return Next(step=step.model_copy(update={"target": target}), why=f"{target}: {why}", target=target)

    for variant in RECIPE_VARIANTS:  # the recipe's training variants first: they cost least to try
        found = RUNG[variant].next(walk)
        if found is not None:
            return move(found.step, found.why)
    if not ladder.training_moves or focus.step.kind not in COMPRESSED:
        return None
    done = {(c.step.kind, c.step.value, c.step.parent) for c in history}
    if focus.step.kind in (StepKind.PRUNE, StepKind.PRUNE_ES) and focus.step.value is not None:
        ratio = float(focus.step.value)
        recipe = walk.recipe()
        if not any(c.step.kind == StepKind.PRUNE_EARLY and c.step.value == ratio for c in history):
            at = scenario.training.prune_at_epoch
            return move(
                Step(kind=StepKind.PRUNE_EARLY, value=ratio, parent=recipe.index),
                f"prune {ratio:.0%} inside the recipe after epoch {at} and keep training",
            )
        parent = focus.step.parent if focus.step.parent is not None else recipe.index
        epochs = fine_tune_budget_epochs(scenario, history, focus)
        if (
            epochs is not None
            and epochs >= 1
            and not any(c.step.kind == StepKind.PRUNE_ES and c.step.value == ratio for c in history)
        ):
            why = (
                f"prune {ratio:.0%} of #{parent} and fine-tune with early stopping for at most the {epochs} epochs "
                "the target leaves"
            )
            return move(Step(kind=StepKind.PRUNE_ES, value=ratio, parent=parent, epochs=epochs), why)
    if focus.step.kind == StepKind.DISTILL and focus.step.epochs is None and focus.step.parent is not None:
        epochs = fine_tune_budget_epochs(scenario, history, focus)
        again = any(
            c.step.kind == StepKind.DISTILL and c.step.epochs is not None and c.step.parent == focus.step.parent
            for c in history
        )
        ran = focus.epochs_run or scenario.training.max_epochs
        # Cut to under half its epochs, a distillation falls well short of the student it made (a built-in student
        # starts from fresh weights): its architecture from scratch is the better bet then.
        if epochs is not None and max(1, ran // 2) <= epochs < ran and not again:
            why = (
                f"distil #{focus.step.parent} into the same student with early stopping for at most the {epochs} "
                "epochs the target leaves"
            )
            return move(
                Step(kind=StepKind.DISTILL, value=focus.step.value, parent=focus.step.parent, epochs=epochs), why
            )
    if (StepKind.SCRATCH, None, focus.index) not in done and focus.step.kind != StepKind.SCRATCH:
        return move(
            Step(kind=StepKind.SCRATCH, parent=focus.index),
            f"train #{focus.index}'s architecture from scratch with early stopping",
        )
    return None
