"""Every entry of the cooling rung table (thresholds/cooling/rungs.py) does what its fields say."""

from __future__ import annotations

import pytest

from thresholds.cooling.policy import Attempt, Kind, Next, checks, decide
from thresholds.cooling.rungs import BY_KIND, COST_CHECKS, QUALITY_CHECKS, RUNGS, Rung, for_costs
from thresholds.cooling.schema import Budget, CoolingScenario, Ladder, Targets, Training
from thresholds.core import Final, FinalState

TARGETS = Targets(
    min_energy_saved_pct=25.0,
    max_minutes_outside_band=100,
    max_minutes_outside_vs_builtin=0,
    min_saved_vs_best_controller_pct=5.0,
    max_minutes_outside_vs_best_controller=0,
    max_train_energy_j=1000.0,
    max_inference_energy_j_per_year=10.0,
)
LADDER = Ladder(episode_growth=2.0, epsilon_factor=0.5, min_epsilon=0.05, shrink_factor=0.5, min_hidden_units=8)
SCENARIO = CoolingScenario(
    name="rungs",
    targets=TARGETS,
    budget=Budget(max_attempts=10),
    ladder=LADDER,
    training=Training(hidden_units=(64, 32), max_episodes=40, epsilon=0.3),
)
# One attempt's figures that miss exactly the named gate check (the others pass).
MISSES: dict[str, dict[str, object]] = {
    "trained": {"failed_reason": "RuntimeError: diverged"},
    "saving": {"energy_saved_pct": 10.0},
    "band": {
        "minutes_outside_band": 500,
        "builtin_minutes_outside_band": 500,
        "best_controller_minutes_outside_band": 500,
    },
    "band_vs_builtin": {"minutes_outside_band": 5, "best_controller_minutes_outside_band": 5},
    "vs_controller": {"saved_vs_best_controller_pct": 1.0},
    "band_vs_controller": {"minutes_outside_band": 5, "builtin_minutes_outside_band": 5},
    "train_energy": {"train_energy_j": 5000.0},
    "inference_energy": {"inference_energy_j_per_year": 50.0},
}


def attempt(index: int, kind: Kind, miss: tuple[str, ...] = (), **fields: object) -> Attempt:
    record: dict[str, object] = dict(
        index=index,
        kind=kind,
        hidden_units=(64, 32),
        max_episodes=40,
        epsilon=0.3,
        parent=0 if kind == Kind.DISTIL else None,
        energy_saved_pct=30.0,
        minutes_outside_band=0,
        builtin_minutes_outside_band=0,
        saved_vs_best_controller_pct=6.0,
        best_controller_minutes_outside_band=0,
        train_energy_j=500.0,
        inference_energy_j_per_year=5.0,
    )
    for name in miss:
        record.update(MISSES[name])
    record.update(fields)
    return Attempt.model_validate(record)


def history_ending(kind: Kind, miss: tuple[str, ...], **fields: object) -> list[Attempt]:
    """A first attempt (a passing-quality teacher for a distil) and one of `kind` missing `miss`."""
    if kind == Kind.TRAIN:
        return [attempt(0, kind, miss, **fields)]
    first = attempt(0, Kind.TRAIN, ("inference_energy",))
    return [first, attempt(1, kind, miss, **({"hidden_units": (32, 16)} if kind == Kind.DISTIL else {}) | fields)]


def test_the_table_has_one_entry_per_kind_in_kind_order() -> None:
    assert [r.kind for r in RUNGS] == list(Kind)
    assert set(BY_KIND) == set(Kind)


def test_every_misses_entry_fails_exactly_its_check() -> None:
    assert set(MISSES) == set(QUALITY_CHECKS) | set(COST_CHECKS)
    for name in MISSES:
        failed = {c.name for c in checks(TARGETS, attempt(0, Kind.TRAIN, (name,))) if not c.ok}
        assert failed == {name}


@pytest.mark.parametrize("rung", RUNGS, ids=[r.kind.value for r in RUNGS])
def test_targets_name_gate_checks_and_cost_rungs_are_picked_for_them(rung: Rung) -> None:
    assert set(rung.targets) <= set(QUALITY_CHECKS) | set(COST_CHECKS)
    costs = tuple(t for t in rung.targets if t in COST_CHECKS)
    if not costs:
        return
    # Missing exactly its cost targets (after a 64-32 agent of good quality) picks this rung, unless an earlier
    # entry already covers them.
    chosen = decide(SCENARIO, history_ending(Kind.TRAIN, costs))
    expected = for_costs(set(costs))
    assert expected is not None and isinstance(chosen, Next) and chosen.kind == expected.kind
    earlier = [r for r in RUNGS[: RUNGS.index(rung)] if set(costs) <= set(r.targets)]
    assert (expected.kind == rung.kind) == (not earlier)


def test_quality_targets_are_retrained_and_each_quality_miss_leads_to_the_next_rung() -> None:
    assert BY_KIND[Kind.RETRAIN].targets == QUALITY_CHECKS
    for name in QUALITY_CHECKS:  # a retrain missing any one of them (a crash included) is retrained
        decision = decide(SCENARIO, history_ending(Kind.RETRAIN, (name,)))
        assert isinstance(decision, Next) and decision.kind == Kind.RETRAIN, (name, decision)


@pytest.mark.parametrize("rung", RUNGS, ids=[r.kind.value for r in RUNGS])
def test_if_quality_missed_is_what_a_quality_miss_of_the_rung_leads_to(rung: Rung) -> None:
    decision = decide(SCENARIO, history_ending(rung.kind, ("saving",)))
    if rung.if_quality_missed is None:
        assert isinstance(decision, Final) and decision.state == FinalState.FAILED
        assert "no rung left" in decision.reason
    else:
        assert isinstance(decision, Next) and decision.kind == rung.if_quality_missed


@pytest.mark.parametrize("rung", RUNGS, ids=[r.kind.value for r in RUNGS])
def test_crash_is_final_only_where_the_entry_says(rung: Rung) -> None:
    decision = decide(SCENARIO, history_ending(rung.kind, ("trained",)))
    crashed_final = isinstance(decision, Final) and decision.reason.startswith("the first agent could not be trained")
    assert crashed_final == rung.crash_is_final


def _step_of(rung: Rung, scenario: CoolingScenario = SCENARIO) -> Next:
    """A step of `rung` as the walk reaches it."""
    if rung.kind == Kind.TRAIN:
        decision = decide(scenario, [])
    elif rung.kind == Kind.RETRAIN:  # two retrains in: the exploration factor applies too
        history = [attempt(0, Kind.TRAIN, ("saving",)), attempt(1, Kind.RETRAIN, ("saving",), max_episodes=80)]
        decision = decide(scenario, history)
    else:
        decision = decide(scenario, history_ending(Kind.TRAIN, tuple(t for t in rung.targets if t in COST_CHECKS)))
    assert isinstance(decision, Next) and decision.kind == rung.kind, decision
    return decision


@pytest.mark.parametrize("rung", RUNGS, ids=[r.kind.value for r in RUNGS])
def test_from_scratch_and_narrower_describe_the_step(rung: Rung) -> None:
    step = _step_of(rung)
    assert (step.parent is None) == rung.from_scratch
    widths = SCENARIO.training.hidden_units
    if rung.narrower:
        assert step.hidden_units[0] < widths[0] and step.hidden_units[1] < widths[1]
    else:
        assert step.hidden_units == widths


@pytest.mark.parametrize("rung", RUNGS, ids=[r.kind.value for r in RUNGS])
def test_configured_by_names_ladder_fields_and_each_one_changes_the_step(rung: Rung) -> None:
    assert set(rung.configured_by) <= set(Ladder.model_fields)
    base = _step_of(rung)
    changed = {
        "episode_growth": 3.0,
        "epsilon_factor": 0.25,
        "min_epsilon": 0.2,
        "shrink_factor": 0.25,
        "min_hidden_units": 24,
    }
    for name in Ladder.model_fields:
        if name not in changed:
            continue
        other = SCENARIO.model_copy(update={"ladder": LADDER.model_copy(update={name: changed[name]})})
        step = _step_of(rung, other)
        moved = (step.hidden_units, step.max_episodes, step.epsilon) != (
            base.hidden_units,
            base.max_episodes,
            base.epsilon,
        )
        assert moved == (name in rung.configured_by), (rung.kind, name)


def test_a_student_that_missed_quality_is_trained_at_its_width_from_scratch() -> None:
    history = [attempt(0, Kind.TRAIN, ("inference_energy",), max_episodes=60)]
    history.append(attempt(1, Kind.DISTIL, ("saving",), hidden_units=(32, 16)))
    decision = decide(SCENARIO, history)
    assert isinstance(decision, Next)
    assert (decision.kind, decision.hidden_units, decision.max_episodes, decision.parent) == (
        Kind.SHRINK,
        (32, 16),
        60,
        None,
    )
