"""The cooling loop's escalation: a pure function from (thresholds, attempts so far) to what comes next.

Gates (each optional): saving vs the built-in cooling, minutes outside the band (absolute, and
relative to the built-in's), training energy (the agent's whole lineage), inference energy per
simulated year. Ladder:

1. `train`   - the agent as configured.
2. `retrain` - the saving or the band missed: more episodes (x episode_growth); from the second
               retrain on, exploration multiplied by epsilon_factor (not below min_epsilon).
3. `distil`  - quality met but inference too costly: a student with hidden widths x shrink_factor
               regresses the agent's Q-values (lineage: the teacher's training + distillation).
4. `shrink`  - quality met but training too costly, or a distilled student missed quality: a
               smaller agent trained from scratch.

Final states: PASSED (an attempt met every gate; the cheapest passing one at inference is chosen),
BUDGET_EXHAUSTED (attempts or total energy used up), FAILED (no rung left: the first training
crashed, the widths cannot shrink further, or a shrunk agent missed quality).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel

from thresholds.cooling.schema import CoolingScenario, Targets
from thresholds.core import Check, Final, FinalState


class Kind(StrEnum):
    TRAIN = "train"
    RETRAIN = "retrain"
    DISTIL = "distil"
    SHRINK = "shrink"


class Attempt(BaseModel):
    """Plain record of one trained agent: the only thing the policy sees."""

    index: int
    kind: Kind
    hidden_units: tuple[int, int]
    max_episodes: int
    epsilon: float
    parent: int | None = None
    failed_reason: str | None = None  # training crashed or diverged
    energy_saved_pct: float | None = None
    minutes_outside_band: int | None = None
    builtin_minutes_outside_band: int | None = None
    train_energy_j: float | None = None  # the agent's lineage: a distilled student includes its teacher
    spent_energy_j: float = 0.0  # this attempt's own training + measurement
    inference_energy_j_per_year: float | None = None
    episodes_run: int = 0
    energy_source: str = ""  # the meter behind the energy figures
    energy_estimated: bool = True  # an estimate (load x TDP, fixed power), not a hardware reading
    agent_dir: str | None = None
    run_id: str | None = None


class Next(BaseModel):
    kind: Kind
    hidden_units: tuple[int, int]
    max_episodes: int
    epsilon: float
    parent: int | None
    reason: str


def checks(targets: Targets, a: Attempt) -> list[Check]:
    """Every gate the targets set, judged on one attempt (a missing figure fails its gate)."""

    def fmt(value: float | int | None, unit: str) -> str:
        return "not measured" if value is None else f"{value:,.4g} {unit}"

    out: list[Check] = []
    if a.failed_reason:
        out.append(Check(name="trained", ok=False, detail=f"training failed: {a.failed_reason}"))
    if targets.min_energy_saved_pct is not None:
        v = a.energy_saved_pct
        out.append(
            Check(
                name="saving",
                ok=v is not None and v >= targets.min_energy_saved_pct,
                detail=f"saved {fmt(v, '%')} (target >= {targets.min_energy_saved_pct:g} %)",
            )
        )
    if targets.max_minutes_outside_band is not None:
        m = a.minutes_outside_band
        out.append(
            Check(
                name="band",
                ok=m is not None and m <= targets.max_minutes_outside_band,
                detail=f"{fmt(m, 'min')} outside the band (target <= {targets.max_minutes_outside_band})",
            )
        )
    if targets.max_minutes_outside_vs_builtin is not None:
        m, b = a.minutes_outside_band, a.builtin_minutes_outside_band
        ok = m is not None and b is not None and m <= b + targets.max_minutes_outside_vs_builtin
        out.append(
            Check(
                name="band_vs_builtin",
                ok=ok,
                detail=f"{fmt(m, 'min')} outside the band vs built-in {fmt(b, 'min')} "
                f"(allowed +{targets.max_minutes_outside_vs_builtin})",
            )
        )
    if targets.max_train_energy_j is not None:
        e = a.train_energy_j
        out.append(
            Check(
                name="train_energy",
                ok=e is not None and e <= targets.max_train_energy_j,
                detail=f"training {fmt(e, 'J')} (target <= {targets.max_train_energy_j:g} J)",
            )
        )
    if targets.max_inference_energy_j_per_year is not None:
        e = a.inference_energy_j_per_year
        out.append(
            Check(
                name="inference_energy",
                ok=e is not None and e <= targets.max_inference_energy_j_per_year,
                detail=f"inference {fmt(e, 'J/year')} (target <= {targets.max_inference_energy_j_per_year:g} J/year)",
            )
        )
    return out


QUALITY = {"trained", "saving", "band", "band_vs_builtin"}


def passed(targets: Targets, a: Attempt) -> bool:
    return all(c.ok for c in checks(targets, a))


def quality_ok(targets: Targets, a: Attempt) -> bool:
    return all(c.ok for c in checks(targets, a) if c.name in QUALITY)


def summary(targets: Targets, a: Attempt) -> str:
    bad = [c.detail for c in checks(targets, a) if not c.ok]
    return "meets every target" if not bad else "; ".join(bad)


def _half(widths: tuple[int, int], factor: float, floor: int) -> tuple[int, int] | None:
    smaller = (max(floor, int(round(widths[0] * factor))), max(floor, int(round(widths[1] * factor))))
    return None if smaller == widths or smaller[0] > widths[0] or smaller[1] > widths[1] else smaller


def base_step(scenario: CoolingScenario) -> Next:
    """The first attempt: the agent as the scenario configures it."""
    t = scenario.training
    return Next(
        kind=Kind.TRAIN,
        hidden_units=t.hidden_units,
        max_episodes=t.max_episodes,
        epsilon=t.epsilon,
        parent=None,
        reason="the agent as configured",
    )


def decide(scenario: CoolingScenario, history: list[Attempt]) -> Next | Final:
    """The next attempt, or the loop's final state."""
    if not history:
        return base_step(scenario)
    targets, ladder, budget = scenario.targets, scenario.ladder, scenario.budget
    winners = [a for a in history if passed(targets, a)]
    if winners:
        best = min(
            winners,
            key=lambda a: (
                a.inference_energy_j_per_year if a.inference_energy_j_per_year is not None else float("inf"),
                -a.index,
            ),
        )
        return Final(
            state=FinalState.PASSED,
            chosen=best.index,
            reason=f"attempt #{best.index} ({best.kind.value}, {best.hidden_units[0]}-{best.hidden_units[1]}) meets "
            "every target",
        )
    last = history[-1]
    spent = sum(a.spent_energy_j for a in history)
    if len(history) >= budget.max_attempts:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            chosen=None,
            reason=f"{len(history)} attempts used (max {budget.max_attempts}); last: {summary(targets, last)}",
        )
    if budget.max_total_energy_j is not None and spent >= budget.max_total_energy_j:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            chosen=None,
            reason=f"{spent:,.0f} J spent (max {budget.max_total_energy_j:g} J); last: {summary(targets, last)}",
        )
    if last.failed_reason and last.kind == Kind.TRAIN:
        return Final(
            state=FinalState.FAILED, chosen=None, reason=f"the first agent could not be trained: {last.failed_reason}"
        )
    why = summary(targets, last)
    if not quality_ok(targets, last):
        if last.kind == Kind.DISTIL:
            episodes = history[last.parent or 0].max_episodes
            return Next(kind=Kind.SHRINK, hidden_units=last.hidden_units, max_episodes=episodes, epsilon=last.epsilon,
                        parent=None, reason=f"the distilled student missed quality ({why}): "
                                            "train that width from scratch")  # fmt: skip
        if last.kind == Kind.SHRINK:
            return Final(
                state=FinalState.FAILED, chosen=None, reason=f"no rung left: the smaller agent misses quality ({why})"
            )
        retrains = sum(1 for a in history if a.kind == Kind.RETRAIN)
        epsilon = last.epsilon if retrains == 0 else max(ladder.min_epsilon, last.epsilon * ladder.epsilon_factor)
        episodes = max(last.max_episodes + 1, int(round(last.max_episodes * ladder.episode_growth)))
        return Next(kind=Kind.RETRAIN, hidden_units=last.hidden_units, max_episodes=episodes, epsilon=epsilon,
                    parent=None, reason=f"retrain with {episodes} episodes, epsilon {epsilon:g}: {why}")  # fmt: skip
    # Quality met: what is too costly?
    bad = {c.name for c in checks(targets, last) if not c.ok}
    smaller = _half(last.hidden_units, ladder.shrink_factor, ladder.min_hidden_units)
    if smaller is None:
        return Final(
            state=FinalState.FAILED,
            chosen=None,
            reason=f"no rung left: {last.hidden_units[0]}-{last.hidden_units[1]} cannot shrink further ({why})",
        )
    if "inference_energy" in bad and "train_energy" not in bad:
        return Next(kind=Kind.DISTIL, hidden_units=smaller, max_episodes=last.max_episodes, epsilon=last.epsilon,
                    parent=last.index,
                    reason=f"distil #{last.index} into {smaller[0]}-{smaller[1]}: {why}")  # fmt: skip
    return Next(kind=Kind.SHRINK, hidden_units=smaller, max_episodes=last.max_episodes, epsilon=last.epsilon,
                parent=None, reason=f"train a smaller {smaller[0]}-{smaller[1]} agent from scratch: {why}")  # fmt: skip


class SavingRecord(NamedTuple):
    """What the champion rule compares of a version: its environment and its recorded saving (None: not recorded)."""

    environment: str | None
    energy_saved_pct: float | None


def beats_champion(candidate: SavingRecord, champion: SavingRecord | None) -> tuple[bool, str]:
    """Does a passing version take `champion`? Same environment: it must save at least as much. A seed-environment
    agent never displaces a room agent (the room is the pipeline's default)."""
    if champion is None:
        return True, "no champion yet"
    env, current_env = candidate.environment, champion.environment
    if env != current_env:
        if current_env == "room":
            return False, f"the champion is a room agent; a {env} agent does not replace it"
        return True, f"a {env} agent replaces the {current_env} champion"
    if candidate.energy_saved_pct is None:
        return False, "the candidate has no recorded saving"
    new = candidate.energy_saved_pct
    old = float("-inf") if champion.energy_saved_pct is None else champion.energy_saved_pct
    if new >= old:
        return True, f"saves {new:.2f} % vs the champion's {old:.2f} %"
    return False, f"saves {new:.2f} %, less than the champion's {old:.2f} %"
