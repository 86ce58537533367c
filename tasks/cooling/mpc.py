"""The perfect-forecast controller: the room's cheapest plan when every future minute of weather and load is known.

Not deployable (nothing knows the weather and the load exactly), but the upper bound of what any controller can
reach in this room: a model-predictive controller over the room model whose forecast is perfect and whose horizon is
the whole period (a shorter horizon can only do worse). Solved by dynamic programming, backwards over the minutes,
on a grid of room temperatures (`GRID_STEP_K`; the value between grid points interpolated linearly):

    V[t](T) = min over levels a of  E_el(T, a, t) + PENALTY * (K beyond the band) + V[t+1](T')

with T' the room model's next temperature (tasks/cooling/room.py) and the band the recommended one shrunk by
`MARGIN_K`, so that the plan, rounded to the grid, stays inside 18-27 C. The plan is then simulated forwards with
the exact model (the action at the grid point nearest the room's temperature each minute) and judged like every
other controller, by `fast_eval.run` on the same trajectory.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tasks.cooling.fast_eval import (
    _CACHE,
    RP_ECON_COP,
    RP_HEAT_CAPACITY,
    RP_UA,
    RX_LOAD,
    RX_OUTSIDE,
    Controller,
    RunResult,
    _cop,
    _free_kw,
    room_params,
    run,
)
from tasks.cooling.room import RoomTrajectory
from thresholds.cooling.env import RoomConfig

GRID_STEP_K = 0.05
GRID_PAD_K = 1.0  # the grid reaches this far beyond the recommended band (recovery from a start outside it)
MARGIN_K = 0.1
PENALTY_KWH_PER_K_MIN = 100.0  # far above any minute's cooling electricity: the band is all but a hard constraint


@njit(cache=_CACHE)
def _backward(p, levels, x, grid_lo, step, band_lo, band_hi, penalty, policy):  # pragma: no cover - compiled
    n_t, n_grid = policy.shape
    n_levels = levels.shape[0]
    v_next = np.zeros(n_grid)
    v = np.zeros(n_grid)
    for t in range(n_t - 1, -1, -1):
        out = x[RX_OUTSIDE, t]
        load = x[RX_LOAD, t]
        for i in range(n_grid):
            room = grid_lo + i * step
            capacity = _free_kw(p, room, out)
            cop = _cop(p, room, out)
            drift = load + p[RP_UA] * (out - room)
            best = np.inf
            best_a = 0
            for a in range(n_levels):
                heat = levels[a]
                free = min(heat, capacity)
                energy_kwh = (free / p[RP_ECON_COP] + (heat - free) / cop) * 60.0 / 3600.0
                nxt = room + (drift - heat) * 60.0 / p[RP_HEAT_CAPACITY]
                beyond = max(0.0, max(band_lo - nxt, nxt - band_hi))
                u = (nxt - grid_lo) / step
                u = min(max(u, 0.0), n_grid - 1.0)
                j = min(int(u), n_grid - 2)
                w = u - j
                value = energy_kwh + penalty * beyond + (1.0 - w) * v_next[j] + w * v_next[j + 1]
                if value < best:
                    best = value
                    best_a = a
            v[i] = best
            policy[t, i] = best_a
        for i in range(n_grid):
            v_next[i] = v[i]
    return v_next[0]


@njit(cache=_CACHE)
def _forward(p, levels, x, start_c, grid_lo, step, policy, plan):  # pragma: no cover - compiled
    n_t, n_grid = policy.shape
    room = start_c
    for t in range(n_t):
        i = min(max(int(round((room - grid_lo) / step)), 0), n_grid - 1)
        a = policy[t, i]
        plan[t] = a
        out = x[RX_OUTSIDE, t]
        room = room + (x[RX_LOAD, t] + p[RP_UA] * (out - room) - levels[a]) * 60.0 / p[RP_HEAT_CAPACITY]


def plan(cfg: RoomConfig, traj: RoomTrajectory) -> np.ndarray:
    """The perfect-forecast plan: one cooling level per minute of the trajectory."""
    p = room_params(cfg, train=False)
    levels = np.asarray(cfg.cooling_levels_kw, dtype=np.float64)
    x = traj.as_array()
    grid_lo = cfg.recommended_min_temperature_c - GRID_PAD_K
    n_grid = int(round((cfg.recommended_max_temperature_c + GRID_PAD_K - grid_lo) / GRID_STEP_K)) + 1
    policy = np.zeros((traj.minutes, n_grid), dtype=np.int8)
    band = (cfg.recommended_min_temperature_c + MARGIN_K, cfg.recommended_max_temperature_c - MARGIN_K)
    _backward(p, levels, x, grid_lo, GRID_STEP_K, band[0], band[1], PENALTY_KWH_PER_K_MIN, policy)
    actions = np.zeros(traj.minutes, dtype=np.int64)
    _forward(p, levels, x, cfg.initial_temperature_c, grid_lo, GRID_STEP_K, policy, actions)
    return actions


def run_mpc(cfg: RoomConfig, traj: RoomTrajectory, keep_trace: bool = False) -> RunResult:
    """The perfect-forecast controller's run over `traj`, judged by the same evaluator as every controller."""
    return run(cfg, traj, Controller.schedule(plan(cfg, traj)), keep_trace=keep_trace)
