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

from tasks.cooling.room import OBS_OUTSIDE_RANGE_C, RoomEnv, RoomTrajectory, max_it_load_kw, thermostat_action
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

NETWORK, CONSTANT, RULE = 0, 1, 2
SEED_OBS, ROOM_OBS = 3, 6
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
# p: 0 band low, 1 band high, 2 safe low, 3 safe high, 4 units per C, 5 reward per unit,
#    6 users min, 7 users max, 8 rate min, 9 rate max, 10 train (1/0)
# s: 0 T_ai, 1 T_builtin, 2 E_ai, 3 E_builtin, 4 min out ai, 5 min out builtin, 6 deg-min ai,
#    7 deg-min builtin, 8 safety resets, 9 done, 10 reward sum, 11 t
# pp: 0 constant action, 1 cool action, 2 heat action, 3 idle action


@njit(cache=_CACHE)
def _seed_obs(p, x, s, t, out):
    out[0] = (s[0] - p[2]) / (p[3] - p[2])
    out[1] = (x[0, t] - p[6]) / (p[7] - p[6])
    out[2] = (x[1, t] - p[8]) / (p[9] - p[8])


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
    lo, hi, safe_lo, safe_hi = p[0], p[1], p[2], p[3]
    record = obs_buf.shape[0] >= n
    tracing = trace.shape[0] > 0
    obs = np.empty(3)
    h1 = np.empty(w1.shape[1])
    h2 = np.empty(w2.shape[1])
    q = np.empty(w3.shape[1])
    t = int(s[11])
    steps = 0
    for k in range(n):
        if s[9] != 0.0 or t + 1 >= x.shape[1]:
            break
        _seed_obs(p, x, s, t, obs)
        if controller == 0:
            if eps > 0.0 and u_explore[k] < eps:
                a = a_explore[k]
            else:
                a = _greedy(obs, w1, b1, w2, b2, w3, b3, h1, h2, q)
        elif controller == 1:
            a = int(pp[0])
        else:
            a = int(pp[1]) if s[0] > hi else (int(pp[2]) if s[0] < lo else int(pp[3]))
        if record:
            for j in range(3):
                obs_buf[k, j] = obs[j]
            act_buf[k] = a
        e_b = 0.0
        if s[1] < lo:
            e_b = (lo - s[1]) * p[4]
            s[1] = lo
        elif s[1] > hi:
            e_b = (s[1] - hi) * p[4]
            s[1] = hi
        move = moves[a]
        e_a = abs(move) * p[4]
        reward = p[5] * (e_b - e_a)
        delta = x[2, t + 1] - x[2, t]
        s[0] = s[0] + delta + move
        s[1] = s[1] + delta
        if s[0] < safe_lo or s[0] > safe_hi:
            if p[10] != 0.0:
                s[9] = 1.0
            else:
                edge = lo if s[0] < safe_lo else hi
                s[2] += abs(s[0] - edge) * p[4]
                s[0] = edge
                s[8] += 1.0
        s[2] += e_a
        s[3] += e_b
        out_a = lo - s[0] if s[0] < lo else (s[0] - hi if s[0] > hi else 0.0)
        out_b = lo - s[1] if s[1] < lo else (s[1] - hi if s[1] > hi else 0.0)
        if out_a > 0.0:
            s[4] += 1.0
        if out_b > 0.0:
            s[5] += 1.0
        s[6] += out_a
        s[7] += out_b
        s[10] += reward
        t += 1
        s[11] = t
        if tracing:
            trace[0, k] = s[0]
            trace[1, k] = s[2]
            trace[2, k] = s[1]
            trace[3, k] = s[3]
        if record:
            _seed_obs(p, x, s, t, obs)
            for j in range(3):
                nxt_buf[k, j] = obs[j]
            rew_buf[k] = reward
            done_buf[k] = s[9]
        steps += 1
    return steps


# ---- room ---------------------------------------------------------------------------------------
# p: 0 C kJ/K, 1 UA, 2 eta Carnot, 3 evap approach, 4 cond approach, 5 cond min, 6 COP max,
#    7 econ max outside, 8 econ UA, 9 econ approach, 10 econ COP, 11 rec low, 12 rec high,
#    13 allow low, 14 allow high, 15 reward per kWh, 16 penalty per K-min, 17 margin, 18 failure penalty,
#    19 train, 20 load scale kW, 21 obs outside low, 22 obs outside high
# s: 0 T, 1 E kWh, 2 free-cooling kWh, 3 heat kWh, 4 min outside, 5 deg-min outside, 6 failed min,
#    7 reward sum, 8 thermostat level, 9 done, 10 t
# pp: 0 constant action, 1 setpoint C, 2 dead band K


@njit(cache=_CACHE)
def _free_kw(p, room, out):
    if out > p[7]:
        return 0.0
    return p[8] * max(0.0, room - out - p[9])


@njit(cache=_CACHE)
def _cop(p, room, out):
    evap = room - p[3]
    cond = max(out + p[4], p[5])
    return min(p[6], p[2] * (evap + 273.15) / max(cond - evap, 1.0))


@njit(cache=_CACHE)
def _room_obs(p, x, s, t, out):
    o = x[0, t]
    out[0] = (s[0] - p[13]) / (p[14] - p[13])
    out[1] = (o - p[21]) / (p[22] - p[21])
    out[2] = x[1, t] / p[20]
    out[3] = _free_kw(p, s[0], o) / p[20]
    out[4] = 0.5 + 0.5 * x[2, t]
    out[5] = 0.5 + 0.5 * x[3, t]


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
    obs = np.empty(6)
    h1 = np.empty(w1.shape[1])
    h2 = np.empty(w2.shape[1])
    q = np.empty(w3.shape[1])
    n_levels = levels.shape[0]
    t = int(s[10])
    steps = 0
    for k in range(n):
        if s[9] != 0.0 or t + 1 >= x.shape[1]:
            break
        room = s[0]
        if controller == 0:
            _room_obs(p, x, s, t, obs)
            if eps > 0.0 and u_explore[k] < eps:
                a = a_explore[k]
            else:
                a = _greedy(obs, w1, b1, w2, b2, w3, b3, h1, h2, q)
        elif controller == 1:
            a = int(pp[0])
        else:
            a = int(s[8])
            if room > pp[1] + pp[2] / 2:
                a = min(a + 1, n_levels - 1)
            elif room < pp[1] - pp[2] / 2:
                a = max(a - 1, 0)
        s[8] = a
        if record:
            if controller != 0:
                _room_obs(p, x, s, t, obs)
            for j in range(6):
                obs_buf[k, j] = obs[j]
            act_buf[k] = a
        out = x[0, t]
        load = x[1, t]
        heat = levels[a]
        free = min(heat, _free_kw(p, room, out))
        power_kw = free / p[10] + (heat - free) / _cop(p, room, out)
        energy_kwh = power_kw * 60.0 / 3600.0
        room = room + (load + p[1] * (out - room) - heat) * 60.0 / p[0]
        s[0] = room
        beyond = max(0.0, max((p[11] + p[17]) - room, room - (p[12] - p[17])))
        reward = -p[15] * energy_kwh - p[16] * beyond
        outside = max(0.0, max(p[11] - room, room - p[12]))
        if room < p[13] or room > p[14]:
            reward -= p[18]
            s[6] += 1.0
            if p[19] != 0.0:
                s[9] = 1.0
        s[1] += energy_kwh
        s[2] += free / p[10] * 60.0 / 3600.0
        s[3] += heat * 60.0 / 3600.0
        if outside > 0.0:
            s[4] += 1.0
        s[5] += outside
        s[7] += reward
        t += 1
        s[10] = t
        if tracing:
            trace[0, k] = room
            trace[1, k] = s[1]
        if record:
            _room_obs(p, x, s, t, obs)
            for j in range(6):
                nxt_buf[k, j] = obs[j]
            rew_buf[k] = reward
            done_buf[k] = s[9]
        steps += 1
    return steps


# ---- Python side --------------------------------------------------------------------------------


def seed_params(cfg: SeedConfig, train: bool) -> np.ndarray:
    w = cfg.workload
    return np.array(
        [
            cfg.optimal_min_temperature_c,
            cfg.optimal_max_temperature_c,
            cfg.safe_min_temperature_c,
            cfg.safe_max_temperature_c,
            cfg.energy_units_per_c,
            cfg.reward_per_energy_unit,
            w.min_users,
            w.max_users,
            w.min_data_rate_mbps,
            w.max_data_rate_mbps,
            1.0 if train else 0.0,
        ],
        dtype=np.float64,
    )


def room_params(cfg: RoomConfig, train: bool) -> np.ndarray:
    return np.array(
        [
            cfg.heat_capacity_kj_per_k,
            cfg.envelope_ua_kw_per_k,
            cfg.carnot_efficiency_fraction,
            cfg.evaporator_approach_k,
            cfg.condenser_approach_k,
            cfg.min_condensing_temperature_c,
            cfg.max_cop,
            cfg.economiser_max_outside_temperature_c,
            cfg.economiser_ua_kw_per_k,
            cfg.economiser_approach_k,
            cfg.economiser_cop,
            cfg.recommended_min_temperature_c,
            cfg.recommended_max_temperature_c,
            cfg.allowable_min_temperature_c,
            cfg.allowable_max_temperature_c,
            cfg.reward_per_kwh,
            cfg.penalty_per_degree_minute,
            cfg.reward_margin_k,
            cfg.failure_penalty,
            1.0 if train else 0.0,
            max_it_load_kw(cfg),
            OBS_OUTSIDE_RANGE_C[0],
            OBS_OUTSIDE_RANGE_C[1],
        ],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class Controller:
    """What controls the agent's room: the network (greedy), a constant action, or the rule of the env.

    Rule: seed - the band rule (strongest cooling above the band, strongest heating below, else
    the smallest move); room - the staged thermostat at `setpoint_c` with `dead_band_k`.
    """

    kind: int
    weights: Weights = field(default_factory=Weights.empty)
    action: int = 0
    setpoint_c: float = 21.0
    dead_band_k: float = 1.0

    @classmethod
    def network(cls, weights: Weights) -> Controller:
        return cls(NETWORK, weights=weights)

    @classmethod
    def constant(cls, action: int) -> Controller:
        return cls(CONSTANT, action=action)

    @classmethod
    def rule(cls, setpoint_c: float = 21.0, dead_band_k: float = 1.0) -> Controller:
        return cls(RULE, setpoint_c=setpoint_c, dead_band_k=dead_band_k)


def seed_rule_actions(cfg: SeedConfig) -> tuple[int, int, int]:
    moves = list(cfg.action_moves_c)
    cool = int(np.argmin(moves))
    heat = int(np.argmax(moves))
    idle = int(np.argmin(np.abs(moves)))
    return cool, heat, idle


def _controller_params(env: str, cfg: SeedConfig | RoomConfig, controller: Controller) -> np.ndarray:
    if isinstance(cfg, SeedConfig):
        cool, heat, idle = seed_rule_actions(cfg)
        return np.array([controller.action, cool, heat, idle], dtype=np.float64)
    return np.array([controller.action, controller.setpoint_c, controller.dead_band_k], dtype=np.float64)


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
            self.s = np.zeros(12)
            self.s[0] = self.x[2, 0]
            self.s[1] = cfg.builtin_start_c
            self.kernel: Callable[..., int] = _seed_run
            self.obs_dim = SEED_OBS
        else:
            self.env = "room"
            self.p = room_params(cfg, train)
            self.actions = np.asarray(cfg.cooling_levels_kw, dtype=np.float64)
            self.s = np.zeros(11)
            self.s[0] = cfg.initial_temperature_c
            self.kernel = _room_run
            self.obs_dim = ROOM_OBS
        self.pp = _controller_params(self.env, cfg, controller)
        w = controller.weights
        self.w = (w.w1, w.b1, w.w2, w.b2, w.w3, w.b3)

    @property
    def t(self) -> int:
        return int(self.s[-1])

    @property
    def done(self) -> bool:
        return bool(self.s[9]) or self.t >= self.minutes

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
                "energy_units": float(s[2]),
                "builtin_energy_units": float(s[3]),
                "minutes_outside_band": float(s[4]),
                "builtin_minutes_outside_band": float(s[5]),
                "degree_minutes_outside_band": float(s[6]),
                "builtin_degree_minutes_outside_band": float(s[7]),
                "safety_resets": float(s[8]),
                "reward": float(s[10]),
                "minutes": float(s[11]),
            }
        return {
            "energy_kwh": float(s[1]),
            "free_cooling_energy_kwh": float(s[2]),
            "heat_removed_kwh": float(s[3]),
            "minutes_outside_band": float(s[4]),
            "degree_minutes_outside_band": float(s[5]),
            "failed_minutes": float(s[6]),
            "reward": float(s[7]),
            "minutes": float(s[10]),
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
            run(cfg, traj, controller, keep_trace=True)
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
        else:
            level = thermostat_action(cfg, level, renv.temperature_c, controller.setpoint_c, controller.dead_band_k)
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
