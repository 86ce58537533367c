"""The controllers every evaluation reports beside the agent, on the same trajectory.

seed: built-in cooling (the paper's "no AI", computed inside the environment), do-nothing
      (always the 0 degrees C action) and the band rule (cool above 24, heat below 18).
room: built-in thermostat (21 degrees C, 1 K dead band), do-nothing (cooling off), and the
      controllers tuned on the training years (tasks/cooling/protocol.py): the best fixed
      setpoint and the outdoor-reset rule; optionally the perfect-forecast MPC (the upper bound).
      Nothing is chosen on the trajectory being evaluated. The agent is judged against the best
      tuned controller (`vs_best_controller_pct`: kWh saved, positive = the agent uses less).
"""

from __future__ import annotations

from pydantic import BaseModel

from tasks.cooling import mpc
from tasks.cooling.fast_eval import Controller, RunResult, Weights, run, run_with_bar, seed_rule_actions
from tasks.cooling.protocol import FIXED, RESET, Tuned, mpc_totals
from tasks.cooling.room import RoomTrajectory
from tasks.cooling.seed import SeedTrajectory
from thresholds.cooling.env import RoomConfig, SeedConfig


class Row(BaseModel):
    controller: str
    energy: float  # energy units (seed) or kWh of cooling electricity (room)
    saved_pct: float  # vs the built-in cooling
    minutes_outside_band: int
    degree_minutes_outside_band: float
    failed_minutes: int = 0  # room: outside the allowable range
    safety_resets: int = 0  # seed: evaluation resets after leaving [-20, 80] C


class Comparison(BaseModel):
    env: str
    minutes: int
    energy_unit: str
    rows: list[Row]
    agent_steps_per_s: float
    agent_seconds: float
    best_setpoint_c: float | None = None  # room: the best fixed setpoint, tuned on the training years
    best_controller: str | None = None  # room: the row of the best tuned controller
    vs_best_controller_pct: float | None = None  # room: kWh the agent saves vs it (negative: it uses more)
    vs_mpc_pct: float | None = None  # room: kWh the agent uses beyond the perfect-forecast MPC, percent of the MPC's

    def row(self, controller: str) -> Row:
        return next(r for r in self.rows if r.controller == controller)

    def best_row(self) -> Row:
        """The room's best tuned controller."""
        return self.row(self.best_controller or "")

    def table(self) -> str:
        head = (
            f"| controller | energy ({self.energy_unit}) | saved vs built-in | minutes outside band | "
            "degree-minutes outside | failed/reset |"
        )
        lines = [head, "|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(
                f"| {r.controller} | {r.energy:,.1f} | {r.saved_pct:.1f} % | {r.minutes_outside_band:,} | "
                f"{r.degree_minutes_outside_band:,.1f} | {r.failed_minutes or r.safety_resets:,} |"
            )
        return "\n".join(lines)


def _saved(energy: float, reference: float) -> float:
    return 100.0 * (reference - energy) / reference if reference > 0 else 0.0


def _seed_row(name: str, totals: dict[str, float], builtin_units: float) -> Row:
    return Row(
        controller=name,
        energy=totals["energy_units"],
        saved_pct=_saved(totals["energy_units"], builtin_units),
        minutes_outside_band=int(totals["minutes_outside_band"]),
        degree_minutes_outside_band=totals["degree_minutes_outside_band"],
        safety_resets=int(totals["safety_resets"]),
    )


def _room_row(name: str, totals: dict[str, float], builtin_kwh: float) -> Row:
    return Row(
        controller=name,
        energy=totals["energy_kwh"],
        saved_pct=_saved(totals["energy_kwh"], builtin_kwh),
        minutes_outside_band=int(totals["minutes_outside_band"]),
        degree_minutes_outside_band=totals["degree_minutes_outside_band"],
        failed_minutes=int(totals["failed_minutes"]),
    )


def compare(
    cfg: SeedConfig | RoomConfig,
    traj: SeedTrajectory | RoomTrajectory,
    weights: Weights,
    bar: bool = False,
    traces: bool = False,
    tuned: Tuned | None = None,
    with_mpc: bool = False,
) -> tuple[Comparison, dict[str, RunResult]]:
    """The agent and the baselines over one trajectory; with `traces`, the per-minute runs for plots. The room needs
    `tuned` (its controllers as chosen on the training years); `with_mpc` adds the perfect-forecast MPC."""
    runner = (
        (lambda controller, label: run_with_bar(cfg, traj, controller, label, keep_trace=traces))
        if bar
        else (lambda controller, label: run(cfg, traj, controller, keep_trace=traces))
    )
    agent = runner(Controller.network(weights), "agent: one simulated period")
    runs = {"agent": agent}
    if isinstance(cfg, SeedConfig):
        assert isinstance(traj, SeedTrajectory)
        _, _, idle = seed_rule_actions(cfg)
        runs["do-nothing"] = run(cfg, traj, Controller.constant(idle), keep_trace=traces)
        runs["band rule"] = run(cfg, traj, Controller.rule(), keep_trace=traces)
        a = agent.totals
        builtin_units = a["builtin_energy_units"]
        rows = [
            _seed_row("agent (DQN)", a, builtin_units),
            Row(
                controller="built-in",
                energy=builtin_units,
                saved_pct=0.0,
                minutes_outside_band=int(a["builtin_minutes_outside_band"]),
                degree_minutes_outside_band=a["builtin_degree_minutes_outside_band"],
            ),
            _seed_row("do-nothing", runs["do-nothing"].totals, builtin_units),
            _seed_row("band rule", runs["band rule"].totals, builtin_units),
        ]
        comparison = Comparison(
            env="seed",
            minutes=agent.steps,
            energy_unit="energy units",
            rows=rows,
            agent_steps_per_s=agent.steps_per_s,
            agent_seconds=agent.seconds,
        )
        return comparison, runs
    assert isinstance(traj, RoomTrajectory)
    if tuned is None:
        raise ValueError("a room comparison needs the controllers tuned on the training years (protocol.tune)")
    runs["built-in"] = run(
        cfg, traj, Controller.rule(cfg.builtin_setpoint_c, cfg.builtin_dead_band_k), keep_trace=traces
    )
    runs["do-nothing"] = run(cfg, traj, Controller.constant(0), keep_trace=traces)
    for name in (FIXED, RESET):
        runs[name] = run(cfg, traj, tuned.controller(name), keep_trace=traces)
    if with_mpc:  # the plan does not depend on the agent: computed once per trajectory unless traced
        runs["MPC"] = (
            mpc.run_mpc(cfg, traj, keep_trace=True) if traces else RunResult(mpc_totals(cfg, traj), traj.minutes, 0.0)
        )
    builtin_kwh = runs["built-in"].totals["energy_kwh"]
    rows = [
        _room_row("agent (DQN)", agent.totals, builtin_kwh),
        _room_row(f"built-in ({cfg.builtin_setpoint_c:g} C)", runs["built-in"].totals, builtin_kwh),
        _room_row("do-nothing", runs["do-nothing"].totals, builtin_kwh),
        _room_row(tuned.describe(FIXED), runs[FIXED].totals, builtin_kwh),
        _room_row(tuned.describe(RESET), runs[RESET].totals, builtin_kwh),
    ]
    if with_mpc:
        rows.append(_room_row("MPC, perfect forecast (upper bound)", runs["MPC"].totals, builtin_kwh))
    agent_kwh, best_kwh = agent.totals["energy_kwh"], runs[tuned.best].totals["energy_kwh"]
    comparison = Comparison(
        env="room",
        minutes=agent.steps,
        energy_unit="kWh",
        rows=rows,
        agent_steps_per_s=agent.steps_per_s,
        agent_seconds=agent.seconds,
        best_setpoint_c=tuned.setpoint_c,
        best_controller=tuned.describe(tuned.best),
        vs_best_controller_pct=_saved(agent_kwh, best_kwh),
        vs_mpc_pct=-_saved(agent_kwh, runs["MPC"].totals["energy_kwh"]) if with_mpc else None,
    )
    return comparison, runs
