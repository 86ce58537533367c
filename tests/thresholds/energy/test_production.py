"""The production judgement (thresholds/energy/production.py): limits, misses beyond the uncertainty, breaches
that must hold, cooldown and recovery, as pure functions over plain figures."""

from __future__ import annotations

import pytest

from thresholds.energy.production import (
    BREACH_EVENT,
    RECOVERED_EVENT,
    JudgeState,
    Production,
    WindowFigures,
    judge,
    limits_for,
)
from thresholds.errors import InputError

NEW = JudgeState()


def _window(j_per_1k: float, sem: float = 0.0, rows: int = 1000, **extra: float) -> WindowFigures:
    fields = {"latency_p95_ms": None, "quality": None, "labelled_rows": 0} | extra
    return WindowFigures(rows, j_per_1k, sem, **fields)  # type: ignore[arg-type]


def test_energy_is_judged_against_the_blocks_limit_only() -> None:
    # The loop's figure counts the model alone: no limit is derived from it.
    assert limits_for(Production(), "classification", 0.9).energy_j_per_1k is None
    fixed = limits_for(Production(max_energy_j_per_1k=3.0), "classification", None)
    assert (fixed.energy_j_per_1k, fixed.quality, fixed.latency_p95_ms) == (3.0, None, None)


def test_quality_defaults_to_the_scenarios_target_and_a_metric_the_task_lacks_is_refused() -> None:
    block = Production(judge=["quality"])
    assert limits_for(block, "classification", 0.9).quality == 0.9
    assert limits_for(Production(judge=["quality"], min_accuracy=0.8), "classification", 0.9).quality == 0.8
    with pytest.raises(InputError, match=r"production.min_accuracy = 0.8: expected a limit this regression model"):
        limits_for(Production(judge=["quality"], min_accuracy=0.8), "regression", None)


def test_a_breach_must_hold_for_the_windows_and_clear_the_uncertainty() -> None:
    block = Production(max_energy_j_per_1k=10.0, windows=2, sigmas=2.0, min_rows=100, cooldown_s=0)
    limits = limits_for(block, "classification", None)
    state = JudgeState()
    # 11 J/1k with a standard error of 1: within two standard errors of the limit, not a miss.
    state, verdict = judge(block, limits, _window(11.0, sem=1.0), state, 0.0)
    assert verdict is None and state.missing == 0
    # Too few rows to judge: the count of windows in a row is neither advanced nor reset.
    state, verdict = judge(block, limits, _window(50.0, rows=10), state, 1.0)
    assert verdict is None and state.missing == 0
    state, verdict = judge(block, limits, _window(15.0, sem=1.0), state, 2.0)
    assert verdict is None and state.missing == 1
    state, verdict = judge(block, limits, _window(15.0, sem=1.0), state, 3.0)
    assert verdict is not None and verdict.event == BREACH_EVENT and state.in_breach
    (miss,) = verdict.misses
    assert (miss.figure, miss.value, miss.limit, miss.uncertainty) == ("energy", 15.0, 10.0, 2.0)
    # Still missing: no second event while the breach holds.
    state, verdict = judge(block, limits, _window(15.0), state, 4.0)
    assert verdict is None
    state, verdict = judge(block, limits, _window(5.0), state, 5.0)
    assert verdict is None and state.in_breach
    state, verdict = judge(block, limits, _window(5.0), state, 6.0)
    assert verdict is not None and verdict.event == RECOVERED_EVENT and not state.in_breach


def test_no_second_breach_within_the_cooldown() -> None:
    block = Production(max_energy_j_per_1k=10.0, windows=1, min_rows=1, cooldown_s=60)
    limits = limits_for(block, "classification", None)
    state, first = judge(block, limits, _window(20.0), JudgeState(), 0.0)
    state, recovered = judge(block, limits, _window(1.0), state, 10.0)
    state, early = judge(block, limits, _window(20.0), state, 30.0)
    assert first is not None and recovered is not None and early is None
    state, late = judge(block, limits, _window(20.0), state, 61.0)
    assert late is not None and late.event == BREACH_EVENT


def test_latency_and_observed_accuracy_are_judged_with_their_own_limits() -> None:
    block = Production(judge=["latency", "quality"], max_latency_p95_ms=20.0, min_accuracy=0.9, windows=1, min_rows=50)
    limits = limits_for(block, "classification", None)
    _, verdict = judge(
        block, limits, _window(1.0, latency_p95_ms=25.0, quality=0.95, labelled_rows=400), JudgeState(), 0
    )
    assert verdict is not None and [m.figure for m in verdict.misses] == ["latency"]
    # 0.85 over 400 labelled rows: two binomial standard errors (0.036) do not reach 0.9.
    _, verdict = judge(
        block, limits, _window(1.0, latency_p95_ms=5.0, quality=0.85, labelled_rows=400), JudgeState(), 0
    )
    assert verdict is not None and [m.figure for m in verdict.misses] == ["quality"]
    # The same accuracy over 20 labelled rows is too few to judge quality.
    _, verdict = judge(block, limits, _window(1.0, latency_p95_ms=5.0, quality=0.85, labelled_rows=20), NEW, 0)
    assert verdict is None


def test_a_champion_is_re_scored_where_its_record_is_not_this_runs() -> None:
    from thresholds.energy.policy import Comparable, rescore_reason

    here = Comparable("digits-ab12", "16", "codecarbon")
    assert rescore_reason(Comparable("digits-ab12", "16", "codecarbon"), here) is None
    assert rescore_reason(Comparable("digits-ab12", "256", "codecarbon"), here) == (
        "it was measured at batch sizes 256, not 16"
    )
    reason = rescore_reason(Comparable(None, "16", "rapl"), here)
    assert reason == "its data unrecorded is not this run's digits-ab12; its energy is from rapl, not codecarbon"


def test_a_breach_retrains_on_the_versions_terms_its_feedback_or_a_stricter_scenario() -> None:
    from thresholds.energy.production import retrain_request

    version = {"scenario": "dev-cpu", "dataset": "digits", "target": None, "retrained_for": ""}
    plain = retrain_request(Production(stricter="strict"), version, ["energy"], "/srv/feedback")
    assert (plain.scenario, plain.dataset, plain.target, plain.production_breach) == (
        "dev-cpu",
        "digits",
        None,
        ["energy"],
    )
    # Quality missed and labelled rows kept: the data as it is now.
    drifted = retrain_request(Production(), version, ["quality", "energy"], "/srv/feedback")
    assert (drifted.dataset, drifted.target, drifted.production_breach) == (
        "/srv/feedback",
        "label",
        ["energy", "quality"],
    )
    assert retrain_request(Production(), version, ["quality"], None).dataset == "digits"  # no feedback yet
    # The same figure missed again by a production retrain's version: one step stricter, where the block names it.
    again = {**version, "retrained_for": "energy"}
    assert retrain_request(Production(stricter="strict"), again, ["energy"], None).scenario == "strict"
    assert retrain_request(Production(), again, ["energy"], None).scenario == "dev-cpu"
    assert retrain_request(Production(stricter="strict"), again, ["latency"], None).scenario == "dev-cpu"
