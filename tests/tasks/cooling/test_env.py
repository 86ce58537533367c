"""Both cooling environments against hand-computed steps: temperature update, energy, bounds, penalties."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.cooling import room, seed
from thresholds.cooling.env import MINUTES_PER_MONTH, RoomConfig, SeedConfig, WorkloadConfig
from thresholds.errors import InputError, validated


def seed_traj(
    intrinsic: list[float], users: list[float] | None = None, rate: list[float] | None = None
) -> seed.SeedTrajectory:
    n = len(intrinsic)
    return seed.SeedTrajectory(np.array(users or [20.0] * n), np.array(rate or [30.0] * n), np.array(intrinsic), 0)


def test_seed_agent_and_builtin_follow_the_intrinsic_change_plus_the_move() -> None:
    cfg = SeedConfig()
    env = seed.SeedEnv(cfg, seed_traj([63.5, 61.875, 61.0]))
    assert env.temperature_ai_c == 63.5 and env.temperature_builtin_c == 21.0
    _, reward, done = env.step(0)  # -3 C
    # built-in at 21 C is inside 18-24: no energy; agent pays |-3| = 3 units; reward 1e-3 * (0 - 3)
    assert reward == pytest.approx(-0.003)
    assert env.temperature_ai_c == pytest.approx(63.5 - 1.625 - 3)
    assert env.temperature_builtin_c == pytest.approx(21 - 1.625)
    assert not done
    _, reward, done = env.step(4)  # +3 C
    assert env.temperature_ai_c == pytest.approx(58.875 - 0.875 + 3)
    assert env.temperature_builtin_c == pytest.approx(18.5)
    assert env.totals.energy_ai_units == 6.0 and env.totals.energy_builtin_units == 0.0
    assert env.totals.minutes_outside_band_ai == 2 and env.totals.minutes_outside_band_builtin == 0
    assert done  # the trajectory ends


def test_seed_builtin_cooling_pays_the_distance_back_to_the_nearest_band_edge() -> None:
    env = seed.SeedEnv(SeedConfig(), seed_traj([40.0, 44.0, 36.0, 30.0]))
    env.step(2)  # built-in 21 -> 25: outside after the minute
    assert env.temperature_builtin_c == 25.0 and env.totals.minutes_outside_band_builtin == 1
    assert env.totals.degree_minutes_outside_band_builtin == pytest.approx(1.0)
    _, reward, _ = env.step(2)  # start of minute: 25 -> 24 costs 1 unit, then -8 C
    assert env.totals.energy_builtin_units == 1.0 and reward == pytest.approx(1e-3)
    assert env.temperature_builtin_c == 16.0
    env.step(1)  # 16 -> 18 costs 2 units; agent -1.5 costs 1.5
    assert env.totals.energy_builtin_units == 3.0 and env.totals.energy_ai_units == 1.5


def test_seed_leaving_the_safe_range_ends_training_and_is_charged_in_evaluation() -> None:
    traj = seed_traj([78.0, 83.0])
    train = seed.SeedEnv(SeedConfig(), traj, train=True)
    _, _, done = train.step(2)
    assert done and train.temperature_ai_c == 83.0 and train.totals.energy_ai_units == 0.0
    evaluation = seed.SeedEnv(SeedConfig(), traj, train=False)
    evaluation.step(3)  # +1.5: 78 + 5 + 1.5 = 84.5 > 80 -> reset to 24, charged 60.5 + the move's 1.5
    assert evaluation.temperature_ai_c == 24.0
    assert evaluation.totals.energy_ai_units == pytest.approx(60.5 + 1.5)
    assert evaluation.totals.safety_resets == 1
    cold = seed.SeedEnv(SeedConfig(), seed_traj([-18.0, -21.0]))
    cold.step(2)
    assert cold.temperature_ai_c == 18.0 and cold.totals.energy_ai_units == pytest.approx(39.0)


def test_seed_observation_is_scaled_to_unit_range() -> None:
    env = seed.SeedEnv(SeedConfig(), seed_traj([30.0, 30.0], users=[55.0, 55.0], rate=[160.0, 160.0]))
    assert env.observe() == pytest.approx([0.5, 0.5, 0.5])


def test_seed_trajectory_uses_the_month_of_each_minute_and_the_reference_walk_bounds() -> None:
    still = SeedConfig(workload=WorkloadConfig(users_step=0, data_rate_step_mbps=0))
    traj = seed.trajectory(still, MINUTES_PER_MONTH + 2, 0)
    base = 1.25 * 10 + 1.25 * 60
    assert traj.intrinsic_c[0] == pytest.approx(1.0 + base)
    assert traj.intrinsic_c[MINUTES_PER_MONTH] == pytest.approx(1.0 + base)  # set during minute 43,199 (January)
    assert traj.intrinsic_c[MINUTES_PER_MONTH + 1] == pytest.approx(5.0 + base)  # minute 43,200 is February
    walk = seed.trajectory(SeedConfig(), 200_000, 1)
    steps = np.diff(walk.users)[(walk.users[:-1] > 20) & (walk.users[:-1] < 90)]
    assert steps.min() == -5 and steps.max() == 4  # the reference's exclusive upper bound
    inclusive = SeedConfig(workload=WorkloadConfig(inclusive_upper_step=True))
    walk = seed.trajectory(inclusive, 200_000, 1)
    steps = np.diff(walk.users)[(walk.users[:-1] > 20) & (walk.users[:-1] < 90)]
    assert steps.min() == -5 and steps.max() == 5
    assert (
        walk.users.min() >= 10
        and walk.users.max() <= 100
        and walk.data_rate_mbps.min() >= 20
        and walk.data_rate_mbps.max() <= 300
    )


def room_traj(outside: list[float], load: list[float]) -> room.RoomTrajectory:
    n = len(outside)
    return room.RoomTrajectory(np.array(outside), np.array(load), np.zeros(n), np.ones(n), 0, np.zeros(n), np.ones(n))


def test_room_free_cooling_step_by_hand() -> None:
    cfg = RoomConfig()
    env = room.RoomEnv(cfg, room_traj([10.0, 10.0], [10.0, 10.0]))
    _, reward, _ = env.step(2)  # 10 kW removed; economiser capacity 1.5 * (21 - 10 - 3) = 12 kW covers it
    energy_kwh = (10 / 15) / 60
    assert env.totals.cooling_energy_kwh == pytest.approx(energy_kwh)
    assert env.totals.free_cooling_energy_kwh == pytest.approx(energy_kwh)
    assert env.temperature_c == pytest.approx(21 + (10 + 0.25 * (10 - 21) - 10) * 60 / 3000)
    assert reward == pytest.approx(-10 * energy_kwh)


def test_room_chiller_cop_depends_on_outside_and_room_temperature() -> None:
    cfg = RoomConfig()
    hot = 0.45 * (21 - 12 + 273.15) / (30 + 10 - (21 - 12))
    assert room.chiller_cop(cfg, 21, 30) == pytest.approx(hot)
    assert room.chiller_cop(cfg, 26, 30) > room.chiller_cop(
        cfg, 21, 30
    )  # a warmer room: a higher evaporating temperature
    assert room.chiller_cop(cfg, 21, 0) == pytest.approx(
        0.45 * (21 - 12 + 273.15) / (25 - (21 - 12))
    )  # head-pressure floor at 25 C
    assert room.chiller_cop(cfg, 27, 0) == 8.0  # the cap
    assert room.free_cooling_kw(cfg, 21, 20) == 0.0  # above the economiser's lockout
    env = room.RoomEnv(cfg, room_traj([30.0, 30.0], [10.0, 10.0]))
    env.step(2)
    assert env.totals.cooling_energy_kwh == pytest.approx(10 / hot / 60)
    assert env.totals.free_cooling_energy_kwh == 0.0


def test_room_penalises_degree_minutes_beyond_the_margin_and_counts_the_envelope() -> None:
    cfg = RoomConfig(initial_temperature_c=27.0, envelope_ua_kw_per_k=0.0)
    env = room.RoomEnv(cfg, room_traj([30.0, 30.0], [5.0, 5.0]))
    _, reward, _ = env.step(0)  # no cooling: +5 kW * 60 s / 3000 kJ/K = +0.1 K
    assert env.temperature_c == pytest.approx(27.1)
    assert reward == pytest.approx(-10.0 * (27.1 - 26.5))
    assert env.totals.minutes_outside == 1 and env.totals.degree_minutes_outside == pytest.approx(0.1)


def test_room_failure_ends_training_and_is_counted_in_evaluation() -> None:
    cfg = RoomConfig(initial_temperature_c=27.0, envelope_ua_kw_per_k=0.0)
    traj = room_traj([30.0, 30.0, 30.0], [300.0, 300.0, 300.0])  # +6 K per minute
    train = room.RoomEnv(cfg, traj, train=True)
    _, reward, done = train.step(0)
    assert done and train.totals.failed_minutes == 1
    assert reward == pytest.approx(-10.0 * (33.0 - 26.5) - 20.0)
    evaluation = room.RoomEnv(cfg, traj, train=False)
    evaluation.step(0)
    _, _, done = evaluation.step(0)
    assert evaluation.totals.failed_minutes == 2 and done  # counted, not stopped early; done at the end


def test_room_thermostat_is_staged_with_a_dead_band() -> None:
    cfg = RoomConfig()
    assert room.thermostat_action(cfg, 2, 21.6, 21.0, 1.0) == 3
    assert room.thermostat_action(cfg, 2, 20.4, 21.0, 1.0) == 1
    assert room.thermostat_action(cfg, 2, 21.4, 21.0, 1.0) == 2
    assert room.thermostat_action(cfg, 6, 30.0, 21.0, 1.0) == 6 and room.thermostat_action(cfg, 0, 10.0, 21.0, 1.0) == 0


def test_room_trajectory_has_a_daily_cycle_and_the_monthly_means() -> None:
    cfg = RoomConfig(weather_day_noise_c=0.0, workload=WorkloadConfig(users_step=0, data_rate_step_mbps=0))
    traj = room.trajectory(cfg, 2 * 1440, 0, start_month=6)
    assert traj.outside_c[15 * 60] == pytest.approx(23.0 + 5.0)  # July mean + amplitude at 15:00
    assert traj.outside_c[3 * 60] == pytest.approx(23.0 - 5.0)
    assert traj.it_load_kw[14 * 60] == pytest.approx(6.0 + (0.08 * 10 + 0.02 * 60) * 1.3)


BAD = [
    (SeedConfig, {"optimal_min_temperature_c": 25.0}, "optimal_min_temperature_c"),
    (SeedConfig, {"workload": {"min_users": -1}}, "workload.min_users"),
    (SeedConfig, {"monthly_atmospheric_temperature_c": []}, "12 monthly values"),
    (SeedConfig, {"optimal_max_temperature_c": 90.0}, "inside the safe range"),
    (SeedConfig, {"workload": {"min_data_rate_mbps": 300}}, "min_data_rate_mbps"),
    (RoomConfig, {"recommended_min_temperature_c": 14.0}, "inside the allowable range"),
    (RoomConfig, {"cooling_levels_kw": [5.0, 0.0]}, "increasing"),
    (RoomConfig, {"heat_capacity_kj_per_k": 0}, "heat_capacity_kj_per_k"),
    (RoomConfig, {"builtin_setpoint_c": 30.0}, "builtin_setpoint_c"),
    (RoomConfig, {"cooling_power": 3}, "no such key"),
]


@pytest.mark.parametrize(("model", "raw", "needle"), BAD)
def test_bad_configs_are_rejected_with_one_line(model: type, raw: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError) as err:
        validated(model, raw, "test")
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_room_observation_holds_the_forecast_the_load_trend_and_the_time_of_week() -> None:
    cfg = RoomConfig(initial_temperature_c=25.0)
    traj = room.trajectory(cfg, 400, 3, start_month=5)
    env = room.RoomEnv(cfg, traj)
    for _ in range(200):
        env.step(2)
    obs, t, scale = env.observe(), env.t, room.max_it_load_kw(cfg)
    assert len(obs) == 11
    assert obs[0] == pytest.approx((2 * env.temperature_c - 45.0) / 9.0)  # -1 at 18 C, +1 at 27 C
    assert obs[6] == pytest.approx((traj.outside_c[t + 60] - traj.outside_c[t]) / room.OBS_CHANGE_SCALE_K)
    assert obs[7] == pytest.approx((traj.outside_c[t + 180] - traj.outside_c[t]) / room.OBS_CHANGE_SCALE_K)
    assert obs[8] == pytest.approx((traj.it_load_kw[t] - traj.it_load_kw[t - 30]) / scale)
    angle = 2 * np.pi * t / room.MINUTES_PER_WEEK
    assert obs[9:] == pytest.approx([0.5 + 0.5 * np.sin(angle), 0.5 + 0.5 * np.cos(angle)])
    for _ in range(199):  # past the end, the forecast reads the last minute
        env.step(2)
    last = env.observe()
    assert last[7] == pytest.approx((traj.outside_c[-1] - traj.outside_c[env.t]) / room.OBS_CHANGE_SCALE_K)
