"""Compiled one-year evaluation (numba) and the plain-Python reference loop it must equal.

The state depends on the previous action, so time cannot be vectorised: the whole minute loop
(environment step, observation, the greedy network's forward pass) is one `@njit` function over
precomputed trajectories (weather, users, data rate from a seeded generator), with the trained
weights passed as float64 arrays. The forward pass keeps weights transposed (inputs x outputs),
so every layer is a sequence of axpy's over the output axis: SIMD without reassociating any sum
(no fastmath), hence the same arithmetic as the reference up to the BLAS summation order.

The same kernels run the training actor (epsilon-greedy with pre-drawn random numbers, writing
transitions to buffers) and the rule baselines (constant action, band rule, staged thermostat).
Compilation (seconds, once per process unless the on-disk cache holds it) is excluded from any
steps/s figure: `warm_up()` runs every kernel on a few minutes first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from tasks.cooling.room import (
    OBS_CHANGE_SCALE_K,
    OBS_FORECAST_MINUTES,
    OBS_LOAD_TREND_MINUTES,
    OBS_OUTSIDE_RANGE_C,
    RoomEnv,
    RoomTrajectory,
    max_it_load_kw,
    reset_setpoint_c,
    thermostat_action,
)
from tasks.cooling.seed import SeedEnv, SeedTrajectory
from thresholds.cooling.env import RoomConfig, SeedConfig


def _cache_writable() -> bool:
    """numba writes its cache beside this file (or NUMBA_CACHE_DIR); compile in memory when neither is writable."""
    target = os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).parent / "__pycache__")
    probe = Path(target)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


_CACHE = _cache_writable()

# RESET (the room's outdoor-reset rule) and SCHEDULE (an action per minute given in advance: the perfect-forecast
# controller's plan) exist for the room only.
NETWORK, CONSTANT, RULE, RESET, SCHEDULE = 0, 1, 2, 3, 4
SEED_OBS, ROOM_OBS = 3, 11
EMPTY2 = np.zeros((0, 0))
EMPTY1 = np.zeros(0)
EMPTY_I = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Weights:
    """A two-hidden-layer ReLU MLP as float64 arrays; `w*` are transposed (inputs x outputs)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray

    @classmethod
    def from_linear(cls, layers: list[tuple[np.ndarray, np.ndarray]]) -> Weights:
        """From torch-style (out x in) weight matrices and biases."""
        (a, b), (c, d), (e, f) = layers
        as64 = lambda x: np.ascontiguousarray(np.asarray(x, dtype=np.float64))  # noqa: E731
        return cls(as64(a.T), as64(b), as64(c.T), as64(d), as64(e.T), as64(f))

    @classmethod
    def empty(cls) -> Weights:
        z = np.zeros((1, 1))
        o = np.zeros(1)
        return cls(z, o, z, o, z, o)

    def greedy(self, obs: np.ndarray) -> int:
        """numpy forward pass (the reference)."""
        h1 = np.maximum(obs @ self.w1 + self.b1, 0.0)
        h2 = np.maximum(h1 @ self.w2 + self.b2, 0.0)
        return int(np.argmax(h2 @ self.w3 + self.b3))

    @property
    def hidden_units(self) -> tuple[int, int]:
        return int(self.w1.shape[1]), int(self.w2.shape[1])


@njit(cache=_CACHE)
def _greedy(obs, w1, b1, w2, b2, w3, b3, h1, h2, q):
    n1, n2, n3 = w1.shape[1], w2.shape[1], w3.shape[1]
    for i in range(n1):
        h1[i] = 0.0
    for j in range(w1.shape[0]):
        x = obs[j]
        for i in range(n1):
            h1[i] += x * w1[j, i]
    for i in range(n1):
        v = h1[i] + b1[i]
        h1[i] = v if v > 0.0 else 0.0
    for i in range(n2):
        h2[i] = 0.0
    for j in range(n1):
        x = h1[j]
        if x != 0.0:  # ReLU zeros contribute nothing; skipping them changes no sum
            for i in range(n2):
                h2[i] += x * w2[j, i]
    for i in range(n2):
        v = h2[i] + b2[i]
        h2[i] = v if v > 0.0 else 0.0
    for i in range(n3):
        q[i] = 0.0
    for j in range(n2):
        x = h2[j]
        if x != 0.0:
            for i in range(n3):
                q[i] += x * w3[j, i]
    best = 0
    for i in range(n3):
        q[i] = q[i] + b3[i]
        if q[i] > q[best]:
            best = i
    return best


# ---- seed ---------------------------------------------------------------------------------------
# The kernels read plain float64 arrays (numba takes them as they are); these names are their layouts. Module-level
# ints are compile-time constants inside @njit, so a named index costs nothing over a bare one.
# p: the environment's parameters (`seed_params`), in degrees C, energy units, users, Mbit/s; train 1/0
(SP_BAND_LO, SP_BAND_HI, SP_SAFE_LO, SP_SAFE_HI, SP_UNITS_PER_C, SP_REWARD_PER_UNIT, SP_USERS_MIN, SP_USERS_MAX,
 SP_RATE_MIN, SP_RATE_MAX, SP_TRAIN, SP_SIZE) = range(12)  # fmt: skip
# s: the run's state and totals: temperatures (C), energy units, minutes and degree-minutes outside the band (agent
#    and built-in), safety resets, done (1/0), reward sum, minute t
(SS_T_AI, SS_T_BUILTIN, SS_E_AI, SS_E_BUILTIN, SS_MIN_OUT_AI, SS_MIN_OUT_BUILTIN, SS_DEG_MIN_AI, SS_DEG_MIN_BUILTIN,
 SS_RESETS, SS_DONE, SS_REWARD, SS_T, SS_SIZE) = range(13)  # fmt: skip
# pp: the controller's parameters: constant action, and the band rule's cool / heat / idle actions
SC_ACTION, SC_COOL, SC_HEAT, SC_IDLE, SC_SIZE = range(5)
# x: the trajectory's rows (`SeedTrajectory.as_array`)
SX_USERS, SX_RATE, SX_ATMOSPHERE = range(3)


@njit(cache=_CACHE)
def _seed_obs(p, x, s, t, out):
    out[0] = (s[SS_T_AI] - p[SP_SAFE_LO]) / (p[SP_SAFE_HI] - p[SP_SAFE_LO])
    out[1] = (x[SX_USERS, t] - p[SP_USERS_MIN]) / (p[SP_USERS_MAX] - p[SP_USERS_MIN])
    out[2] = (x[SX_RATE, t] - p[SP_RATE_MIN]) / (p[SP_RATE_MAX] - p[SP_RATE_MIN])


@njit(cache=_CACHE)
def _seed_run(
    p,
    moves,
    x,
    s,
    n,
    controller,
    pp,
    eps,
    u_explore,
    a_explore,
    w1,
    b1,
    w2,
    b2,
    w3,
    b3,
    obs_buf,
    act_buf,
    rew_buf,
    nxt_buf,
    done_buf,
    trace,
):
    lo, hi, safe_lo, safe_hi = p[SP_BAND_LO], p[SP_BAND_HI], p[SP_SAFE_LO], p[SP_SAFE_HI]
    record = obs_buf.shape[0] >= n
    tracing = trace.shape[0] > 0
    obs = np.empty(3)
    h1 = np.empty(w1.shape[1])
    h2 = np.empty(w2.shape[1])
    q = np.empty(w3.shape[1])
    t = int(s[SS_T])
    steps = 0
    for k in range(n):
        if s[SS_DONE] != 0.0 or t + 1 >= x.shape[1]:
            break
        _seed_obs(p, x, s, t, obs)
        if controller == 0:
            if eps > 0.0 and u_explore[k] < eps:
                a = a_explore[k]
            else:
                a = _greedy(obs, w1, b1, w2, b2, w3, b3, h1, h2, q)
        elif controller == 1:
            a = int(pp[SC_ACTION])
        else:
            a = int(pp[SC_COOL]) if s[SS_T_AI] > hi else (int(pp[SC_HEAT]) if s[SS_T_AI] < lo else int(pp[SC_IDLE]))
        if record:
            for j in range(3):
                obs_buf[k, j] = obs[j]
            act_buf[k] = a
        e_b = 0.0
        if s[SS_T_BUILTIN] < lo:
            e_b = (lo - s[SS_T_BUILTIN]) * p[SP_UNITS_PER_C]
            s[SS_T_BUILTIN] = lo
        elif s[SS_T_BUILTIN] > hi:
            e_b = (s[SS_T_BUILTIN] - hi) * p[SP_UNITS_PER_C]
            s[SS_T_BUILTIN] = hi
        move = moves[a]
        e_a = abs(move) * p[SP_UNITS_PER_C]
        reward = p[SP_REWARD_PER_UNIT] * (e_b - e_a)
        delta = x[SX_ATMOSPHERE, t + 1] - x[SX_ATMOSPHERE, t]
        s[SS_T_AI] = s[SS_T_AI] + delta + move
        s[SS_T_BUILTIN] = s[SS_T_BUILTIN] + delta
        if s[SS_T_AI] < safe_lo or s[SS_T_AI] > safe_hi:
            if p[SP_TRAIN] != 0.0:
                s[SS_DONE] = 1.0
            else:
                edge = lo if s[SS_T_AI] < safe_lo else hi
                s[SS_E_AI] += abs(s[SS_T_AI] - edge) * p[SP_UNITS_PER_C]
                s[SS_T_AI] = edge
                s[SS_RESETS] += 1.0
        s[SS_E_AI] += e_a
        s[SS_E_BUILTIN] += e_b
        out_a = lo - s[SS_T_AI] if s[SS_T_AI] < lo else (s[SS_T_AI] - hi if s[SS_T_AI] > hi else 0.0)
        out_b = (
            lo - s[SS_T_BUILTIN] if s[SS_T_BUILTIN] < lo else (s[SS_T_BUILTIN] - hi if s[SS_T_BUILTIN] > hi else 0.0)
        )
        if out_a > 0.0:
            s[SS_MIN_OUT_AI] += 1.0
        if out_b > 0.0:
            s[SS_MIN_OUT_BUILTIN] += 1.0
        s[SS_DEG_MIN_AI] += out_a
        s[SS_DEG_MIN_BUILTIN] += out_b
        s[SS_REWARD] += reward
        t += 1
        s[SS_T] = t
        if tracing:
            trace[0, k] = s[SS_T_AI]
            trace[1, k] = s[SS_E_AI]
            trace[2, k] = s[SS_T_BUILTIN]
            trace[3, k] = s[SS_E_BUILTIN]
        if record:
            _seed_obs(p, x, s, t, obs)
            for j in range(3):
                nxt_buf[k, j] = obs[j]
            rew_buf[k] = reward
            done_buf[k] = s[SS_DONE]
        steps += 1
    return steps


# ---- room ---------------------------------------------------------------------------------------
# p: the room's parameters (`room_params`): heat capacity kJ/K, envelope UA kW/K, Carnot fraction, evaporator and
#    condenser approach K, condensing floor C, COP cap, economiser max outside C / UA kW/K / approach K / COP,
#    recommended and allowable band C, reward per kWh, penalty per K-min, reward margin K, failure penalty,
#    train 1/0, IT-load scale kW, outside-temperature scaling range C, forecast minutes ahead (two), change scale K,
#    load-trend minutes
(RP_HEAT_CAPACITY, RP_UA, RP_CARNOT, RP_EVAP_APPROACH, RP_COND_APPROACH, RP_COND_MIN, RP_COP_MAX, RP_ECON_MAX_OUTSIDE,
 RP_ECON_UA, RP_ECON_APPROACH, RP_ECON_COP, RP_REC_LOW, RP_REC_HIGH, RP_ALLOW_LOW, RP_ALLOW_HIGH, RP_REWARD_PER_KWH,
 RP_PENALTY_PER_K_MIN, RP_MARGIN, RP_FAILURE_PENALTY, RP_TRAIN, RP_LOAD_SCALE, RP_OBS_OUT_LOW, RP_OBS_OUT_HIGH,
 RP_FORECAST_1, RP_FORECAST_2, RP_CHANGE_SCALE, RP_LOAD_TREND, RP_SIZE) = range(28)  # fmt: skip
# s: temperature C, cooling electricity kWh, of it free cooling kWh, heat removed kWh, minutes and degree-minutes
#    outside the recommended band, failed minutes, reward sum, thermostat level, done (1/0), minute t
(RS_TEMP, RS_ENERGY, RS_FREE, RS_HEAT, RS_MIN_OUTSIDE, RS_DEG_MIN_OUTSIDE, RS_FAILED, RS_REWARD, RS_LEVEL, RS_DONE,
 RS_T, RS_SIZE) = range(12)  # fmt: skip
# pp: constant action, thermostat setpoint C, dead band K; outdoor reset: the setpoint while the economiser runs C,
#    the setpoint's change per K of outside temperature above the economiser's limit (K/K), its bounds C
RC_ACTION, RC_SETPOINT, RC_DEAD_BAND, RC_ECON_SETPOINT, RC_RESET_SLOPE, RC_SP_LOW, RC_SP_HIGH, RC_SIZE = range(8)
# x: the trajectory's rows (`RoomTrajectory.as_array`)
RX_OUTSIDE, RX_LOAD, RX_HOUR_SIN, RX_HOUR_COS, RX_WEEK_SIN, RX_WEEK_COS = range(6)


@njit(cache=_CACHE)
def _free_kw(p, room, out):
    if out > p[RP_ECON_MAX_OUTSIDE]:
        return 0.0
    return p[RP_ECON_UA] * max(0.0, room - out - p[RP_ECON_APPROACH])


@njit(cache=_CACHE)
def _cop(p, room, out):
    evap = room - p[RP_EVAP_APPROACH]
    cond = max(out + p[RP_COND_APPROACH], p[RP_COND_MIN])
    return min(p[RP_COP_MAX], p[RP_CARNOT] * (evap + 273.15) / max(cond - evap, 1.0))


@njit(cache=_CACHE)
def _room_obs(p, x, s, t, out):
    o = x[RX_OUTSIDE, t]
    # the room relative to the recommended band: -1 at 18 C, +1 at 27 C (the agent's decisions turn on tenths of a K)
    out[0] = (2.0 * s[RS_TEMP] - p[RP_REC_LOW] - p[RP_REC_HIGH]) / (p[RP_REC_HIGH] - p[RP_REC_LOW])
    out[1] = (o - p[RP_OBS_OUT_LOW]) / (p[RP_OBS_OUT_HIGH] - p[RP_OBS_OUT_LOW])
    out[2] = x[RX_LOAD, t] / p[RP_LOAD_SCALE]
    out[3] = _free_kw(p, s[RS_TEMP], o) / p[RP_LOAD_SCALE]
    out[4] = 0.5 + 0.5 * x[RX_HOUR_SIN, t]
    out[5] = 0.5 + 0.5 * x[RX_HOUR_COS, t]
    last = x.shape[1] - 1
    out[6] = (x[RX_OUTSIDE, min(t + int(p[RP_FORECAST_1]), last)] - o) / p[RP_CHANGE_SCALE]
    out[7] = (x[RX_OUTSIDE, min(t + int(p[RP_FORECAST_2]), last)] - o) / p[RP_CHANGE_SCALE]
    out[8] = (x[RX_LOAD, t] - x[RX_LOAD, max(t - int(p[RP_LOAD_TREND]), 0)]) / p[RP_LOAD_SCALE]
    out[9] = 0.5 + 0.5 * x[RX_WEEK_SIN, t]
    out[10] = 0.5 + 0.5 * x[RX_WEEK_COS, t]


@njit(cache=_CACHE)
def _reset_setpoint(p, pp, out):
    """The outdoor-reset rule's setpoint at this outside temperature."""
    if out <= p[RP_ECON_MAX_OUTSIDE]:
        return pp[RC_ECON_SETPOINT]
    sp = pp[RC_SETPOINT] + pp[RC_RESET_SLOPE] * (out - p[RP_ECON_MAX_OUTSIDE])
    return min(max(sp, pp[RC_SP_LOW]), pp[RC_SP_HIGH])


@njit(cache=_CACHE)
def _room_run(
    p,
    levels,
    x,
    s,
    n,
    controller,
    pp,
    eps,
    u_explore,
    a_explore,
    w1,
    b1,
    w2,
    b2,
    w3,
    b3,
    obs_buf,
    act_buf,
    rew_buf,
    nxt_buf,
    done_buf,
    trace,
):
    record = obs_buf.shape[0] >= n
    tracing = trace.shape[0] > 0
    obs = np.empty(11)
    h1 = np.empty(w1.shape[1])
    h2 = np.empty(w2.shape[1])
    q = np.empty(w3.shape[1])
    n_levels = levels.shape[0]
    t = int(s[RS_T])
    steps = 0
    for k in range(n):
        if s[RS_DONE] != 0.0 or t + 1 >= x.shape[1]:
            break
        room = s[RS_TEMP]
        if controller == 0:
            _room_obs(p, x, s, t, obs)
            if eps > 0.0 and u_explore[k] < eps:
                a = a_explore[k]
            else:
                a = _greedy(obs, w1, b1, w2, b2, w3, b3, h1, h2, q)
        elif controller == 1:
            a = int(pp[RC_ACTION])
        elif controller == 4:
            a = a_explore[k]
        else:
            sp = pp[RC_SETPOINT] if controller == 2 else _reset_setpoint(p, pp, x[RX_OUTSIDE, t])
            a = int(s[RS_LEVEL])
            if room > sp + pp[RC_DEAD_BAND] / 2:
                a = min(a + 1, n_levels - 1)
            elif room < sp - pp[RC_DEAD_BAND] / 2:
                a = max(a - 1, 0)
        s[RS_LEVEL] = a
        if record:
            if controller != 0:
                _room_obs(p, x, s, t, obs)
            for j in range(11):
                obs_buf[k, j] = obs[j]
            act_buf[k] = a
        out = x[RX_OUTSIDE, t]
        load = x[RX_LOAD, t]
        heat = levels[a]
        free = min(heat, _free_kw(p, room, out))
        power_kw = free / p[RP_ECON_COP] + (heat - free) / _cop(p, room, out)
        energy_kwh = power_kw * 60.0 / 3600.0
        room = room + (load + p[RP_UA] * (out - room) - heat) * 60.0 / p[RP_HEAT_CAPACITY]
        s[RS_TEMP] = room
        beyond = max(0.0, max((p[RP_REC_LOW] + p[RP_MARGIN]) - room, room - (p[RP_REC_HIGH] - p[RP_MARGIN])))
        reward = -p[RP_REWARD_PER_KWH] * energy_kwh - p[RP_PENALTY_PER_K_MIN] * beyond
        outside = max(0.0, max(p[RP_REC_LOW] - room, room - p[RP_REC_HIGH]))
        if room < p[RP_ALLOW_LOW] or room > p[RP_ALLOW_HIGH]:
            reward -= p[RP_FAILURE_PENALTY]
            s[RS_FAILED] += 1.0
            if p[RP_TRAIN] != 0.0:
                s[RS_DONE] = 1.0
        s[RS_ENERGY] += energy_kwh
        s[RS_FREE] += free / p[RP_ECON_COP] * 60.0 / 3600.0
        s[RS_HEAT] += heat * 60.0 / 3600.0
        if outside > 0.0:
            s[RS_MIN_OUTSIDE] += 1.0
        s[RS_DEG_MIN_OUTSIDE] += outside
        s[RS_REWARD] += reward
        t += 1
        s[RS_T] = t
        if tracing:
            trace[0, k] = room
            trace[1, k] = s[RS_ENERGY]
        if record:
            _room_obs(p, x, s, t, obs)
            for j in range(11):
                nxt_buf[k, j] = obs[j]
            rew_buf[k] = reward
            done_buf[k] = s[RS_DONE]
        steps += 1
    return steps


# ---- Python side --------------------------------------------------------------------------------


def _filled(size: int, values: dict[int, float]) -> np.ndarray:
    """A float64 parameter array from {named index: value}; every index must be given."""
    if sorted(values) != list(range(size)):
        raise ValueError(f"parameter indices {sorted(values)}: expected each of 0..{size - 1} once")
    out = np.empty(size, dtype=np.float64)
    for index, value in values.items():
        out[index] = value
    return out


def seed_params(cfg: SeedConfig, train: bool) -> np.ndarray:
    w = cfg.workload
    return _filled(
        SP_SIZE,
        {
            SP_BAND_LO: cfg.optimal_min_temperature_c,
            SP_BAND_HI: cfg.optimal_max_temperature_c,
            SP_SAFE_LO: cfg.safe_min_temperature_c,
            SP_SAFE_HI: cfg.safe_max_temperature_c,
            SP_UNITS_PER_C: cfg.energy_units_per_c,
            SP_REWARD_PER_UNIT: cfg.reward_per_energy_unit,
            SP_USERS_MIN: w.min_users,
            SP_USERS_MAX: w.max_users,
            SP_RATE_MIN: w.min_data_rate_mbps,
            SP_RATE_MAX: w.max_data_rate_mbps,
            SP_TRAIN: 1.0 if train else 0.0,
        },
    )


def room_params(cfg: RoomConfig, train: bool) -> np.ndarray:
    return _filled(
        RP_SIZE,
        {
            RP_HEAT_CAPACITY: cfg.heat_capacity_kj_per_k,
            RP_UA: cfg.envelope_ua_kw_per_k,
            RP_CARNOT: cfg.carnot_efficiency_fraction,
            RP_EVAP_APPROACH: cfg.evaporator_approach_k,
            RP_COND_APPROACH: cfg.condenser_approach_k,
            RP_COND_MIN: cfg.min_condensing_temperature_c,
            RP_COP_MAX: cfg.max_cop,
            RP_ECON_MAX_OUTSIDE: cfg.economiser_max_outside_temperature_c,
            RP_ECON_UA: cfg.economiser_ua_kw_per_k,
            RP_ECON_APPROACH: cfg.economiser_approach_k,
            RP_ECON_COP: cfg.economiser_cop,
            RP_REC_LOW: cfg.recommended_min_temperature_c,
            RP_REC_HIGH: cfg.recommended_max_temperature_c,
            RP_ALLOW_LOW: cfg.allowable_min_temperature_c,
            RP_ALLOW_HIGH: cfg.allowable_max_temperature_c,
            RP_REWARD_PER_KWH: cfg.reward_per_kwh,
            RP_PENALTY_PER_K_MIN: cfg.penalty_per_degree_minute,
            RP_MARGIN: cfg.reward_margin_k,
            RP_FAILURE_PENALTY: cfg.failure_penalty,
            RP_TRAIN: 1.0 if train else 0.0,
            RP_LOAD_SCALE: max_it_load_kw(cfg),
            RP_OBS_OUT_LOW: OBS_OUTSIDE_RANGE_C[0],
            RP_OBS_OUT_HIGH: OBS_OUTSIDE_RANGE_C[1],
            RP_FORECAST_1: OBS_FORECAST_MINUTES[0],
            RP_FORECAST_2: OBS_FORECAST_MINUTES[1],
            RP_CHANGE_SCALE: OBS_CHANGE_SCALE_K,
            RP_LOAD_TREND: OBS_LOAD_TREND_MINUTES,
        },
    )


@dataclass(frozen=True)
class Controller:
    """What controls the agent's room: the network (greedy), a constant action, or the rule of the env.

    Rule: seed - the band rule (strongest cooling above the band, strongest heating below, else
    the smallest move); room - the staged thermostat at `setpoint_c` with `dead_band_k`.
    Room only: the outdoor reset (the staged thermostat at `econ_setpoint_c` while the economiser runs, else at
    `setpoint_c` + `reset_slope` x (outside - the economiser's limit), within the recommended band less half the
    dead band), and a schedule (`plan`: the action of every minute, decided in advance).
    """

    kind: int
    weights: Weights = field(default_factory=Weights.empty)
    action: int = 0
    setpoint_c: float = 21.0
    dead_band_k: float = 1.0
    econ_setpoint_c: float = 21.0
    reset_slope: float = 0.0  # K of setpoint per K of outside temperature above the economiser's limit
    plan: np.ndarray = field(default_factory=lambda: EMPTY_I)

    @classmethod
    def network(cls, weights: Weights) -> Controller:
        return cls(NETWORK, weights=weights)

    @classmethod
    def constant(cls, action: int) -> Controller:
        return cls(CONSTANT, action=action)

    @classmethod
    def rule(cls, setpoint_c: float = 21.0, dead_band_k: float = 1.0) -> Controller:
        return cls(RULE, setpoint_c=setpoint_c, dead_band_k=dead_band_k)

    @classmethod
    def reset(cls, econ_setpoint_c: float, setpoint_c: float, reset_slope: float, dead_band_k: float) -> Controller:
        return cls(
            RESET,
            setpoint_c=setpoint_c,
            dead_band_k=dead_band_k,
            econ_setpoint_c=econ_setpoint_c,
            reset_slope=reset_slope,
        )

    @classmethod
    def schedule(cls, plan: np.ndarray) -> Controller:
        return cls(SCHEDULE, plan=np.ascontiguousarray(plan, dtype=np.int64))


def seed_rule_actions(cfg: SeedConfig) -> tuple[int, int, int]:
    moves = list(cfg.action_moves_c)
    cool = int(np.argmin(moves))
    heat = int(np.argmax(moves))
    idle = int(np.argmin(np.abs(moves)))
    return cool, heat, idle


def _controller_params(env: str, cfg: SeedConfig | RoomConfig, controller: Controller) -> np.ndarray:
    if isinstance(cfg, SeedConfig):
        cool, heat, idle = seed_rule_actions(cfg)
        return _filled(SC_SIZE, {SC_ACTION: controller.action, SC_COOL: cool, SC_HEAT: heat, SC_IDLE: idle})
    half = controller.dead_band_k / 2
    return _filled(
        RC_SIZE,
        {
            RC_ACTION: controller.action,
            RC_SETPOINT: controller.setpoint_c,
            RC_DEAD_BAND: controller.dead_band_k,
            RC_ECON_SETPOINT: controller.econ_setpoint_c,
            RC_RESET_SLOPE: controller.reset_slope,
            RC_SP_LOW: cfg.recommended_min_temperature_c + half,
            RC_SP_HIGH: cfg.recommended_max_temperature_c - half,
        },
    )


class Simulation:
    """One run of one controller over one trajectory, advanced in compiled chunks."""

    def __init__(
        self,
        cfg: SeedConfig | RoomConfig,
        traj: SeedTrajectory | RoomTrajectory,
        controller: Controller,
        train: bool = False,
    ) -> None:
        self.cfg = cfg
        self.controller = controller
        self.x = traj.as_array()
        self.minutes = traj.minutes
        if isinstance(cfg, SeedConfig):
            self.env = "seed"
            self.p = seed_params(cfg, train)
            self.actions = np.asarray(cfg.action_moves_c, dtype=np.float64)
            self.s = np.zeros(SS_SIZE)
            self.s[SS_T_AI] = self.x[SX_ATMOSPHERE, 0]
            self.s[SS_T_BUILTIN] = cfg.builtin_start_c
            self.kernel: Callable[..., int] = _seed_run
            self.obs_dim = SEED_OBS
        else:
            self.env = "room"
            self.p = room_params(cfg, train)
            self.actions = np.asarray(cfg.cooling_levels_kw, dtype=np.float64)
            self.s = np.zeros(RS_SIZE)
            self.s[RS_TEMP] = cfg.initial_temperature_c
            self.kernel = _room_run
            self.obs_dim = ROOM_OBS
        self.pp = _controller_params(self.env, cfg, controller)
        w = controller.weights
        self.w = (w.w1, w.b1, w.w2, w.b2, w.w3, w.b3)

    @property
    def t(self) -> int:
        return int(self.s[SS_T if self.env == "seed" else RS_T])

    @property
    def done(self) -> bool:
        return bool(self.s[SS_DONE if self.env == "seed" else RS_DONE]) or self.t >= self.minutes

    def advance(
        self,
        n: int,
        eps: float = 0.0,
        u_explore: np.ndarray = EMPTY1,
        a_explore: np.ndarray = EMPTY_I,
        buffers: tuple[np.ndarray, ...] | None = None,
        trace: np.ndarray = EMPTY2,
    ) -> int:
        """Run up to n minutes; with `buffers` (obs, action, reward, next_obs, done) each step is recorded."""
        if buffers is None:
            buffers = (EMPTY2, EMPTY_I, EMPTY1, EMPTY2, EMPTY1)
        if self.controller.kind == SCHEDULE:
            a_explore = self.controller.plan[self.t : self.t + n]
            n = min(n, len(a_explore))
        if eps > 0.0 and (len(u_explore) < n or len(a_explore) < n):
            raise ValueError(
                f"u_explore/a_explore hold {min(len(u_explore), len(a_explore))} draws: expected at least n = {n}"
            )
        return int(
            self.kernel(
                self.p,
                self.actions,
                self.x,
                self.s,
                n,
                self.controller.kind,
                self.pp,
                eps,
                u_explore,
                a_explore,
                *self.w,
                *buffers,
                trace,
            )
        )

    def totals(self) -> dict[str, float]:
        s = self.s
        if self.env == "seed":
            return {
                "energy_units": float(s[SS_E_AI]),
                "builtin_energy_units": float(s[SS_E_BUILTIN]),
                "minutes_outside_band": float(s[SS_MIN_OUT_AI]),
                "builtin_minutes_outside_band": float(s[SS_MIN_OUT_BUILTIN]),
                "degree_minutes_outside_band": float(s[SS_DEG_MIN_AI]),
                "builtin_degree_minutes_outside_band": float(s[SS_DEG_MIN_BUILTIN]),
                "safety_resets": float(s[SS_RESETS]),
                "reward": float(s[SS_REWARD]),
                "minutes": float(s[SS_T]),
            }
        return {
            "energy_kwh": float(s[RS_ENERGY]),
            "free_cooling_energy_kwh": float(s[RS_FREE]),
            "heat_removed_kwh": float(s[RS_HEAT]),
            "minutes_outside_band": float(s[RS_MIN_OUTSIDE]),
            "degree_minutes_outside_band": float(s[RS_DEG_MIN_OUTSIDE]),
            "failed_minutes": float(s[RS_FAILED]),
            "reward": float(s[RS_REWARD]),
            "minutes": float(s[RS_T]),
        }


@dataclass
class RunResult:
    totals: dict[str, float]
    steps: int
    seconds: float
    # Per minute, end of minute: [temperature C, cumulative energy] of the controller, and for the seed
    # also [temperature C, cumulative energy units] of the built-in cooling.
    trace: np.ndarray | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")


def run(
    cfg: SeedConfig | RoomConfig,
    traj: SeedTrajectory | RoomTrajectory,
    controller: Controller,
    keep_trace: bool = False,
    chunk_minutes: int = 10_800,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Evaluate one controller over the whole trajectory (evaluation rules: no early end)."""
    sim = Simulation(cfg, traj, controller, train=False)
    trace = np.zeros((4 if isinstance(cfg, SeedConfig) else 2, traj.minutes)) if keep_trace else EMPTY2
    steps = 0
    start = time.perf_counter()
    while not sim.done:
        n = min(chunk_minutes, traj.minutes - steps)
        view = trace[:, steps : steps + n] if keep_trace else EMPTY2
        done = sim.advance(n, trace=view)
        steps += done
        if progress is not None:
            progress(done)
        if done == 0:
            break
    seconds = time.perf_counter() - start
    return RunResult(sim.totals(), steps, seconds, trace if keep_trace else None)


def run_with_bar(
    cfg: SeedConfig | RoomConfig,
    traj: SeedTrajectory | RoomTrajectory,
    controller: Controller,
    label: str,
    keep_trace: bool = False,
) -> RunResult:
    """`run` with a progress bar on stderr (rich, installed with Prefect); plain when not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(label, total=traj.minutes)
        result = run(cfg, traj, controller, keep_trace=keep_trace, progress=lambda n: bar.advance(task, n))
    if not sys.stderr.isatty():
        print(
            f"{label}: {result.steps:,} minutes in {result.seconds:.2f} s ({result.steps_per_s:,.0f} steps/s)",
            file=sys.stderr,
        )
    return result


def warm_up() -> float:
    """Compile (or load from cache) every kernel on a few minutes; returns the seconds it took."""
    from tasks.cooling import room, seed

    start = time.perf_counter()
    scfg, rcfg = SeedConfig(), RoomConfig()
    for cfg, traj, obs in (
        (scfg, seed.trajectory(scfg, 5, 0), SEED_OBS),
        (rcfg, room.trajectory(rcfg, 5, 0), ROOM_OBS),
    ):
        n_actions = len(cfg.action_moves_c) if isinstance(cfg, SeedConfig) else len(cfg.cooling_levels_kw)
        w = Weights.from_linear(
            [
                (np.zeros((2, obs)), np.zeros(2)),
                (np.zeros((2, 2)), np.zeros(2)),
                (np.zeros((n_actions, 2)), np.zeros(n_actions)),
            ]
        )
        for controller in (Controller.network(w), Controller.constant(0), Controller.rule()):
            run(cfg, traj, controller)
            # Chunks of a longer trace are non-contiguous views (another compiled signature than a whole one).
            run(cfg, traj, controller, keep_trace=True, chunk_minutes=2)
        sim = Simulation(cfg, traj, Controller.network(w), train=True)
        bufs = (np.zeros((5, obs)), np.zeros(5, dtype=np.int64), np.zeros(5), np.zeros((5, obs)), np.zeros(5))
        sim.advance(5, 0.5, np.full(5, 0.1), np.zeros(5, dtype=np.int64), bufs)
    return time.perf_counter() - start


# ---- the plain reference ------------------------------------------------------------------------


def reference_run(
    cfg: SeedConfig | RoomConfig, traj: SeedTrajectory | RoomTrajectory, controller: Controller
) -> dict[str, float]:
    """The same evaluation as `run`, one Python step at a time through SeedEnv / RoomEnv."""
    if isinstance(cfg, SeedConfig):
        assert isinstance(traj, SeedTrajectory)
        senv = SeedEnv(cfg, traj, train=False)
        cool, heat, idle = seed_rule_actions(cfg)
        obs = senv.observe()
        while not senv.done:
            if controller.kind == NETWORK:
                a = controller.weights.greedy(obs)
            elif controller.kind == CONSTANT:
                a = controller.action
            else:
                temp = senv.temperature_ai_c
                a = (
                    cool
                    if temp > cfg.optimal_max_temperature_c
                    else (heat if temp < cfg.optimal_min_temperature_c else idle)
                )
            obs, _, _ = senv.step(a)
        st = senv.totals
        return {
            "energy_units": st.energy_ai_units,
            "builtin_energy_units": st.energy_builtin_units,
            "minutes_outside_band": float(st.minutes_outside_band_ai),
            "builtin_minutes_outside_band": float(st.minutes_outside_band_builtin),
            "degree_minutes_outside_band": st.degree_minutes_outside_band_ai,
            "builtin_degree_minutes_outside_band": st.degree_minutes_outside_band_builtin,
            "safety_resets": float(st.safety_resets),
            "minutes": float(senv.t),
        }
    assert isinstance(traj, RoomTrajectory)
    renv = RoomEnv(cfg, traj, train=False)
    level = 0
    obs = renv.observe()
    while not renv.done:
        if controller.kind == NETWORK:
            level = controller.weights.greedy(obs)
        elif controller.kind == CONSTANT:
            level = controller.action
        elif controller.kind == SCHEDULE:
            level = int(controller.plan[renv.t])
        else:
            sp = controller.setpoint_c
            if controller.kind == RESET:
                c = controller
                out = float(traj.outside_c[renv.t])
                sp = reset_setpoint_c(cfg, out, c.econ_setpoint_c, c.setpoint_c, c.reset_slope, c.dead_band_k)
            level = thermostat_action(cfg, level, renv.temperature_c, sp, controller.dead_band_k)
        obs, _, _ = renv.step(level)
    rt = renv.totals
    return {
        "energy_kwh": rt.cooling_energy_kwh,
        "free_cooling_energy_kwh": rt.free_cooling_energy_kwh,
        "heat_removed_kwh": rt.heat_removed_kwh,
        "minutes_outside_band": float(rt.minutes_outside),
        "degree_minutes_outside_band": rt.degree_minutes_outside,
        "failed_minutes": float(rt.failed_minutes),
        "reward": rt.reward,
        "minutes": float(renv.t),
    }
