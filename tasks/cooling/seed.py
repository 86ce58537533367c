"""The paper's server environment, ported faithfully (the plain-Python reference; `fast_eval` compiles it).

Per minute t (month m(t) = (start_month + t // 43,200) mod 12; 43,200 = 30 x 24 x 60):

    users[t+1] = clip(users[t] + U{-5..4}, 10, 100)          (exclusive upper bound, as the reference's randint)
    rate[t+1]  = clip(rate[t]  + U{-10..9}, 20, 300)
    intrinsic[t] = atmospheric_c[m] + 1.25 * users[t] + 1.25 * rate[t]         (intrinsic[t+1] uses m(t))

    built-in (start of minute):  if T_b outside [18, 24]: E_b = distance to the nearest edge, T_b := that edge
    agent action a in {-3, -1.5, 0, +1.5, +3} degrees C:   E_a = |a| energy units
    reward = 1e-3 * (E_b - E_a)
    T_a[t+1] = T_a[t] + (intrinsic[t+1] - intrinsic[t]) + a
    T_b[t+1] = T_b[t] + (intrinsic[t+1] - intrinsic[t])
    if T_a[t+1] outside [-20, 80]:  training: the episode ends;
                                    evaluation: T_a := nearest band edge (18 or 24), charged |T_a - edge| to the agent

T_b starts at 21 degrees C (mid-band); T_a starts at the intrinsic temperature. The agent observes
(T_a, users, rate), each scaled to [0, 1] over its range ([-20, 80], [10, 100], [20, 300]).

The agent is never charged for leaving the optimal band, only for leaving [-20, 80]: a do-nothing
controller "saves" more than the paper's agent. Every evaluation therefore reports minutes outside
the band beside the energy (counted at the end of each minute, after that minute's control and heat).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from thresholds.cooling.env import MINUTES_PER_MONTH, SeedConfig, WorkloadConfig


def workload_walks(cfg: WorkloadConfig, minutes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Users and data rate for minutes 0..minutes (inclusive): the reference's clipped random walks."""
    extra = 1 if cfg.inclusive_upper_step else 0

    def steps(size: int) -> np.ndarray:
        high = size + extra
        return rng.integers(-size, high, size=minutes) if high > -size else np.zeros(minutes, dtype=np.int64)

    du, dr = steps(cfg.users_step), steps(cfg.data_rate_step_mbps)
    users = _clipped_walk(float(cfg.initial_users), du.astype(np.float64), float(cfg.min_users), float(cfg.max_users))
    rate = _clipped_walk(
        float(cfg.initial_data_rate_mbps),
        dr.astype(np.float64),
        float(cfg.min_data_rate_mbps),
        float(cfg.max_data_rate_mbps),
    )
    return users, rate


@njit(cache=os.access(Path(__file__).parent, os.W_OK))
def _clipped_walk(start, steps, low, high):
    """Clipping makes the walk path-dependent (a cumulative sum cannot express it): one compiled pass."""
    out = np.empty(steps.shape[0] + 1)
    out[0] = start
    v = start
    for t in range(steps.shape[0]):
        v = min(max(v + steps[t], low), high)
        out[t + 1] = v
    return out


@dataclass(frozen=True)
class SeedTrajectory:
    """Exogenous inputs of one run, minutes 0..n: identical for every controller evaluated on it."""

    users: np.ndarray
    data_rate_mbps: np.ndarray
    intrinsic_c: np.ndarray
    start_month: int

    @property
    def minutes(self) -> int:
        return len(self.intrinsic_c) - 1

    def as_array(self) -> np.ndarray:
        return np.ascontiguousarray(np.stack([self.users, self.data_rate_mbps, self.intrinsic_c]))


def trajectory(
    cfg: SeedConfig, minutes: int, seed: int | np.random.Generator, start_month: int | None = None
) -> SeedTrajectory:
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    month0 = cfg.start_month if start_month is None else start_month
    users, rate = workload_walks(cfg.workload, minutes, rng)
    months = (month0 + np.arange(minutes) // MINUTES_PER_MONTH) % 12
    atmospheric = np.asarray(cfg.monthly_atmospheric_temperature_c)
    atm = np.empty(minutes + 1)
    atm[0] = atmospheric[month0]
    atm[1:] = atmospheric[months]  # the reference sets the month's temperature during minute t's update
    intrinsic = atm + cfg.temperature_c_per_user * users + cfg.temperature_c_per_mbps * rate
    return SeedTrajectory(users, rate, intrinsic, month0)


@dataclass
class SeedTotals:
    energy_ai_units: float = 0.0
    energy_builtin_units: float = 0.0
    minutes_outside_band_ai: int = 0
    minutes_outside_band_builtin: int = 0
    degree_minutes_outside_band_ai: float = 0.0
    degree_minutes_outside_band_builtin: float = 0.0
    safety_resets: int = 0


def _outside(value: float, low: float, high: float) -> float:
    return low - value if value < low else (value - high if value > high else 0.0)


class SeedEnv:
    """One run over a trajectory. `step(action)` -> (observation, reward, done)."""

    def __init__(self, cfg: SeedConfig, traj: SeedTrajectory, train: bool = False) -> None:
        self.cfg = cfg
        self.traj = traj
        self.train = train
        self.t = 0
        self.temperature_ai_c = float(traj.intrinsic_c[0])
        self.temperature_builtin_c = cfg.builtin_start_c
        self.totals = SeedTotals()
        self.done = False

    @property
    def n_actions(self) -> int:
        return len(self.cfg.action_moves_c)

    def observe(self) -> np.ndarray:
        c, w = self.cfg, self.cfg.workload
        return np.array(
            [
                (self.temperature_ai_c - c.safe_min_temperature_c)
                / (c.safe_max_temperature_c - c.safe_min_temperature_c),
                (self.traj.users[self.t] - w.min_users) / (w.max_users - w.min_users),
                (self.traj.data_rate_mbps[self.t] - w.min_data_rate_mbps)
                / (w.max_data_rate_mbps - w.min_data_rate_mbps),
            ]
        )

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        c, tot = self.cfg, self.totals
        low, high = c.optimal_min_temperature_c, c.optimal_max_temperature_c
        energy_builtin = 0.0
        if self.temperature_builtin_c < low:
            energy_builtin = (low - self.temperature_builtin_c) * c.energy_units_per_c
            self.temperature_builtin_c = low
        elif self.temperature_builtin_c > high:
            energy_builtin = (self.temperature_builtin_c - high) * c.energy_units_per_c
            self.temperature_builtin_c = high
        move = c.action_moves_c[action]
        energy_ai = abs(move) * c.energy_units_per_c
        reward = c.reward_per_energy_unit * (energy_builtin - energy_ai)
        delta = float(self.traj.intrinsic_c[self.t + 1] - self.traj.intrinsic_c[self.t])
        self.temperature_ai_c = self.temperature_ai_c + delta + move
        self.temperature_builtin_c = self.temperature_builtin_c + delta
        if self.temperature_ai_c < c.safe_min_temperature_c or self.temperature_ai_c > c.safe_max_temperature_c:
            if self.train:
                self.done = True
            else:
                edge = low if self.temperature_ai_c < c.safe_min_temperature_c else high
                tot.energy_ai_units += abs(self.temperature_ai_c - edge) * c.energy_units_per_c
                self.temperature_ai_c = edge
                tot.safety_resets += 1
        tot.energy_ai_units += energy_ai
        tot.energy_builtin_units += energy_builtin
        out_ai = _outside(self.temperature_ai_c, low, high)
        out_b = _outside(self.temperature_builtin_c, low, high)
        tot.minutes_outside_band_ai += out_ai > 0
        tot.minutes_outside_band_builtin += out_b > 0
        tot.degree_minutes_outside_band_ai += out_ai
        tot.degree_minutes_outside_band_builtin += out_b
        self.t += 1
        if self.t >= self.traj.minutes:
            self.done = True
        return self.observe(), reward, self.done
