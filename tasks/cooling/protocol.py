"""The honest protocol: every non-learning controller tuned on training years, everything judged on held-out years.

A "year" is a seed of the room's trajectory generator (weather, IT load). The scenario's
`evaluation.training_years` are the only years anything is chosen on: the best fixed setpoint,
the outdoor-reset rule's parameters (and the agent's own training episodes and validation weeks
come from its training seed's generator, never from a held-out seed). `evaluation.seeds` are the
held-out years: they are only ever evaluated, and the agent is judged there against the best
controller as tuned on the training years, and against the perfect-forecast MPC (tasks/cooling/mpc.py).

Tuning (pure search over the compiled evaluator, deterministic):

- best fixed setpoint: the staged thermostat at every setpoint whose dead band fits 18-27 C, 0.25 K
  apart; the lowest mean energy among those no less safe than the built-in 21 C thermostat
  (minutes outside 18-27 C and failed minutes, summed over the training years);
- outdoor reset: the staged thermostat at one setpoint while the economiser can run and another,
  moved with the outside temperature above the economiser's limit, when the chiller runs, and its
  dead band. Coordinate descent from the best fixed setpoint (a special case of it): each setpoint
  over its grid, the slope, then the dead band with both setpoints shifted together, twice, under
  the same safety rule: on the training years it is never worse than the fixed setpoint.

The best controller is whichever of the two uses less energy on the training years.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tasks.cooling import mpc, room
from tasks.cooling.fast_eval import Controller, run
from thresholds.cooling.env import RoomConfig

FIXED = "best thermostat"
RESET = "outdoor reset"
SETPOINT_STEP_K = 0.25
RESET_SLOPES = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2)  # K of setpoint per K of outside temperature
DEAD_BANDS_K = (0.25, 0.5, 1.0, 1.5)
SHIFTS_K = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75)  # both setpoints moved with a new dead band
DESCENT_PASSES = 2


@dataclass(frozen=True)
class Tuned:
    """The controllers as chosen on the training years, with what they did there."""

    training_years: tuple[int, ...]
    setpoint_c: float  # the best fixed setpoint (the built-in's dead band)
    dead_band_k: float
    reset: tuple[float, float, float, float]  # economiser setpoint C, chiller setpoint C, slope K/K, dead band K
    best: str  # FIXED or RESET
    training_kwh: dict[str, float]  # mean over the training years: built-in, FIXED, RESET
    training_minutes_outside: dict[str, float]  # summed over the training years

    def controller(self, name: str) -> Controller:
        if name == FIXED:
            return Controller.rule(self.setpoint_c, self.dead_band_k)
        econ, chiller, slope, band = self.reset
        return Controller.reset(econ, chiller, slope, band)

    def describe(self, name: str) -> str:
        if name == FIXED:
            return f"{FIXED} ({self.setpoint_c:g} C)"
        econ, chiller, slope, band = self.reset
        return f"{RESET} ({econ:g} C economiser, {chiller:g} C {slope:+g} K/K chiller, {band:g} K band)"


def _setpoints(cfg: RoomConfig, dead_band_k: float) -> list[float]:
    low = cfg.recommended_min_temperature_c + dead_band_k / 2
    high = cfg.recommended_max_temperature_c - dead_band_k / 2
    return [float(v) for v in np.round(np.arange(low, high + 1e-9, SETPOINT_STEP_K), 4)]


def _score(cfg: RoomConfig, trajs: list[room.RoomTrajectory], controller: Controller) -> tuple[float, float, float]:
    """(mean kWh, minutes outside 18-27 C summed, failed minutes summed) over the trajectories."""
    totals = [run(cfg, t, controller).totals for t in trajs]
    return (
        float(np.mean([t["energy_kwh"] for t in totals])),
        float(sum(t["minutes_outside_band"] for t in totals)),
        float(sum(t["failed_minutes"] for t in totals)),
    )


def _best(
    cfg: RoomConfig, trajs: list[room.RoomTrajectory], candidates: list[Controller], limit: tuple[float, float]
) -> tuple[Controller, tuple[float, float, float]]:
    """The lowest-energy candidate within the safety limit (minutes outside, failed minutes); the safest if none."""
    scored = [(c, _score(cfg, trajs, c)) for c in candidates]
    safe = [(c, s) for c, s in scored if s[1] <= limit[0] and s[2] <= limit[1]]
    if safe:
        return min(safe, key=lambda cs: cs[1][0])
    return min(scored, key=lambda cs: (cs[1][1], cs[1][2], cs[1][0]))


def training_trajectories(cfg: RoomConfig, years: tuple[int, ...], minutes: int) -> list[room.RoomTrajectory]:
    return [room.trajectory(cfg, minutes, seed) for seed in years]


def tune(cfg: RoomConfig, years: tuple[int, ...], minutes: int) -> Tuned:
    """Both controllers tuned on the training years (cached: the same scenario tunes once per process)."""
    return _tune(cfg.model_dump_json(), tuple(years), minutes)


def _neighbours(
    cfg: RoomConfig, params: tuple[float, float, float, float], step: int
) -> list[tuple[float, float, float, float]]:
    """One coordinate of the descent over (economiser setpoint, chiller setpoint, slope, dead band): 0 and 1 each
    setpoint over its grid, 2 the slope, 3 the dead band with both setpoints moved together (a narrower band lets
    them sit warmer, which one coordinate at a time would never find)."""
    econ, chiller, slope, band = params
    if step == 0:
        return [(v, chiller, slope, band) for v in _setpoints(cfg, band)]
    if step == 1:
        return [(econ, v, slope, band) for v in _setpoints(cfg, band)]
    if step == 2:
        return [(econ, chiller, v, band) for v in RESET_SLOPES]
    out = []
    for width in DEAD_BANDS_K:
        fits = _setpoints(cfg, width)
        for shift in SHIFTS_K:
            moved = (econ + shift, chiller + shift)
            if fits and all(fits[0] <= v <= fits[-1] for v in moved):
                out.append((moved[0], moved[1], slope, width))
    return out


@lru_cache(maxsize=8)
def _tune(cfg_json: str, years: tuple[int, ...], minutes: int) -> Tuned:
    cfg = RoomConfig.model_validate_json(cfg_json)
    trajs = training_trajectories(cfg, years, minutes)
    builtin = _score(cfg, trajs, Controller.rule(cfg.builtin_setpoint_c, cfg.builtin_dead_band_k))
    limit = (builtin[1], builtin[2])
    band = cfg.builtin_dead_band_k
    fixed, fixed_score = _best(cfg, trajs, [Controller.rule(sp, band) for sp in _setpoints(cfg, band)], limit)
    params = (fixed.setpoint_c, fixed.setpoint_c, 0.0, band)
    reset_score = fixed_score
    for _ in range(DESCENT_PASSES):
        for step in range(4):
            options = [Controller.reset(*trial) for trial in _neighbours(cfg, params, step)]
            chosen, score = _best(cfg, trajs, options, limit)
            if score[0] < reset_score[0]:
                params = (chosen.econ_setpoint_c, chosen.setpoint_c, chosen.reset_slope, chosen.dead_band_k)
                reset_score = score
    best = RESET if reset_score[0] < fixed_score[0] else FIXED
    return Tuned(
        training_years=years,
        setpoint_c=fixed.setpoint_c,
        dead_band_k=band,
        reset=params,
        best=best,
        training_kwh={"built-in": builtin[0], FIXED: fixed_score[0], RESET: reset_score[0]},
        training_minutes_outside={"built-in": builtin[1], FIXED: fixed_score[1], RESET: reset_score[1]},
    )


_MPC_TOTALS: dict[tuple[str, str], dict[str, float]] = {}


def mpc_totals(cfg: RoomConfig, traj: room.RoomTrajectory) -> dict[str, float]:
    """The perfect-forecast controller's totals on `traj`, computed once per configuration and trajectory (keyed by
    its data): every agent of a loop or a benchmark is judged on the same held-out years."""
    key = (cfg.model_dump_json(), hashlib.sha1(traj.as_array().tobytes()).hexdigest())
    if key not in _MPC_TOTALS:
        _MPC_TOTALS[key] = mpc.run_mpc(cfg, traj).totals
    return dict(_MPC_TOTALS[key])
