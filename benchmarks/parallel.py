"""Serial vs parallel training of one rung, at two workload sizes: does scale-out pay here?

    python benchmarks/parallel.py [--scenario dev-cpu] [--dataset mnist1d] [--sizes 8000 30000] [--candidates 4]
                                  [--workers 2]

Per size (mnist1d samples), inside one Prefect flow run:

1. setup, not timed: the baseline and the early-stopping recipe, serially;
2. serial: the same N pruning candidates of the recipe trained one after another in process
   (torch on every core), inside one window of the loop's meter (the machine reading);
3. parallel: the same N trained at once on a local Dask cluster of `--workers` processes
   (torch threads = cores / workers) through the loop's own `train_rung`, which splits its
   machine reading among them; an independent window of a second meter reads the same phase.
   The workers' start-up and their first task run are not in the phase (a loop pays them once;
   the calibration measures them: `workers_startup_s`);
4. `--parallel auto`: the parallel calibration measured afresh for this workload (real rungs
   through the loop's task path, `calibration_s` long), and the width `parallel_width` picks.

Reported per size: training_speedup (serial / parallel wall time of the phase),
machine_energy_ratio (parallel / serial machine reading of the phase), attribution_error
(|sum of the candidates' attributed energies - the independent reading| / that reading) and
auto_choice (the width picked, 1 = serial). Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)

RATIOS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="dev-cpu")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[8000, 30000], help="workload sizes in samples (default: 8000 30000)"
    )
    parser.add_argument("--candidates", type=int, default=4, help=f"pruning ratios from {RATIOS}")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not 2 <= args.candidates <= len(RATIOS):  # one candidate has nothing to run beside: it trains in process
        print(f"parallel.py: error: --candidates = {args.candidates}: expected 2..{len(RATIOS)}", file=sys.stderr)
        return 2
    if args.workers < 2:
        print(f"parallel.py: error: --workers = {args.workers}: expected an integer >= 2", file=sys.stderr)
        return 2
    bad = [s for s in args.sizes if s < 200]
    if bad:
        print(f"parallel.py: error: --sizes = {bad[0]}: expected sample counts >= 200", file=sys.stderr)
        return 2
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow

    @flow(name="benchmark-parallel")
    def bench() -> dict[str, Any]:
        return {
            str(size): _one_size(args.scenario, args.dataset, size, args.candidates, args.workers)
            for size in args.sizes
        }

    sizes = bench()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    print()
    print(
        "| samples | training speedup | machine energy parallel/serial | attribution error | auto chose | "
        "auto consistent |"
    )
    print("|---|---|---|---|---|---|")
    for size, f in sizes.items():
        print(
            f"| {size} | {f['training_speedup']:.2f}x | {f['machine_energy_ratio']:.3f} | "
            f"{f['attribution_error']:.2%} | {f['auto_choice']} | {'yes' if f['auto_consistent'] else 'NO'} |"
        )
    emit({"sizes": sizes})
    return 0


def _one_size(scenario_name: str, dataset: str, samples: int, n: int, workers: int) -> dict[str, Any]:
    from tasks.data import datasets as data_mod
    from tasks.energy_loop.calibrate_parallel import calibrate_parallel
    from tasks.energy_loop.candidate import run_step
    from tasks.energy_loop.dask_stages import candidate_runner, train_rung
    from tasks.energy_loop.parallel import ScaleOut, cores
    from tasks.energy_loop.stages import scenario_meter, train_candidate
    from tasks.meters.select import close_shared_meters, make_meter, resolve_meter_name
    from tasks.meters.simple import NullMeter
    from thresholds import scenario_path
    from thresholds.energy import keys
    from thresholds.energy.policy import CandidateResult, Step, StepKind
    from thresholds.energy.schema import load_scenario
    from thresholds.parallel import parallel_width, threads_per_worker

    settings = load_scenario(scenario_path(scenario_name))
    meter_name = resolve_meter_name(settings.measurement.meter)
    meter = scenario_meter(settings, meter_name)
    n_cores = cores()
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(data_mod.prepare(dataset, Path(tmp) / "cache", samples=samples, seed=settings.training.seed))
        history: list[CandidateResult] = []
        for step in (Step(kind=StepKind.BASELINE), Step(kind=StepKind.EARLY_STOPPING, parent=0)):
            history.append(run_step(settings, step, history, data_path, Path(tmp) / "setup", meter))
        steps = [Step(kind=StepKind.PRUNE, value=r, parent=1) for r in RATIOS[:n]]
        # A second meter of the same kind reads each phase independently of the one the loop splits.
        phase_meter = make_meter(
            meter_name, settings.measurement.fixed_power_w, settings.measurement.codecarbon_country
        )

        def calls(work: str) -> list[dict[str, Any]]:
            return [
                dict(
                    scenario=settings,
                    step=s,
                    history=history,
                    index=len(history) + i,
                    data_path=data_path,
                    work_dir=str(Path(tmp) / work),
                    meter=meter_name,
                )
                for i, s in enumerate(steps)
            ]

        t0 = time.perf_counter()
        with phase_meter.window("serial phase") as serial_phase:
            serial = train_rung(
                None,
                train_candidate,
                calls("serial"),
                history,
                meter,
                ScaleOut(width=1, threads_per_worker=n_cores, why="serial"),
            )
        serial_s = time.perf_counter() - t0

        # Measured afresh, not the machine's cache, through the loop's task path, read by the independent meter.
        table = calibrate_parallel(
            phase_meter, settings, data_path, train_candidate, meter_name, Path(tmp) / "calibration"
        )
        auto = parallel_width(
            table,
            None,
            n_cores,
            sigmas=settings.measurement.significance_sigmas,
            min_gain_pct=settings.ladder.min_gain_pct,
        )
        scale = ScaleOut(
            width=workers,
            threads_per_worker=threads_per_worker(n_cores, workers),
            why="benchmark",
            idle_power_w=table.idle_power_w,
        )
        with candidate_runner(workers, task=train_candidate) as runner:
            # Not timed: the workers' first task run (Prefect's own start there, the data loaded), which a
            # loop pays once; the calibration counts it in the start-up it spreads over the loop's rungs.
            warm = settings.model_copy(
                update={"training": settings.training.model_copy(update={"max_epochs": 1, "patience": 1})}
            )
            warm_calls = [
                dict(
                    scenario=warm,
                    step=Step(kind=StepKind.BASELINE),
                    history=[],
                    index=i,
                    data_path=data_path,
                    work_dir=f"{tmp}/warm",
                    meter=meter_name,
                )
                for i in range(workers)
            ]
            train_rung(runner, train_candidate, warm_calls, [], NullMeter(), scale)
            t0 = time.perf_counter()
            with phase_meter.window("parallel phase") as parallel_phase:
                parallel = train_rung(runner, train_candidate, calls("parallel"), history, meter, scale)
            parallel_s = time.perf_counter() - t0
        close_shared_meters()
        phase_meter.close()

    machine_serial_j, machine_parallel_j = serial_phase.measurement.energy_j, parallel_phase.measurement.energy_j
    attributed_j = sum(c.spent_energy_j for c in parallel)
    speedup = serial_s / parallel_s
    energy_ratio = machine_parallel_j / machine_serial_j if machine_serial_j > 0 else float("nan")
    print(
        f"\n{samples} samples, {n} candidates, {workers} workers x {scale.threads_per_worker} torch threads, {n_cores} "
        f"cores, meter {meter.source}"
    )
    print("| candidate | serial train J (own) | parallel train J (attributed) | CPU share | time share | trained on |")
    print("|---|---|---|---|---|---|")
    for s, p in zip(serial, parallel, strict=True):
        tags = p.tags
        print(
            f"| {p.step.label} | {s.spent_energy_j:.2f} | {p.spent_energy_j:.2f} | "
            f"{tags.get(keys.TRAIN_ENERGY_ATTRIBUTION_CPU_SHARE, '-')} | "
            f"{tags.get(keys.TRAIN_ENERGY_ATTRIBUTION_TIME_SHARE, '-')} | pid {tags.get(keys.TRAIN_PID)} |"
        )
    print(f"training phase: serial {serial_s:.2f} s, parallel {parallel_s:.2f} s -> {speedup:.2f}x")
    print(
        f"machine reading: serial {machine_serial_j:.2f} J, parallel {machine_parallel_j:.2f} J -> {energy_ratio:.3f}; "
        f"attributed to the parallel candidates: {attributed_j:.2f} J"
    )
    print(
        f"--parallel auto: {auto.why} (calibration took {table.calibration_s:.1f} s, {table.epochs_per_job} epochs per "
        "probe candidate)"
    )
    saved_both = speedup > 1.0 and energy_ratio < 1.0
    return {
        "training_speedup": round(speedup, 3),
        "machine_energy_ratio": round(energy_ratio, 4),
        "attribution_error": round(abs(attributed_j - machine_parallel_j) / machine_parallel_j, 4)
        if machine_parallel_j > 0
        else None,
        "auto_choice": auto.width,
        "calibration_s": round(table.calibration_s, 1),
        "workers_startup_s": round(table.startup_s[workers], 2) if workers in table.startup_s else None,
        # Above a quarter of the cores, the calibration stopped and `auto` chose serial: rerun on a quiet machine.
        "calibration_busy_elsewhere_cores": round(table.busy_elsewhere_cores, 2),
        # `auto` chose parallel only if this run measured it faster and cheaper too (or chose serial).
        "auto_consistent": auto.width == 1 or saved_both,
        "serial_s": round(serial_s, 2),
        "parallel_s": round(parallel_s, 2),
        "serial_machine_energy_j": round(machine_serial_j, 3),
        "parallel_machine_energy_j": round(machine_parallel_j, 3),
        "parallel_attributed_energy_j": round(attributed_j, 3),
        "workers": workers,
        "threads_per_worker": scale.threads_per_worker,
        "energy_source": meter.source,
        "energy_estimated": meter.estimated,
    }


if __name__ == "__main__":
    sys.exit(main())
