"""The cooling loop's escalation: a pure function from (thresholds, attempts so far) to what comes next.

Gates (each optional): saving vs the built-in cooling, minutes outside the band (absolute, and
relative to the built-in's), training energy (the agent's whole lineage), inference energy per
simulated year. The ladder (train, retrain, distil, shrink) is a table, one entry per kind of
attempt: thresholds/cooling/rungs.py says what each makes, what it is taken to fix and what follows it.

Final states: PASSED (an attempt met every gate; the cheapest passing one at inference is chosen),
BUDGET_EXHAUSTED (attempts or total energy used up), FAILED (no rung left: the first training
crashed, the widths cannot shrink further, or a shrunk agent missed quality).
"""

from __future__ import annotations

from typing import NamedTuple

from thresholds.cooling.records import Attempt, Kind, Next
from thresholds.cooling.rungs import BY_KIND, QUALITY_CHECKS, Missed, for_costs
from thresholds.cooling.schema import CoolingScenario, Targets
from thresholds.core import Check, Final, FinalState

__all__ = ["Attempt", "Kind", "Next", "beats_champion", "checks", "decide", "passed", "quality_ok", "summary"]


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
    if targets.min_saved_vs_best_controller_pct is not None:
        v = a.saved_vs_best_controller_pct
        out.append(
            Check(
                name="vs_controller",
                ok=v is not None and v >= targets.min_saved_vs_best_controller_pct,
                detail=f"saved {fmt(v, '%')} vs the best tuned controller on held-out years "
                f"(target >= {targets.min_saved_vs_best_controller_pct:g} %)",
            )
        )
    if targets.max_minutes_outside_vs_best_controller is not None:
        m, b = a.minutes_outside_band, a.best_controller_minutes_outside_band
        ok = m is not None and b is not None and m <= b + targets.max_minutes_outside_vs_best_controller
        out.append(
            Check(
                name="band_vs_controller",
                ok=ok,
                detail=f"{fmt(m, 'min')} outside the band vs the best tuned controller's {fmt(b, 'min')} "
                f"(allowed +{targets.max_minutes_outside_vs_best_controller})",
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


QUALITY = set(QUALITY_CHECKS)


def passed(targets: Targets, a: Attempt) -> bool:
    return all(c.ok for c in checks(targets, a))


def quality_ok(targets: Targets, a: Attempt) -> bool:
    return all(c.ok for c in checks(targets, a) if c.name in QUALITY)


def summary(targets: Targets, a: Attempt) -> str:
    bad = [c.detail for c in checks(targets, a) if not c.ok]
    return "meets every target" if not bad else "; ".join(bad)


def base_step(scenario: CoolingScenario) -> Next:
    """The first attempt: the agent as the scenario configures it."""
    step = BY_KIND[Kind.TRAIN].move(scenario, [], Missed("", quality=False))
    assert isinstance(step, Next)
    return step


def decide(scenario: CoolingScenario, history: list[Attempt]) -> Next | Final:
    """The next attempt, or the loop's final state: the budget first, then the rung table (rungs.py)."""
    if not history:
        return base_step(scenario)
    targets, budget = scenario.targets, scenario.budget
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
    rung = BY_KIND[last.kind]
    if last.failed_reason and rung.crash_is_final:
        return Final(
            state=FinalState.FAILED, chosen=None, reason=f"the first agent could not be trained: {last.failed_reason}"
        )
    why = summary(targets, last)
    if not quality_ok(targets, last):
        if rung.if_quality_missed is None:
            return Final(
                state=FinalState.FAILED,
                chosen=None,
                reason=f"no rung left: the {last.kind.value} agent misses quality ({why})",
            )
        return BY_KIND[rung.if_quality_missed].move(scenario, history, Missed(why, quality=True))
    # Quality met: the rung that fixes every missed cost.
    fix = for_costs({c.name for c in checks(targets, last) if not c.ok})
    if fix is None:  # unreachable while quality is met and some gate missed: every cost check has a rung
        return Final(state=FinalState.FAILED, chosen=None, reason=f"no rung fixes: {why}")
    return fix.move(scenario, history, Missed(why, quality=False))


class SavingRecord(NamedTuple):
    """What the champion rule compares of a version: its environment, its recorded savings (None: not recorded) vs
    the built-in cooling and vs the best controller tuned on the training years (held-out years), and whether the
    scenario that produced it gates on the latter."""

    environment: str | None
    energy_saved_pct: float | None
    saved_vs_best_controller_pct: float | None = None
    must_beat_best_controller: bool = False


def beats_champion(candidate: SavingRecord, champion: SavingRecord | None) -> tuple[bool, str]:
    """Does a passing version take `champion`? Where its scenario gates on the best tuned controller, a room agent
    must beat that controller on the held-out years to be crowned at all. Same environment: a room agent must save at
    least as much vs the best tuned controller as the champion did (a champion without that figure is replaced), a
    seed agent at least as much vs the built-in cooling. A seed-environment agent never displaces a room agent (the
    room is the pipeline's default)."""
    env = candidate.environment
    vs_best = candidate.saved_vs_best_controller_pct
    if candidate.must_beat_best_controller and env == "room" and (vs_best is None or vs_best <= 0):
        shown = "no recorded saving" if vs_best is None else f"{vs_best:.2f} %"
        return False, f"saves {shown} vs the best tuned controller on held-out years: it does not beat it"
    if champion is None:
        return True, "no champion yet"
    current_env = champion.environment
    if env != current_env:
        if current_env == "room":
            return False, f"the champion is a room agent; a {env} agent does not replace it"
        return True, f"a {env} agent replaces the {current_env} champion"
    against = ""
    if env == "room" and vs_best is not None:
        new, against = vs_best, " (vs the best tuned controller, held-out years)"
        old = float("-inf") if champion.saved_vs_best_controller_pct is None else champion.saved_vs_best_controller_pct
    else:
        if candidate.energy_saved_pct is None:
            return False, "the candidate has no recorded saving"
        new = candidate.energy_saved_pct
        old = float("-inf") if champion.energy_saved_pct is None else champion.energy_saved_pct
    if new >= old:
        return True, f"saves {new:.2f} % vs the champion's {old:.2f} %{against}"
    return False, f"saves {new:.2f} %, less than the champion's {old:.2f} %{against}"
