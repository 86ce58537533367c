"""The cooling agent, measured twice: the energy it saves in the simulated room, and what it costs here.

    python benchmarks/cooling.py [--eval-seeds 5] [--train-seeds 5] [--meter auto]

1. seed: the paper's environment. The built-in cooling over one simulated year (518,400 minutes)
   for each evaluation seed, against the paper's 1,977,614 units; DQN agents trained with the
   reference recipe (one per training seed), each evaluated on every evaluation year beside
   do-nothing and the band rule: energy, saving, minutes outside 18-24 C.
2. room: the physical room, under the honest protocol (tasks/cooling/protocol.py). The best fixed
   setpoint and the outdoor-reset rule are tuned on the scenario's training years only; agents
   trained with thresholds/cooling-room.yaml (one per training seed) are evaluated on held-out
   years never used for any choice, against the 21 C thermostat, do-nothing, both tuned
   controllers and the perfect-forecast MPC (the upper bound). Figures: mean over seeds and
   held-out years, and the spread of the per-seed means over the seeds.
3. speed: the compiled year (compile time excluded: every kernel is warmed up first) vs the
   paper's 1,407 steps/s and vs this repository's plain-Python reference loop.

Training energy is measured with the project's meter (CodeCarbon's load x TDP estimate on a
machine without RAPL: `energy_estimated` says so). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)

PAPER_BUILTIN_UNITS = 1_977_614
PAPER_AI_UNITS = 628_889
PAPER_STEPS_PER_S = 1_407


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "std": float(np.std(values)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-seeds", type=int, default=5, help="simulated years per evaluation (default 5)")
    parser.add_argument("--train-seeds", type=int, default=5, help="seed-environment agents trained (default 5)")
    parser.add_argument("--room-seeds", type=int, default=5, help="room agents trained (default 5)")
    parser.add_argument(
        "--room-episodes", type=int, default=None, help="room training episodes at most (default: the scenario's)"
    )
    parser.add_argument("--meter", default=None, help="energy meter (default: the scenario's, auto)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the artifacts to MLflow")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)

    from tasks.cooling import dqn, plots
    from tasks.cooling.baselines import compare
    from tasks.cooling.fast_eval import Controller, reference_run, run, run_with_bar, seed_rule_actions, warm_up
    from tasks.cooling.protocol import tune
    from tasks.cooling.stages import inference_energy_j_per_year
    from tasks.meters.select import close_shared_meters, resolve_meter_name, shared_meter
    from thresholds.cooling.env import MINUTES_PER_MONTH, MINUTES_PER_YEAR, DQNConfig
    from thresholds.cooling.schema import load

    started = time.perf_counter()
    compile_s = warm_up()
    seed_s, room_s = load("cooling-seed"), load("cooling-room")
    meter_name = resolve_meter_name(args.meter or room_s.measurement.meter)
    meter = shared_meter(meter_name, room_s.measurement.fixed_power_w, room_s.measurement.codecarbon_country)
    eval_seeds = [1000 + i for i in range(args.eval_seeds)]
    out = Path(tempfile.mkdtemp(prefix="cooling-bench-"))
    figures: dict[str, Any] = {}
    log = lambda msg: print(f"  {msg}", file=sys.stderr)  # noqa: E731

    # ---- 1. seed -------------------------------------------------------------------------------
    scfg = seed_s.seed_env
    seed_trajs = [dqn.make_trajectory(scfg, MINUTES_PER_YEAR, s) for s in eval_seeds]
    _, _, idle = seed_rule_actions(scfg)
    builtin_units, do_nothing_pct, rule_pct = [], [], []
    for traj in seed_trajs:
        nothing = run(scfg, traj, Controller.constant(idle)).totals
        rule = run(scfg, traj, Controller.rule()).totals
        builtin_units.append(nothing["builtin_energy_units"])
        do_nothing_pct.append(100 * (1 - nothing["energy_units"] / nothing["builtin_energy_units"]))
        rule_pct.append(100 * (1 - rule["energy_units"] / rule["builtin_energy_units"]))
    seed_train_j, seed_agents = [], []
    for train_seed in range(args.train_seeds):
        cfg = DQNConfig(**{**seed_s.training.model_dump(exclude={"early_stopping_on"}), "seed": train_seed})
        print(
            f"seed environment: training agent {train_seed + 1}/{args.train_seeds} (reference recipe)", file=sys.stderr
        )
        with meter.window(f"seed-train-{train_seed}") as w:
            result = dqn.train(scfg, cfg, seed_s.training.early_stopping_on, log=log)
        seed_train_j.append(w.measurement.energy_j)
        seed_agents.append((result, w.measurement))
    per_agent: list[dict[str, float]] = []
    for result, _ in seed_agents:
        rows = [compare(scfg, traj, result.network.weights())[0] for traj in seed_trajs]
        per_agent.append(
            {
                "ai_units": float(np.mean([c.rows[0].energy for c in rows])),
                "saved_pct": float(np.mean([c.rows[0].saved_pct for c in rows])),
                "ai_minutes_outside": float(np.mean([c.rows[0].minutes_outside_band for c in rows])),
                "builtin_minutes_outside": float(np.mean([c.rows[1].minutes_outside_band for c in rows])),
                "do_nothing_minutes_outside": float(np.mean([c.rows[2].minutes_outside_band for c in rows])),
                "resets": float(np.mean([c.rows[0].safety_resets for c in rows])),
            }
        )
    first = seed_agents[0][0].network
    bar_run = run_with_bar(scfg, seed_trajs[0], Controller.network(first.weights()), "seed agent, one simulated year")
    month = dqn.make_trajectory(scfg, MINUTES_PER_MONTH, eval_seeds[0])
    t0 = time.perf_counter()
    reference_run(scfg, month, Controller.network(first.weights()))
    reference_steps_per_s = MINUTES_PER_MONTH / (time.perf_counter() - t0)
    seed_inference_j, _ = inference_energy_j_per_year(seed_s, first, meter)
    _, seed_runs = compare(scfg, seed_trajs[0], first.weights(), traces=True)
    artifacts = [
        plots.week_plot(
            seed_runs, scfg, out / "seed-week.png", seed_trajs[0].start_month, "seed environment: one week of July"
        ),
        plots.monthly_bars(
            seed_runs, out / "seed-monthly-energy.png", "energy units", "seed environment: energy per month"
        ),
    ]

    # ---- 2. room -------------------------------------------------------------------------------
    rcfg = room_s.room_env
    training_years = tuple(room_s.evaluation.training_years)
    heldout_years = list(room_s.evaluation.seeds)
    print(f"room environment: tuning the controllers on training years {list(training_years)}", file=sys.stderr)
    t0 = time.perf_counter()
    tuned = tune(rcfg, training_years, MINUTES_PER_YEAR)
    tune_s = time.perf_counter() - t0
    room_trajs = [dqn.make_trajectory(rcfg, MINUTES_PER_YEAR, s) for s in heldout_years]
    room_agents, room_trains = [], []
    for train_seed in range(args.room_seeds):
        fields = {**room_s.training.model_dump(exclude={"early_stopping_on"}), "seed": train_seed}
        if args.room_episodes is not None:
            fields["max_episodes"] = args.room_episodes
        print(f"room environment: training agent {train_seed + 1}/{args.room_seeds}", file=sys.stderr)
        with meter.window(f"room-train-{train_seed}") as w:
            result = dqn.train(rcfg, DQNConfig(**fields), room_s.training.early_stopping_on, log=log)
        room_agents.append(result)
        room_trains.append(w.measurement)
    room_rows: list[list[Any]] = []  # [agent][held-out year] -> Comparison
    for k, result in enumerate(room_agents):
        per_year = []
        for i, traj in enumerate(room_trajs):
            first_run = k == 0 and i == 0
            comparison, runs = compare(
                rcfg, traj, result.network.weights(), bar=first_run, traces=first_run, tuned=tuned, with_mpc=True
            )
            per_year.append(comparison)
            if first_run:
                artifacts += [
                    plots.week_plot(runs, rcfg, out / "room-week.png", traj.start_month, "room: one week of July"),
                    plots.monthly_bars(
                        runs, out / "room-monthly-energy.png", "kWh", "room: cooling electricity per month"
                    ),
                ]
                (out / "room-comparison.md").write_text(comparison.table())
                artifacts.append(out / "room-comparison.md")
        room_rows.append(per_year)
    room_net = room_agents[0].network
    room_inference_j, _ = inference_energy_j_per_year(room_s, room_net, meter)
    every = [c for per_year in room_rows for c in per_year]
    first_agent = room_rows[0]
    vs_best_by_seed = [float(np.mean([c.vs_best_controller_pct for c in per_year])) for per_year in room_rows]
    vs_mpc_by_seed = [float(np.mean([c.vs_mpc_pct for c in per_year])) for per_year in room_rows]
    saved_by_seed = [float(np.mean([c.rows[0].saved_pct for c in per_year])) for per_year in room_rows]
    ai_minutes_by_seed = [sum(c.rows[0].minutes_outside_band for c in per_year) for per_year in room_rows]
    best_minutes = sum(c.best_row().minutes_outside_band for c in first_agent)
    mpc_kwh = [c.rows[5].energy for c in first_agent]

    def controller_vs(row: int) -> tuple[float, float]:
        """(percent saved vs the built-in, kWh beyond the MPC in percent of it) of one baseline row, mean over years."""
        return (
            float(np.mean([c.rows[row].saved_pct for c in first_agent])),
            float(np.mean([100 * (c.rows[row].energy / c.rows[5].energy - 1) for c in first_agent])),
        )

    fixed_saved, fixed_vs_mpc = controller_vs(3)
    reset_saved, reset_vs_mpc = controller_vs(4)
    room_steps = [c.agent_steps_per_s for c in every]
    close_shared_meters()

    # ---- figures -------------------------------------------------------------------------------
    builtin = _spread(builtin_units)
    saved = _spread([a["saved_pct"] for a in per_agent])
    figures = {
        "seed_no_ai_energy": round(builtin["mean"], 1),
        "seed_no_ai_energy_vs_paper_pct": round(100 * (builtin["mean"] / PAPER_BUILTIN_UNITS - 1), 3),
        "seed_no_ai_energy_min": round(builtin["min"], 1),
        "seed_no_ai_energy_max": round(builtin["max"], 1),
        "seed_ai_energy": round(float(np.mean([a["ai_units"] for a in per_agent])), 1),
        "seed_energy_saved_pct": round(saved["mean"], 2),
        "seed_energy_saved_pct_min": round(saved["min"], 2),
        "seed_energy_saved_pct_max": round(saved["max"], 2),
        "seed_do_nothing_saved_pct": round(float(np.mean(do_nothing_pct)), 2),
        "seed_band_rule_saved_pct": round(float(np.mean(rule_pct)), 2),
        "seed_ai_minutes_outside_band": round(float(np.mean([a["ai_minutes_outside"] for a in per_agent])), 1),
        "seed_no_ai_minutes_outside_band": round(float(np.mean([a["builtin_minutes_outside"] for a in per_agent])), 1),
        "seed_do_nothing_minutes_outside_band": round(
            float(np.mean([a["do_nothing_minutes_outside"] for a in per_agent])), 1
        ),
        "seed_ai_safety_resets": round(float(np.mean([a["resets"] for a in per_agent])), 1),
        "seed_train_energy_j": round(float(np.mean(seed_train_j)), 2),
        "seed_train_s": round(float(np.mean([m.duration_s for _, m in seed_agents])), 2),
        "seed_train_episodes": [r.episodes_run for r, _ in seed_agents],
        "seed_inference_energy_j_per_year": round(seed_inference_j, 3),
        "room_vs_best_controller_heldout_pct": round(float(np.mean(vs_best_by_seed)), 2),
        "room_vs_best_controller_heldout_pct_min": round(float(np.min(vs_best_by_seed)), 2),
        "room_vs_best_controller_heldout_pct_max": round(float(np.max(vs_best_by_seed)), 2),
        "room_vs_best_controller_heldout_pct_std": round(float(np.std(vs_best_by_seed)), 2),
        "room_vs_best_controller_heldout_pct_by_seed": [round(v, 2) for v in vs_best_by_seed],
        "room_vs_mpc_pct": round(float(np.mean(vs_mpc_by_seed)), 2),
        "room_vs_mpc_pct_min": round(float(np.min(vs_mpc_by_seed)), 2),
        "room_vs_mpc_pct_max": round(float(np.max(vs_mpc_by_seed)), 2),
        "heldout_years": len(heldout_years),
        "seeds": args.room_seeds,
        "training_years": len(training_years),
        "room_best_controller": tuned.describe(tuned.best),
        "room_best_setpoint_c": tuned.setpoint_c,
        "room_reset_rule": list(tuned.reset),
        "room_best_thermostat_saved_pct": round(fixed_saved, 2),
        "room_outdoor_reset_saved_pct": round(reset_saved, 2),
        "room_best_thermostat_vs_mpc_pct": round(fixed_vs_mpc, 2),
        "room_outdoor_reset_vs_mpc_pct": round(reset_vs_mpc, 2),
        "room_mpc_saved_pct": round(float(np.mean([c.rows[5].saved_pct for c in first_agent])), 2),
        "room_mpc_energy_kwh": round(float(np.mean(mpc_kwh)), 1),
        "room_energy_saved_pct": round(float(np.mean(saved_by_seed)), 2),
        "room_energy_saved_pct_min": round(float(np.min(saved_by_seed)), 2),
        "room_energy_saved_pct_max": round(float(np.max(saved_by_seed)), 2),
        "room_vs_best_thermostat_pct": round(
            float(np.mean([100 * (1 - c.rows[0].energy / c.rows[3].energy) for c in every])), 2
        ),
        "room_ai_energy_kwh": round(float(np.mean([c.rows[0].energy for c in every])), 1),
        "room_builtin_energy_kwh": round(float(np.mean([c.rows[1].energy for c in first_agent])), 1),
        "room_ai_minutes_outside": round(float(np.mean(ai_minutes_by_seed)), 1),
        "room_ai_minutes_outside_max": int(np.max(ai_minutes_by_seed)),
        "room_best_controller_minutes_outside": int(best_minutes),
        "room_builtin_minutes_outside": int(sum(c.rows[1].minutes_outside_band for c in first_agent)),
        "room_ai_degree_minutes_outside": round(
            float(np.mean([sum(c.rows[0].degree_minutes_outside_band for c in per_year) for per_year in room_rows])), 2
        ),
        "room_ai_failed_minutes": int(sum(c.rows[0].failed_minutes for c in every)),
        "room_do_nothing_minutes_outside": int(sum(c.rows[2].minutes_outside_band for c in first_agent)),
        "room_train_energy_j": round(float(np.mean([m.energy_j for m in room_trains])), 2),
        "room_train_s": round(float(np.mean([m.duration_s for m in room_trains])), 2),
        "room_train_episodes": [r.episodes_run for r in room_agents],
        "room_tune_s": round(tune_s, 1),
        "room_inference_energy_j_per_year": round(room_inference_j, 3),
        "steps_per_s": round(bar_run.steps_per_s),
        "speedup_vs_seed": round(bar_run.steps_per_s / PAPER_STEPS_PER_S, 1),
        "room_steps_per_s": round(float(np.median(room_steps))),
        "reference_loop_steps_per_s": round(reference_steps_per_s),
        "compile_s_excluded": round(compile_s, 2),
        "train_energy_j": round(float(np.sum(seed_train_j)) + sum(m.energy_j for m in room_trains), 2),
        "energy_source": room_trains[0].source,
        "energy_estimated": room_trains[0].estimated,
        "eval_years": len(eval_seeds),
        "train_seeds": args.train_seeds,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "cooling-benchmark.json").write_text(json.dumps(figures, indent=2))
    artifacts.append(out / "cooling-benchmark.json")
    if not args.no_mlflow:
        from registry.cooling import log_benchmark

        figures["mlflow_run_id"] = log_benchmark({k: str(v) for k, v in figures.items()}, artifacts)
    logging.getLogger("prefect").setLevel(logging.WARNING)

    estimated = " (estimated)" if room_trains[0].estimated else ""
    print()
    print(
        f"seed environment, {len(eval_seeds)} simulated years x {args.train_seeds} agents (paper: AI "
        f"{PAPER_AI_UNITS:,}, no AI {PAPER_BUILTIN_UNITS:,}, 68 %)"
    )
    print(
        f"  built-in (no AI)     {builtin['mean']:>12,.0f} units  ({figures['seed_no_ai_energy_vs_paper_pct']:+.2f} % "
        f"vs paper; {builtin['min']:,.0f}..{builtin['max']:,.0f})"
    )
    print(
        f"  agent (DQN)          {figures['seed_ai_energy']:>12,.0f} units  saved {saved['mean']:.1f} % "
        f"({saved['min']:.1f}..{saved['max']:.1f} over agents)"
    )
    print(f"  do-nothing           {'':>12}        saved {figures['seed_do_nothing_saved_pct']:.1f} %")
    print(f"  band rule            {'':>12}        saved {figures['seed_band_rule_saved_pct']:.1f} %")
    print(
        f"  minutes outside 18-24 C: agent {figures['seed_ai_minutes_outside_band']:,.0f}, built-in "
        f"{figures['seed_no_ai_minutes_outside_band']:,.0f}, do-nothing "
        f"{figures['seed_do_nothing_minutes_outside_band']:,.0f} of {MINUTES_PER_YEAR:,}"
    )
    print(
        f"room environment: {args.room_seeds} agents x {len(heldout_years)} held-out years (controllers tuned on "
        f"{len(training_years)} training years in {tune_s:.0f} s); first agent, first held-out year:"
    )
    print(room_rows[0][0].table())
    print(
        f"  vs the best tuned controller ({figures['room_best_controller']}): "
        f"{figures['room_vs_best_controller_heldout_pct']:+.2f} % "
        f"(seeds {figures['room_vs_best_controller_heldout_pct_min']:+.2f}..."
        f"{figures['room_vs_best_controller_heldout_pct_max']:+.2f}; goal >= +5); agent kWh beyond the "
        f"perfect-forecast MPC {figures['room_vs_mpc_pct']:+.2f} % (best thermostat "
        f"{figures['room_best_thermostat_vs_mpc_pct']:+.2f} %, outdoor reset "
        f"{figures['room_outdoor_reset_vs_mpc_pct']:+.2f} %)"
    )
    print(
        f"  vs 21 C thermostat {figures['room_energy_saved_pct']:.1f} %; minutes outside 18-27 C per agent (all "
        f"held-out years): {figures['room_ai_minutes_outside']:.0f} (max {figures['room_ai_minutes_outside_max']}), "
        f"best tuned controller {figures['room_best_controller_minutes_outside']}, built-in "
        f"{figures['room_builtin_minutes_outside']}"
    )
    print(
        f"speed: {figures['steps_per_s']:,} steps/s compiled ({figures['speedup_vs_seed']}x the paper's 1,407; plain "
        f"Python reference {figures['reference_loop_steps_per_s']:,} steps/s; {compile_s:.1f} s of "
        "compilation excluded)"
    )
    print(
        f"training energy{estimated}: seed agent {figures['seed_train_energy_j']:.0f} J in "
        f"{figures['seed_train_s']:.0f} s, room agent {figures['room_train_energy_j']:.0f} J in "
        f"{figures['room_train_s']:.0f} s ({room_trains[0].source}); inference per simulated year: seed "
        f"{seed_inference_j:.2f} J, room {room_inference_j:.2f} J"
    )
    emit(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
