"""Each rung's move: where the ladder walk stands -> the rung's next step (None: nothing of it left), and the steps
of the same rung that can be produced beside a first one (parallel mode). The rung table (rungs.py) names them.

A move sees the walk through `Walk`: the scenario, the candidates so far, the calibration it may use, and what the
rules that read the table work out (the model a rung starts from: keep.py; the accuracy back-off: backoff.py). They
are passed in, so this module and the table import none of those rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from thresholds.energy.policy.gates import quality_ok, train_limit_j
from thresholds.energy.policy.records import Calibration, CandidateResult, Next, Step, StepKind
from thresholds.energy.schema import Scenario


class Walk(Protocol):
    """Where the ladder walk stands (walk.py builds it)."""

    @property
    def scenario(self) -> Scenario: ...

    @property
    def history(self) -> list[CandidateResult]: ...

    @property
    def use(self) -> Calibration | None: ...  # the calibration the ladder may use (None: `ladder.use_calibration` off)

    def recipe(self) -> CandidateResult: ...  # the base of compression

    def best_fp32(self) -> CandidateResult: ...  # what a serving form or a student starts from

    def backoff(self) -> Next | None: ...  # the accuracy back-off's next step


Move = Callable[[Walk], Next | None]
Siblings = Callable[[Walk, Step], list[Step]]
Value = float | str | None


def early_stopping(walk: Walk) -> Next | None:
    if any(c.step.kind == StepKind.EARLY_STOPPING for c in walk.history):
        return None
    return Next(step=Step(kind=StepKind.EARLY_STOPPING, parent=0), why="train the recipe with early stopping")


def mixed_precision_allowed(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> bool:
    ladder = scenario.ladder
    if not ladder.mixed_precision_training or any(c.step.kind == StepKind.MIXED_PRECISION for c in history):
        return False
    return use is None or use.helps(use.train_ratio, "autocast", ladder.min_gain_pct)


def mixed_precision(walk: Walk) -> Next | None:
    if not mixed_precision_allowed(walk.scenario, walk.history, walk.use):
        return None
    return Next(
        step=Step(kind=StepKind.MIXED_PRECISION, value="autocast", parent=0), why="train the recipe under autocast"
    )


def batch_factors_left(scenario: Scenario, history: list[CandidateResult]) -> list[int]:
    tried = {float(c.step.value) for c in history if c.step.kind == StepKind.BATCH and c.step.value is not None}
    return [f for f in scenario.ladder.training_batch_factors if float(f) not in tried]


def batch(walk: Walk) -> Next | None:
    left = batch_factors_left(walk.scenario, walk.history)
    if not left:
        return None
    return Next(
        step=Step(kind=StepKind.BATCH, value=float(left[0]), parent=0),
        why=f"train the recipe at {left[0]}x the batch size",
    )


def recipe_first(scenario: Scenario, history: list[CandidateResult]) -> bool:
    """Whether the ladder tries the cheaper recipes before compressing: only when the training target leaves no room
    for a fine-tune on top of the recipe (below the baseline's own cost). Otherwise they answer a missed training target
    (training_moves.py) and a model that misses only inference is not retrained for them."""
    limit = train_limit_j(scenario.targets, history[0]) if history else None
    base_j = history[0].train_energy_j if history else None
    return limit is not None and base_j is not None and limit < base_j


def recipe_siblings(walk: Walk, first: Step) -> list[Step]:
    """The recipe and its mixed-precision and batch twins train from scratch: they need no parent's model."""
    scenario, history = walk.scenario, walk.history
    kinds = {c.step.kind for c in history}
    out = (
        []
        if first.kind == StepKind.EARLY_STOPPING or StepKind.EARLY_STOPPING in kinds
        else [Step(kind=StepKind.EARLY_STOPPING, parent=0)]
    )
    # With no history the baseline is not measured yet, so `recipe_first` cannot price a training target: the first
    # parallel batch still trains the recipe's twins beside the baseline, as it did before the rule.
    if history and not recipe_first(scenario, history):
        return out
    if mixed_precision_allowed(scenario, history, walk.use):
        out.append(Step(kind=StepKind.MIXED_PRECISION, value="autocast", parent=0))
    return out + [Step(kind=StepKind.BATCH, value=float(f), parent=0) for f in batch_factors_left(scenario, history)]


def prune(walk: Walk) -> Next | None:
    scenario, history = walk.scenario, walk.history
    pruned = [c for c in history if c.step.kind == StepKind.PRUNE]
    if any(not quality_ok(scenario.targets, c, history[0]) for c in pruned):
        # A ratio broke an accuracy target: on the labels, larger ones would too. Back off (or go on, on soft labels),
        # if allowed.
        return walk.backoff() if scenario.ladder.accuracy_backoff else None
    base = walk.recipe()
    tried = {float(c.step.value) for c in pruned if c.step.value is not None}
    for ratio in scenario.ladder.pruning_ratios:
        if ratio not in tried and all(ratio > t for t in tried):
            return Next(
                step=Step(kind=StepKind.PRUNE, value=ratio, parent=base.index),
                why=f"prune {ratio:.0%} of channels of #{base.index}",
            )
    return None


def prune_siblings(walk: Walk, first: Step) -> list[Step]:
    tried = {float(c.step.value) for c in walk.history if c.step.kind == StepKind.PRUNE and c.step.value is not None}
    return [
        Step(kind=StepKind.PRUNE, value=r, parent=first.parent)
        for r in walk.scenario.ladder.pruning_ratios
        if r > float(first.value or 0) and r not in tried
    ]


def _distilled(history: list[CandidateResult]) -> set[float]:
    return {float(c.step.value) for c in history if c.step.kind == StepKind.DISTILL and c.step.value is not None}


def distill(walk: Walk) -> Next | None:
    done = _distilled(walk.history)
    for factor in walk.scenario.ladder.distill_width_factors:
        if factor not in done:
            teacher = walk.best_fp32()
            return Next(
                step=Step(kind=StepKind.DISTILL, value=factor, parent=teacher.index),
                why=f"distil #{teacher.index} into a {factor:g}x student",
            )
    return None


def distill_siblings(walk: Walk, first: Step) -> list[Step]:
    done = _distilled(walk.history)
    return [
        Step(kind=StepKind.DISTILL, value=f, parent=first.parent)
        for f in walk.scenario.ladder.distill_width_factors
        if f not in done and f != first.value
    ]


def search(walk: Walk) -> Next | None:
    ladder = walk.scenario.ladder
    if not ladder.search_hidden or any(c.step.kind == StepKind.SEARCH for c in walk.history):
        return None
    base = walk.recipe()
    return Next(
        step=Step(kind=StepKind.SEARCH, parent=base.index),
        why=f"search {len(ladder.search_hidden)} architectures under the energy cap",
    )


def qat(walk: Walk) -> Next | None:
    scenario, history = walk.scenario, walk.history
    ptq = [c for c in history if c.step.kind == StepKind.PRECISION and c.step.value == "int8"]
    if (
        not scenario.ladder.qat
        or not ptq
        or quality_ok(scenario.targets, ptq[-1], history[0])
        or any(c.step.kind == StepKind.QAT for c in history)
    ):
        return None
    parent_index = ptq[-1].step.parent if ptq[-1].step.parent is not None else 0
    return Next(
        step=Step(kind=StepKind.QAT, value="int8", parent=parent_index),
        why=f"int8 PTQ lost accuracy: quantization-aware training of #{parent_index}",
    )


def _left(history: list[CandidateResult], kind: StepKind, values: list[Value]) -> list[Value]:
    done = {c.step.value for c in history if c.step.kind == kind}
    return [v for v in values if v not in done]


def serve(walk: Walk, kind: StepKind, values: list[Value], why: str) -> Next | None:
    """The move of a served form (a rung with `tried_at`): the first of its values not yet tried, serving the best
    fp32 model; `why` is formatted with `parent` (its index) and `value`."""
    left = _left(walk.history, kind, values)
    if not left:
        return None
    parent = walk.best_fp32()
    return Next(
        step=Step(kind=kind, value=left[0], parent=parent.index), why=why.format(parent=parent.index, value=left[0])
    )


def serve_siblings(walk: Walk, first: Step, values: list[Value]) -> list[Step]:
    """The same form's other values not yet tried, of the same parent."""
    return [
        Step(kind=first.kind, value=v, parent=first.parent)
        for v in _left(walk.history, first.kind, values)
        if v != first.value
    ]
