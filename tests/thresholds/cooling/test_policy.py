"""The cooling loop's escalation as a table: (targets, attempts so far) -> next attempt or final state."""

from __future__ import annotations

import pytest

from thresholds.cooling.policy import Attempt, Kind, Next, SavingRecord, beats_champion, checks, decide
from thresholds.cooling.schema import Budget, CoolingScenario, Ladder, Targets, Training
from thresholds.core import Final, FinalState

TARGETS = Targets(
    min_energy_saved_pct=25.0,
    max_minutes_outside_vs_builtin=0,
    max_train_energy_j=1000.0,
    max_inference_energy_j_per_year=10.0,
)
SCENARIO = CoolingScenario(
    name="table",
    targets=TARGETS,
    budget=Budget(max_attempts=5, max_total_energy_j=5000.0),
    ladder=Ladder(episode_growth=2.0, epsilon_factor=0.5, min_epsilon=0.05, shrink_factor=0.5, min_hidden_units=8),
    training=Training(hidden_units=(64, 32), max_episodes=40, epsilon=0.3),
)


def a(
    index: int,
    kind: Kind = Kind.TRAIN,
    saved: float = 30.0,
    outside: int = 0,
    train: float = 500.0,
    inference: float = 5.0,
    hidden: tuple[int, int] = (64, 32),
    episodes: int = 40,
    epsilon: float = 0.3,
    parent: int | None = None,
    spent: float = 100.0,
    failed: str | None = None,
) -> Attempt:
    return Attempt(
        index=index,
        kind=kind,
        hidden_units=hidden,
        max_episodes=episodes,
        epsilon=epsilon,
        parent=parent,
        failed_reason=failed,
        energy_saved_pct=None if failed else saved,
        minutes_outside_band=None if failed else outside,
        builtin_minutes_outside_band=None if failed else 0,
        train_energy_j=None if failed else train,
        spent_energy_j=spent,
        inference_energy_j_per_year=None if failed else inference,
    )


T, R, D, S = Kind.TRAIN, Kind.RETRAIN, Kind.DISTIL, Kind.SHRINK

# (case, history, expected kind or final state, expected (hidden, episodes, epsilon, parent) for a Next)
TABLE: list[tuple[str, list[Attempt], Kind | FinalState, tuple[tuple[int, int], int, float, int | None] | None]] = [
    ("nothing yet: the configured agent", [], T, ((64, 32), 40, 0.3, None)),
    ("first agent passes", [a(0)], FinalState.PASSED, None),
    ("saving missed: more episodes, same exploration", [a(0, saved=20.0)], R, ((64, 32), 80, 0.3, None)),
    ("band missed: retrain too", [a(0, outside=12)], R, ((64, 32), 80, 0.3, None)),
    (
        "second retrain also lowers exploration",
        [a(0, saved=20.0), a(1, R, saved=22.0, episodes=80)],
        R,
        ((64, 32), 160, 0.15, None),
    ),
    (
        "exploration has a floor",
        [a(0, saved=1.0), a(1, R, saved=1.0, episodes=80, epsilon=0.06)],
        R,
        ((64, 32), 160, 0.05, None),
    ),
    ("inference too costly: distil into half widths", [a(0, inference=50.0)], D, ((32, 16), 40, 0.3, 0)),
    ("training too costly: a smaller agent from scratch", [a(0, train=5000.0)], S, ((32, 16), 40, 0.3, None)),
    (
        "both too costly: shrink (distilling cannot lower the lineage)",
        [a(0, train=5000.0, inference=50.0)],
        S,
        ((32, 16), 40, 0.3, None),
    ),
    (
        "student misses quality: that width from scratch",
        [a(0, inference=50.0), a(1, D, saved=10.0, hidden=(32, 16), parent=0)],
        S,
        ((32, 16), 40, 0.3, None),
    ),
    (
        "shrunk agent misses quality: no rung left",
        [a(0, train=5000.0), a(1, S, saved=10.0, hidden=(32, 16))],
        FinalState.FAILED,
        None,
    ),
    ("widths at the floor: no rung left", [a(0, inference=50.0, hidden=(8, 8))], FinalState.FAILED, None),
    ("first training crashed", [a(0, failed="DivergedError: nan")], FinalState.FAILED, None),
    (
        "a retrain that crashed is retrained",
        [a(0, saved=1.0), a(1, R, failed="RuntimeError: x", episodes=80)],
        R,
        ((64, 32), 160, 0.15, None),
    ),
    ("attempts used up", [a(i, R if i else T, saved=1.0) for i in range(5)], FinalState.BUDGET_EXHAUSTED, None),
    ("energy used up", [a(0, saved=1.0, spent=6000.0)], FinalState.BUDGET_EXHAUSTED, None),
    (
        "an earlier attempt passed: PASSED even if the last did not",
        [a(0, inference=50.0), a(1, D, hidden=(32, 16), parent=0, inference=4.0)],
        FinalState.PASSED,
        None,
    ),
]


@pytest.mark.parametrize(("case", "history", "expected", "settings"), TABLE, ids=[row[0] for row in TABLE])
def test_escalation_table(
    case: str,
    history: list[Attempt],
    expected: Kind | FinalState,
    settings: tuple[tuple[int, int], int, float, int | None] | None,
) -> None:
    decision = decide(SCENARIO, history)
    if isinstance(expected, FinalState):
        assert isinstance(decision, Final), decision
        assert decision.state == expected
        assert decision.reason
    else:
        assert isinstance(decision, Next), decision
        assert decision.kind == expected
        assert (decision.hidden_units, decision.max_episodes, decision.epsilon, decision.parent) == settings


def test_passed_chooses_the_cheapest_passing_agent_at_inference() -> None:
    history = [a(0, inference=8.0), a(1, R, inference=3.0), a(2, R, inference=3.0)]
    decision = decide(SCENARIO, history)
    assert isinstance(decision, Final) and decision.chosen == 2  # ties go to the latest


def test_missing_figures_fail_their_gates() -> None:
    failed = checks(TARGETS, a(0, failed="boom"))
    assert not any(c.ok for c in failed)
    assert {c.name for c in failed} == {"trained", "saving", "band_vs_builtin", "train_energy", "inference_energy"}


@pytest.mark.parametrize(
    ("candidate", "champion", "wins"),
    [
        (SavingRecord("room", 30.0), None, True),
        (SavingRecord("room", 30.0), SavingRecord("room", 29.0), True),
        (SavingRecord("room", 28.0), SavingRecord("room", 29.0), False),
        (SavingRecord("seed", 80.0), SavingRecord("room", 29.0), False),
        (SavingRecord("room", 26.0), SavingRecord("seed", 80.0), True),
        (SavingRecord("room", None), SavingRecord("room", 29.0), False),
        (SavingRecord("room", 1.0), SavingRecord("room", None), True),
        # Gated on the best tuned controller (held-out years): crowned only when it beats it.
        (SavingRecord("room", 30.0, 6.0, True), None, True),
        (SavingRecord("room", 30.0, -2.0, True), None, False),
        (SavingRecord("room", 30.0, None, True), None, False),
        (SavingRecord("room", 30.0, -2.0, False), None, True),  # a scenario that does not gate on it
        (SavingRecord("room", 20.0, 6.0), SavingRecord("room", 30.0, 5.0), True),  # compared vs the controller
        (SavingRecord("room", 40.0, 4.0), SavingRecord("room", 30.0, 5.0), False),
        (SavingRecord("room", 20.0, 1.0, True), SavingRecord("room", 40.0), True),  # a champion without the figure
        (SavingRecord("seed", 80.0), SavingRecord("seed", 70.0), True),
        (SavingRecord("seed", 60.0), SavingRecord("seed", 70.0), False),
    ],
)
def test_champion_rule(candidate: SavingRecord, champion: SavingRecord | None, wins: bool) -> None:
    assert beats_champion(candidate, champion)[0] is wins
