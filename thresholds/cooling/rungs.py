"""The cooling escalation's ladder: every kind of attempt, one entry each in `RUNGS`, in the order the walk meets them.

An entry says all that a rung is: what a step of it makes (`what`), its move (the `Next` it builds from the history,
or a `Final` when it has nothing left to offer), the gate checks it is taken to fix (`targets`), the `Ladder` fields
of the scenario that configure it, whether it trains a network from scratch or derives one from a parent's weights,
whether it narrows the network, where a step of it goes when it misses quality (`if_quality_missed`; None: the loop
has no rung left), and whether a crash of it ends the loop. `decide` (policy.py) reads nothing else about a rung:

- no attempt yet: the first rung (`train`);
- the last attempt missed quality: its rung's `if_quality_missed`;
- quality met but a cost gate missed: the first rung in table order whose `targets` cover every missed check.

tests/thresholds/cooling/test_rung_table.py checks every entry's properties against the decisions it produces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from thresholds.cooling.records import Attempt, Kind, Next
from thresholds.cooling.schema import CoolingScenario, Ladder
from thresholds.core import Final, FinalState

# What the agent does in the room
QUALITY_CHECKS = ("trained", "saving", "band", "band_vs_builtin", "vs_controller", "band_vs_controller")
COST_CHECKS = ("train_energy", "inference_energy")  # what it costs to make and to run

Move = Callable[[CoolingScenario, list[Attempt], "Missed"], Next | Final]


@dataclass(frozen=True)
class Missed:
    """Why the last attempt did not pass: its failed gates in words, and whether quality was among them."""

    why: str
    quality: bool


@dataclass(frozen=True)
class Rung:
    """One kind of attempt: everything the escalation knows about it."""

    kind: Kind
    what: str  # what a step of it makes
    move: Move  # (scenario, history, what the last attempt missed) -> its step, or the loop's end
    targets: tuple[str, ...] = ()  # gate checks (policy.checks names) a step of it is taken to fix
    configured_by: tuple[str, ...] = ()  # the `Ladder` fields of the scenario that configure it
    from_scratch: bool = True  # a fresh network trained on the room; False: regresses a parent's Q-values
    narrower: bool = False  # hidden widths below the previous attempt's (or the student's, after a distil)
    if_quality_missed: Kind | None = None  # the rung a quality miss of a step of it leads to; None: FAILED
    crash_is_final: bool = False  # a crash of it ends the loop FAILED (nothing trained yet to fall back on)


def narrower(widths: tuple[int, int], ladder: Ladder) -> tuple[int, int] | None:
    """Both widths x shrink_factor (not below min_hidden_units); None when that changes nothing."""
    factor, floor = ladder.shrink_factor, ladder.min_hidden_units
    smaller = (max(floor, int(round(widths[0] * factor))), max(floor, int(round(widths[1] * factor))))
    return None if smaller == widths or smaller[0] > widths[0] or smaller[1] > widths[1] else smaller


def _cannot_shrink(last: Attempt, why: str) -> Final:
    return Final(
        state=FinalState.FAILED,
        chosen=None,
        reason=f"no rung left: {last.hidden_units[0]}-{last.hidden_units[1]} cannot shrink further ({why})",
    )


def _train(scenario: CoolingScenario, history: list[Attempt], missed: Missed) -> Next:
    t = scenario.training
    return Next(kind=Kind.TRAIN, hidden_units=t.hidden_units, max_episodes=t.max_episodes, epsilon=t.epsilon,
                parent=None, reason="the agent as configured")  # fmt: skip


def _retrain(scenario: CoolingScenario, history: list[Attempt], missed: Missed) -> Next:
    last, ladder, why = history[-1], scenario.ladder, missed.why
    retrains = sum(1 for a in history if a.kind == Kind.RETRAIN)
    epsilon = last.epsilon if retrains == 0 else max(ladder.min_epsilon, last.epsilon * ladder.epsilon_factor)
    episodes = max(last.max_episodes + 1, int(round(last.max_episodes * ladder.episode_growth)))
    # Another seed: with early stopping the same seed stops at the same episode and trains the same agent again.
    return Next(kind=Kind.RETRAIN, hidden_units=last.hidden_units, max_episodes=episodes, epsilon=epsilon,
                parent=None, reason=f"retrain with {episodes} episodes, epsilon {epsilon:g}, another seed: {why}",
                seed_offset=retrains + 1)  # fmt: skip


def _distil(scenario: CoolingScenario, history: list[Attempt], missed: Missed) -> Next | Final:
    last, why = history[-1], missed.why
    smaller = narrower(last.hidden_units, scenario.ladder)
    if smaller is None:
        return _cannot_shrink(last, why)
    return Next(kind=Kind.DISTIL, hidden_units=smaller, max_episodes=last.max_episodes, epsilon=last.epsilon,
                parent=last.index, reason=f"distil #{last.index} into {smaller[0]}-{smaller[1]}: {why}")  # fmt: skip


def _shrink(scenario: CoolingScenario, history: list[Attempt], missed: Missed) -> Next | Final:
    last, why = history[-1], missed.why
    if last.kind == Kind.DISTIL and missed.quality:  # the student missed quality: its width, trained as its teacher was
        episodes = history[last.parent or 0].max_episodes
        return Next(kind=Kind.SHRINK, hidden_units=last.hidden_units, max_episodes=episodes, epsilon=last.epsilon,
                    parent=None, reason=f"the distilled student missed quality ({why}): "
                                        "train that width from scratch")  # fmt: skip
    smaller = narrower(last.hidden_units, scenario.ladder)
    if smaller is None:
        return _cannot_shrink(last, why)
    return Next(kind=Kind.SHRINK, hidden_units=smaller, max_episodes=last.max_episodes, epsilon=last.epsilon,
                parent=None, reason=f"train a smaller {smaller[0]}-{smaller[1]} agent from scratch: {why}")  # fmt: skip


RUNGS: tuple[Rung, ...] = (
    Rung(
        Kind.TRAIN,
        "the agent as the scenario configures it (`training`)",
        _train,
        if_quality_missed=Kind.RETRAIN,
        crash_is_final=True,
    ),
    Rung(
        Kind.RETRAIN,
        "the same width with more episodes (x episode_growth) and another seed; from the second retrain on, "
        "exploration x epsilon_factor, not below min_epsilon",
        _retrain,
        targets=QUALITY_CHECKS,
        configured_by=("episode_growth", "epsilon_factor", "min_epsilon"),
        if_quality_missed=Kind.RETRAIN,
    ),
    Rung(
        Kind.DISTIL,
        "a student with hidden widths x shrink_factor regressing the last agent's Q-values (its lineage: the "
        "teacher's training + distillation); taken when only inference energy is too high",
        _distil,
        targets=("inference_energy",),
        configured_by=("shrink_factor", "min_hidden_units"),
        from_scratch=False,
        narrower=True,
        if_quality_missed=Kind.SHRINK,
    ),
    Rung(
        Kind.SHRINK,
        "a smaller agent trained from scratch: widths x shrink_factor when training (or inference) costs too much, "
        "or a distilled student's width when the student missed quality",
        _shrink,
        targets=COST_CHECKS,
        configured_by=("shrink_factor", "min_hidden_units"),
        narrower=True,
    ),
)

BY_KIND: dict[Kind, Rung] = {r.kind: r for r in RUNGS}


def for_costs(missed: set[str]) -> Rung | None:
    """The first rung whose targets cover every missed cost check."""
    return next((r for r in RUNGS if missed and missed <= set(r.targets)), None)
