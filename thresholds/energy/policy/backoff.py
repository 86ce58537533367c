"""The accuracy back-off: what follows a pruning ratio that broke a quality target. Pruning stops at the first ratio
that breaks one (on the labels, larger ones would too); with `ladder.accuracy_backoff` the ratio is backed off from,
or with `ladder.backoff_teacher` overtaken on a teacher's soft labels (the ladder's description: rungs.py)."""

from __future__ import annotations

from thresholds.energy.policy.gates import INFERENCE_TARGETS, QUALITY_TARGETS, missed_targets, quality_ok, train_limit_j
from thresholds.energy.policy.records import CandidateResult, Next, Step, StepKind
from thresholds.energy.policy.rungs import SERVING_FORMS
from thresholds.energy.schema import Scenario
from thresholds.energy.training_cost import TrainSegment, distinct_runs, epoch_prices, priced_ratio


def backoff(scenario: Scenario, history: list[CandidateResult]) -> Next | None:
    """Accuracy back-off once a pruning ratio broke a quality target (a training miss it may also have
    is left to the training-cost moves). From a ratio that met every inference target, each move once:
    the ratio halfway back to the largest one that kept quality; the same ratio fine-tuned on the soft
    labels of the most accurate model the training target affords (`_teacher`, `ladder.backoff_teacher`); the
    same ratio fine-tuned twice as long.
    A ratio that missed inference as well is not backed off from but overtaken: the next larger ratio
    fine-tuned on those soft labels (`_taught_further`). A step from a taught ratio stays taught."""
    baseline = history[0]
    pruned = [c for c in history if c.step.kind == StepKind.PRUNE and c.ok and c.step.value is not None]
    values = {c.index: float(c.step.value) for c in pruned}  # type: ignore[arg-type]
    for broken in pruned:
        misses = missed_targets(scenario, broken, baseline)
        if any(m in INFERENCE_TARGETS for m in misses):
            further = _taught_further(scenario, history, broken)
            if further is not None:
                return further
            continue
        if not any(m in QUALITY_TARGETS for m in misses):
            continue
        ratio, target, taught = (
            values[broken.index],
            next(m for m in misses if m in QUALITY_TARGETS),
            broken.step.teacher,
        )
        parent = broken.step.parent if broken.step.parent is not None else 0
        below = max((r for r in scenario.ladder.pruning_ratios if r < ratio), default=0.0)
        same = [c.step for c in history if c.step.kind == StepKind.PRUNE and c.step.value == broken.step.value]
        if ratio in scenario.ladder.pruning_ratios and not any(below < v < ratio for v in values.values()):
            good = max(
                (
                    values[c.index]
                    for c in pruned
                    if values[c.index] < ratio and quality_ok(scenario.targets, c, baseline)
                ),
                default=0.0,
            )
            mid = round((good + ratio) / 2, 3)
            why = f"{target}: prune:{ratio:g} met the inference targets but broke it; back off to {mid:g}"
            return Next(
                step=Step(kind=StepKind.PRUNE, value=mid, parent=parent, teacher=taught, target=target),
                why=why,
                target=target,
            )
        if scenario.ladder.backoff_teacher and not any(s.teacher is not None for s in same):
            teacher = _teacher(scenario, history, history[parent])  # priced only when the opt-in asks for it
            if _better(teacher, broken):
                why = (
                    f"{target}: prune:{ratio:g} met the inference targets but broke it; fine-tune it on the soft "
                    f"labels of #{teacher.index}"
                )
                step = Step(
                    kind=StepKind.PRUNE, value=broken.step.value, parent=parent, teacher=teacher.index, target=target
                )
                return Next(step=step, why=why, target=target)
        if not any(s.epochs is not None for s in same):
            epochs = 2 * scenario.training.fine_tune_epochs
            why = (
                f"{target}: prune:{ratio:g} met the inference targets but broke it; fine-tune it for {epochs} "
                "epochs instead"
            )
            step = Step(
                kind=StepKind.PRUNE,
                value=broken.step.value,
                parent=parent,
                epochs=epochs,
                teacher=taught,
                target=target,
            )
            return Next(step=step, why=why, target=target)
    return None


# Soft labels can win back a small accuracy loss, not a collapse: a ratio whose drop is within this many times
# the allowed drop is overtaken on a teacher's soft labels; one that lost more ends the pruning ladder.
NEAR_MISS_FACTOR = 2.0


def _near_miss(scenario: Scenario, c: CandidateResult, baseline: CandidateResult) -> bool:
    """Whether `c`'s only quality miss is an accuracy drop within `NEAR_MISS_FACTOR` times the allowed one."""
    allowed = scenario.targets.max_accuracy_drop_pt
    misses = [m for m in missed_targets(scenario, c, baseline) if m in QUALITY_TARGETS]
    if misses != ["accuracy_drop_pt"] or allowed is None or c.accuracy is None or baseline.accuracy is None:
        return False
    return (baseline.accuracy - c.accuracy) * 100 <= NEAR_MISS_FACTOR * allowed


def _taught_further(scenario: Scenario, history: list[CandidateResult], short: CandidateResult) -> Next | None:
    """For a pruned candidate that missed an inference target and either just missed accuracy on the labels
    (`_near_miss`) or kept quality on a teacher's soft labels: the next larger ratio of the ladder, fine-tuned on
    the soft labels of `_teacher` (each ratio once; none once a taught ratio broke quality)."""
    if not scenario.ladder.backoff_teacher:
        return None
    baseline = history[0]
    taught = [c for c in history if c.step.kind == StepKind.PRUNE and c.step.teacher is not None]
    if short.step.teacher is None and not _near_miss(scenario, short, baseline):
        return (
            None  # the labels kept quality (the plain ladder goes on from it), or lost more than soft labels win back
        )
    if any(not quality_ok(scenario.targets, c, baseline) for c in taught):
        return None
    ratio = float(short.step.value)  # type: ignore[arg-type]
    tried = {float(c.step.value) for c in taught if c.step.value is not None}
    larger = [r for r in scenario.ladder.pruning_ratios if r > ratio and r not in tried]
    if not larger:
        return None
    target = next(m for m in missed_targets(scenario, short, baseline) if m in INFERENCE_TARGETS)
    parent = short.step.parent if short.step.parent is not None else 0
    teacher = short.step.teacher
    if teacher is None:
        found = _teacher(scenario, history, history[parent])
        if not _better(found, short):
            return None  # no teacher the training target affords knows more than the labels did
        teacher = found.index
    how = "kept quality on the soft labels" if short.step.teacher is not None else "broke quality"
    why = (
        f"{target}: prune:{ratio:g} {how} but missed it; prune {larger[0]:.0%} and fine-tune on the soft labels "
        f"of #{teacher}"
    )
    return Next(
        step=Step(kind=StepKind.PRUNE, value=larger[0], parent=parent, teacher=teacher, target=target),
        why=why,
        target=target,
    )


def _teacher(scenario: Scenario, history: list[CandidateResult], parent: CandidateResult) -> CandidateResult:
    """The teacher of a back-off fine-tune of `parent`'s pruned copy: the trained torch fp32 model with the best
    quality (accuracy, else lowest RMSE) among those whose training, added to `parent`'s lineage, stays within the
    training target (the taught model's lineage includes its teacher's: tasks/energy_loop/producers.py). `parent` adds
    nothing."""
    baseline = history[0]
    limit = train_limit_j(scenario.targets, baseline)
    pool = [c for c in history if c.ok and c.step.kind not in SERVING_FORMS]
    for c in sorted(pool, key=lambda c: (-(c.accuracy if c.accuracy is not None else -(c.rmse or 0.0)), c.index)):
        union = _union_cost_j(history, [*parent.train_segments, *c.train_segments])
        if c.index == parent.index or limit is None or (union is not None and union <= limit):
            return c
    return parent


def _better(teacher: CandidateResult, student: CandidateResult) -> bool:
    """Whether `teacher` scored better than `student` (higher accuracy, else lower RMSE): only then can its soft labels
    help."""
    if teacher.accuracy is not None and student.accuracy is not None:
        return teacher.accuracy > student.accuracy
    return teacher.rmse is not None and student.rmse is not None and teacher.rmse < student.rmse


def _union_cost_j(history: list[CandidateResult], segments: list[TrainSegment]) -> float | None:
    """What training these runs costs, each run once, priced by work in the baseline's joules (None: unpriced)."""
    baseline = history[0]
    priced = priced_ratio(
        distinct_runs(segments), baseline.train_segments, epoch_prices(s for c in history for s in c.train_segments)
    )
    if priced is None or baseline.train_energy_j is None:
        return None
    return priced[0] * baseline.train_energy_j
