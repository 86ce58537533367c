"""A physically grounded server room (the plain-Python reference; `fast_eval` compiles it).

One lumped thermal node (room air + IT equipment, heat capacity C in kJ/K), stepped once per
minute (dt = 60 s, explicit Euler; stable since C / UA is hours, not minutes):

    T_out[t]  = monthly_mean[m(t)] + A_day * cos(2 pi (hour - warmest_hour) / 24) + weather[t]
                (weather: a N(0, sigma) offset per day, linearly interpolated across the day)
    P_it[t]   = P_idle + (k_user * users[t] + k_rate * rate[t])
                * (1 + a_load * cos(2 pi (hour - busiest_hour) / 24))                                  [kW]
    Q         = cooling_levels_kw[action]                                                 heat removed [kW]
    Q_free    = min(Q, UA_econ * max(0, T - T_out - approach_econ))  if T_out <= T_econ_max, else 0
    Q_mech    = Q - Q_free
    T_evap    = T - approach_evap ;  T_cond = max(T_out + approach_cond, T_cond_min)
    COP_mech  = min(COP_max, eta_carnot * (T_evap + 273.15) / max(T_cond - T_evap, 1))
    P_el      = Q_free / COP_econ + Q_mech / COP_mech                                     electrical [kW]
    T[t+1]    = T[t] + (P_it[t] + UA * (T_out[t] - T[t]) - Q) * dt / C

The cooling electricity is where savings are physical: the economiser is nearly free when it is
cold and its capacity grows with (T - T_out); the chiller's COP rises when it is cold outside
(lower condensing temperature) and when the room is warmer (higher evaporating temperature);
a warmer room gains less heat through the envelope. Pre-cooling at night shifts work to hours
with a better COP.

Safety (ASHRAE inlet envelope): minutes and degree-minutes of T outside the recommended
[18, 27] degrees C are counted; outside the allowable [15, 32] degrees C the room has failed (a
training episode ends; an evaluation counts failed minutes and goes on).

Reward per minute = -reward_per_kwh * E_el - penalty_per_degree_minute * (degrees beyond the
recommended band shrunk by reward_margin_k) - failure_penalty on failure. The margin makes the agent
keep a little distance from the edges it is judged on.

Built-in cooling: a staged thermostat with a 21 degrees C setpoint and a 1 K dead band: one
cooling level up when T > setpoint + band/2, one down when T < setpoint - band/2, else hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.cooling.seed import workload_walks
from thresholds.cooling.env import MINUTES_PER_DAY, MINUTES_PER_MONTH, RoomConfig

KELVIN = 273.15
DT_S = 60.0
OBS_OUTSIDE_RANGE_C = (-20.0, 40.0)  # scaling of the outside temperature for the agent
# What the agent sees beyond the present (a weather service's forecast and the load's recent change): the outside
# temperature 1 h and 3 h ahead (its change from now, scaled by OBS_CHANGE_SCALE_K), and the IT load's change over
# the last 30 minutes (scaled as the load). Forecasts past the trajectory's end read its last minute.
OBS_FORECAST_MINUTES = (60, 180)
OBS_CHANGE_SCALE_K = 10.0
OBS_LOAD_TREND_MINUTES = 30
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


@dataclass(frozen=True)
class RoomTrajectory:
    """Exogenous inputs of one run, minutes 0..n: identical for every controller evaluated on it."""

    outside_c: np.ndarray
    it_load_kw: np.ndarray
    hour_sin: np.ndarray
    hour_cos: np.ndarray
    start_month: int
    week_sin: np.ndarray
    week_cos: np.ndarray

    @property
    def minutes(self) -> int:
        return len(self.outside_c) - 1

    def as_array(self) -> np.ndarray:
        rows = [self.outside_c, self.it_load_kw, self.hour_sin, self.hour_cos, self.week_sin, self.week_cos]
        return np.ascontiguousarray(np.stack(rows))


def trajectory(
    cfg: RoomConfig, minutes: int, seed: int | np.random.Generator, start_month: int | None = None
) -> RoomTrajectory:
    """Weather, IT load and time of day for minutes 0..minutes, from one seeded generator."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    month0 = cfg.start_month if start_month is None else start_month
    users, rate = workload_walks(cfg.workload, minutes, rng)
    t = np.arange(minutes + 1)
    hour = (t % MINUTES_PER_DAY) / 60.0
    months = (month0 + t // MINUTES_PER_MONTH) % 12
    days = t // MINUTES_PER_DAY
    daily = (
        rng.normal(0.0, cfg.weather_day_noise_c, size=int(days[-1]) + 2)
        if cfg.weather_day_noise_c > 0
        else np.zeros(int(days[-1]) + 2)
    )
    frac = (t % MINUTES_PER_DAY) / MINUTES_PER_DAY
    weather = daily[days] + (daily[days + 1] - daily[days]) * frac
    outside = np.asarray(cfg.monthly_mean_outside_temperature_c)[months] + cfg.daily_outside_amplitude_c * np.cos(
        2 * np.pi * (hour - cfg.warmest_hour) / 24
    )
    outside = outside + weather
    profile = 1 + cfg.daily_load_amplitude_fraction * np.cos(2 * np.pi * (hour - cfg.busiest_hour) / 24)
    load = cfg.it_idle_power_kw + (cfg.it_power_kw_per_user * users + cfg.it_power_kw_per_mbps * rate) * profile
    angle = 2 * np.pi * hour / 24
    week = 2 * np.pi * (t % MINUTES_PER_WEEK) / MINUTES_PER_WEEK
    return RoomTrajectory(outside, load, np.sin(angle), np.cos(angle), month0, np.sin(week), np.cos(week))


def max_it_load_kw(cfg: RoomConfig) -> float:
    """The largest IT load the walks allow, for scaling the observation."""
    w = cfg.workload
    return cfg.it_idle_power_kw + (
        cfg.it_power_kw_per_user * w.max_users + cfg.it_power_kw_per_mbps * w.max_data_rate_mbps
    ) * (1 + cfg.daily_load_amplitude_fraction)


def free_cooling_kw(cfg: RoomConfig, room_c: float, outside_c: float) -> float:
    """Economiser capacity at these temperatures, kW."""
    if outside_c > cfg.economiser_max_outside_temperature_c:
        return 0.0
    return cfg.economiser_ua_kw_per_k * max(0.0, room_c - outside_c - cfg.economiser_approach_k)


def chiller_cop(cfg: RoomConfig, room_c: float, outside_c: float) -> float:
    evap = room_c - cfg.evaporator_approach_k
    cond = max(outside_c + cfg.condenser_approach_k, cfg.min_condensing_temperature_c)
    return min(cfg.max_cop, cfg.carnot_efficiency_fraction * (evap + KELVIN) / max(cond - evap, 1.0))


@dataclass
class RoomTotals:
    cooling_energy_kwh: float = 0.0
    free_cooling_energy_kwh: float = 0.0
    heat_removed_kwh: float = 0.0
    minutes_outside: int = 0  # outside the recommended envelope
    degree_minutes_outside: float = 0.0
    failed_minutes: int = 0  # outside the allowable range
    reward: float = 0.0


class RoomEnv:
    """One run over a trajectory. `step(action)` -> (observation, reward, done)."""

    def __init__(self, cfg: RoomConfig, traj: RoomTrajectory, train: bool = False) -> None:
        self.cfg = cfg
        self.traj = traj
        self.train = train
        self.t = 0
        self.temperature_c = cfg.initial_temperature_c
        self.totals = RoomTotals()
        self.done = False
        self.load_scale_kw = max_it_load_kw(cfg)

    @property
    def n_actions(self) -> int:
        return len(self.cfg.cooling_levels_kw)

    def observe(self) -> np.ndarray:
        c, t, tr = self.cfg, self.t, self.traj
        out = float(tr.outside_c[t])
        lo, hi = OBS_OUTSIDE_RANGE_C
        last = len(tr.outside_c) - 1
        ahead = [(float(tr.outside_c[min(t + m, last)]) - out) / OBS_CHANGE_SCALE_K for m in OBS_FORECAST_MINUTES]
        load_before = float(tr.it_load_kw[max(t - OBS_LOAD_TREND_MINUTES, 0)])
        return np.array(
            [
                (2.0 * self.temperature_c - c.recommended_min_temperature_c - c.recommended_max_temperature_c)
                / (c.recommended_max_temperature_c - c.recommended_min_temperature_c),
                (out - lo) / (hi - lo),
                float(tr.it_load_kw[t]) / self.load_scale_kw,
                free_cooling_kw(c, self.temperature_c, out) / self.load_scale_kw,
                0.5 + 0.5 * float(tr.hour_sin[t]),
                0.5 + 0.5 * float(tr.hour_cos[t]),
                *ahead,
                (float(tr.it_load_kw[t]) - load_before) / self.load_scale_kw,
                0.5 + 0.5 * float(tr.week_sin[t]),
                0.5 + 0.5 * float(tr.week_cos[t]),
            ]
        )

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        c, tot, t = self.cfg, self.totals, self.t
        room, out, load = self.temperature_c, float(self.traj.outside_c[t]), float(self.traj.it_load_kw[t])
        heat = c.cooling_levels_kw[action]
        free = min(heat, free_cooling_kw(c, room, out))
        power_kw = free / c.economiser_cop + (heat - free) / chiller_cop(c, room, out)
        energy_kwh = power_kw * DT_S / 3600.0
        room = room + (load + c.envelope_ua_kw_per_k * (out - room) - heat) * DT_S / c.heat_capacity_kj_per_k
        self.temperature_c = room
        beyond = max(
            0.0,
            (c.recommended_min_temperature_c + c.reward_margin_k) - room,
            room - (c.recommended_max_temperature_c - c.reward_margin_k),
        )
        reward = -c.reward_per_kwh * energy_kwh - c.penalty_per_degree_minute * beyond
        outside = max(0.0, c.recommended_min_temperature_c - room, room - c.recommended_max_temperature_c)
        failed = room < c.allowable_min_temperature_c or room > c.allowable_max_temperature_c
        if failed:
            reward -= c.failure_penalty
            tot.failed_minutes += 1
            if self.train:
                self.done = True
        tot.cooling_energy_kwh += energy_kwh
        tot.free_cooling_energy_kwh += free / c.economiser_cop * DT_S / 3600.0
        tot.heat_removed_kwh += heat * DT_S / 3600.0
        tot.minutes_outside += outside > 0
        tot.degree_minutes_outside += outside
        tot.reward += reward
        self.t += 1
        if self.t >= self.traj.minutes:
            self.done = True
        return self.observe(), reward, self.done


def thermostat_action(cfg: RoomConfig, level: int, room_c: float, setpoint_c: float, dead_band_k: float) -> int:
    """The staged thermostat: one level up above the band, one down below it, else hold."""
    if room_c > setpoint_c + dead_band_k / 2:
        return min(level + 1, len(cfg.cooling_levels_kw) - 1)
    if room_c < setpoint_c - dead_band_k / 2:
        return max(level - 1, 0)
    return level


def reset_setpoint_c(
    cfg: RoomConfig, outside_c: float, econ_setpoint_c: float, setpoint_c: float, reset_slope: float, dead_band_k: float
) -> float:
    """The outdoor-reset rule's setpoint: `econ_setpoint_c` while the economiser can run, else `setpoint_c` moved by
    `reset_slope` K per K of outside temperature above the economiser's limit, kept where the dead band fits the
    recommended band."""
    if outside_c <= cfg.economiser_max_outside_temperature_c:
        return econ_setpoint_c
    sp = setpoint_c + reset_slope * (outside_c - cfg.economiser_max_outside_temperature_c)
    low = cfg.recommended_min_temperature_c + dead_band_k / 2
    return min(max(sp, low), cfg.recommended_max_temperature_c - dead_band_k / 2)


def cop_table(cfg: RoomConfig) -> str:
    """Chiller COP at a few temperatures, for the docs and a sanity check."""
    rows = [f"{'outside C':>10} " + " ".join(f"room {r:>4.0f}" for r in (21, 24, 27))]
    for out in (0, 10, 20, 30):
        rows.append(f"{out:>10} " + " ".join(f"{chiller_cop(cfg, r, out):9.2f}" for r in (21, 24, 27)))
    return "\n".join(rows) + (
        f"\nfree cooling at 10 C outside: {free_cooling_kw(cfg, 21, 10):.1f} kW (room 21), "
        f"{free_cooling_kw(cfg, 27, 10):.1f} kW (room 27)"
    )
