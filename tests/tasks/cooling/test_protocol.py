"""The honest protocol: controllers tuned on training years only, the perfect-forecast MPC as the upper bound."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.cooling import mpc, protocol, room
from tasks.cooling.baselines import compare
from tasks.cooling.fast_eval import ROOM_OBS, Controller, Weights, run
from thresholds.cooling.env import MINUTES_PER_DAY, RoomConfig

CFG = RoomConfig(start_month=4)  # May: the outside temperature crosses the economiser's limit every day
DAYS = 4 * MINUTES_PER_DAY
YEARS = (100, 101)


def weights(seed_value: int) -> Weights:
    rng = np.random.default_rng(seed_value)
    return Weights.from_linear(
        [
            (rng.normal(size=(8, ROOM_OBS)), rng.normal(size=8)),
            (rng.normal(size=(8, 8)), rng.normal(size=8)),
            (rng.normal(size=(7, 8)), rng.normal(size=7)),
        ]
    )


@pytest.fixture(scope="module")
def tuned() -> protocol.Tuned:
    return protocol.tune(CFG, YEARS, DAYS)


def _on_training_years(controller: Controller) -> tuple[float, float]:
    totals = [run(CFG, room.trajectory(CFG, DAYS, y), controller).totals for y in YEARS]
    return float(np.mean([t["energy_kwh"] for t in totals])), sum(t["minutes_outside_band"] for t in totals)


def test_the_fixed_setpoint_is_the_cheapest_one_no_less_safe_than_the_builtin_on_the_training_years(
    tuned: protocol.Tuned,
) -> None:
    _, builtin_minutes = _on_training_years(Controller.rule(CFG.builtin_setpoint_c, CFG.builtin_dead_band_k))
    sweep = {
        sp: _on_training_years(Controller.rule(sp, CFG.builtin_dead_band_k))
        for sp in np.round(np.arange(18.5, 26.5 + 1e-9, 0.25), 4)
    }
    safe = {sp: kwh for sp, (kwh, minutes) in sweep.items() if minutes <= builtin_minutes}
    assert tuned.setpoint_c == min(safe, key=lambda sp: safe[sp])
    assert tuned.training_kwh[protocol.FIXED] == pytest.approx(safe[tuned.setpoint_c])


def test_the_outdoor_reset_never_does_worse_than_the_fixed_setpoint_on_the_training_years(
    tuned: protocol.Tuned,
) -> None:
    assert tuned.training_kwh[protocol.RESET] <= tuned.training_kwh[protocol.FIXED]
    assert tuned.training_minutes_outside[protocol.RESET] <= tuned.training_minutes_outside["built-in"]
    kwh, _ = _on_training_years(tuned.controller(protocol.RESET))
    assert kwh == pytest.approx(tuned.training_kwh[protocol.RESET])
    cheaper = min((protocol.FIXED, protocol.RESET), key=lambda n: tuned.training_kwh[n])
    assert tuned.best == cheaper


def test_the_tuning_reads_only_the_training_years() -> None:
    other = protocol.tune(CFG, (102, 103), DAYS)
    again = protocol.tune(CFG, YEARS, DAYS)
    assert again.training_kwh != other.training_kwh  # the years it is given decide it ...
    assert again == protocol.tune(CFG, YEARS, DAYS)  # ... and nothing else does


def test_the_perfect_forecast_mpc_is_a_lower_bound_within_the_band(tuned: protocol.Tuned) -> None:
    traj = room.trajectory(CFG, DAYS, 2024)
    best = mpc.run_mpc(CFG, traj).totals
    assert best["minutes_outside_band"] == 0 and best["failed_minutes"] == 0
    for controller in (tuned.controller(protocol.FIXED), tuned.controller(protocol.RESET), Controller.rule()):
        assert best["energy_kwh"] < run(CFG, traj, controller).totals["energy_kwh"]
    assert protocol.mpc_totals(CFG, traj) == best  # cached by the trajectory's data


def test_a_room_comparison_judges_the_agent_against_the_best_tuned_controller(tuned: protocol.Tuned) -> None:
    traj = room.trajectory(CFG, DAYS, 2024)
    with pytest.raises(ValueError, match="tuned on the training years"):
        compare(CFG, traj, weights(1))
    comparison, runs = compare(CFG, traj, weights(1), tuned=tuned, with_mpc=True)
    agent, best, best_mpc = comparison.rows[0], comparison.best_row(), comparison.rows[-1]
    assert best.controller == tuned.describe(tuned.best)
    assert comparison.vs_best_controller_pct == pytest.approx(100 * (1 - agent.energy / best.energy))
    assert comparison.vs_mpc_pct == pytest.approx(100 * (agent.energy / best_mpc.energy - 1))
    assert runs[tuned.best].totals["energy_kwh"] == best.energy
