"""Serial vs parallel candidates, measured in one run: wall time, and whether energies agree.

    python benchmarks/parallel.py [--scenario dev-cpu] [--dataset mnist1d] [--samples 8000] [--candidates 4] [--workers 2]

Setup (not timed): the baseline and the early-stopping recipe. Then the same N candidates
(pruning ratios of the recipe, fine-tuned) are produced twice inside one Prefect flow run:

- serial:   train, then measure, one candidate after another, in process;
- parallel: train all on a local Dask cluster (`--workers` single-threaded processes through
            prefect-dask), then measure inference serially in the flow's process.

Inference energy is measured the same way in both (serially, alone on the machine), so the
two runs must agree within their spread; training energy in parallel is each worker's CPU
share of the machine-level reading. Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RATIOS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="dev-cpu")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--candidates", type=int, default=4, help=f"pruning ratios from {RATIOS}")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not 1 <= args.candidates <= len(RATIOS):
        print(f"parallel.py: error: --candidates = {args.candidates}: expected 1..{len(RATIOS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow

    @flow(name="benchmark-parallel")
    def bench() -> dict[str, Any]:
        return _compare(args.scenario, args.dataset, args.samples, args.candidates, args.workers)

    figures = bench()
    logging.getLogger("prefect").setLevel(logging.WARNING)
    print(json.dumps(figures))
    return 0


def _compare(scenario_name: str, dataset: str, samples: int, n: int, workers: int) -> dict[str, Any]:
    from tasks import data as data_mod
    from tasks.candidate import run_step
    from tasks.energy.select import close_shared_meters, make_meter, resolve_meter_name
    from tasks.parallel import candidate_runner, run_all
    from tasks.stages import measure_candidate, scenario_meter, train_candidate
    from thresholds import scenario_path
    from thresholds.energy.policy import CandidateResult, Step, StepKind
    from thresholds.energy.schema import load_scenario

    settings = load_scenario(scenario_path(scenario_name))
    meter_name = resolve_meter_name(settings.measurement.meter)
    meter = scenario_meter(settings, meter_name)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = str(data_mod.prepare(dataset, Path(tmp) / "cache", samples=samples, seed=settings.training.seed))
        history: list[CandidateResult] = []
        for step in (Step(kind=StepKind.BASELINE), Step(kind=StepKind.EARLY_STOPPING, parent=0)):
            history.append(run_step(settings, step, history, data_path, Path(tmp) / "setup", meter))
        steps = [Step(kind=StepKind.PRUNE, value=r, parent=1) for r in RATIOS[:n]]

        phases: dict[str, float] = {}
        # A second meter of the same kind for the whole phase: the candidates' own windows may use the shared one.
        phase_meter = make_meter(meter_name, settings.measurement.fixed_power_w, settings.measurement.codecarbon_country)

        def one_mode(runner: Any | None, work: str) -> tuple[list[CandidateResult], float, float]:
            calls = [
                dict(
                    scenario=settings, step=s, history=history, index=len(history) + i, data_path=data_path,
                    work_dir=str(Path(tmp) / work), meter=meter_name, shared_cpu=runner is not None,
                )
                for i, s in enumerate(steps)
            ]  # fmt: skip
            t0 = time.perf_counter()
            with phase_meter.window(f"{work} train phase") as phase:
                produced = run_all(runner, train_candidate, calls)
            train_s = time.perf_counter() - t0
            phases[work] = phase.measurement.energy_j
            measured = [measure_candidate(settings, p, data_path, meter_name, 0.0) for p in produced]
            return measured, train_s, time.perf_counter() - t0

        started = time.perf_counter()
        serial, serial_train_s, serial_s = one_mode(None, "serial")
        t0 = time.perf_counter()
        with candidate_runner(workers) as runner:
            startup_s = time.perf_counter() - t0
            par, par_train_s, par_s = one_mode(runner, "parallel")
        # Control: the serial models measured once more, serially, with no cluster: how far two
        # measurements of the same model drift apart anyway (run-to-run, not within-run, spread).
        rerun = [measure_candidate(settings, p.model_copy(update={"inference_energy_j_per_1k": None}), data_path, meter_name, 0.0) for p in serial]
        total_s = time.perf_counter() - started
        close_shared_meters()
        phase_meter.close()

    rows, agree = [], 0
    for s, p in zip(serial, par, strict=True):
        se, pe = s.inference_energy_j_per_1k or math.nan, p.inference_energy_j_per_1k or math.nan
        spread = 2 * math.hypot(s.inference_energy_sem_j_per_1k, p.inference_energy_sem_j_per_1k)
        ok = abs(se - pe) <= spread
        agree += ok
        recipe_j = history[1].train_energy_j or 0.0  # lineage energy minus the recipe's: this candidate's own pruning + fine-tuning
        own_s, own_p = (s.train_energy_j or 0.0) - recipe_j, (p.train_energy_j or 0.0) - recipe_j
        rows.append((s.step.label, se, s.inference_energy_sem_j_per_1k, pe, p.inference_energy_sem_j_per_1k, ok, own_s, own_p, s.accuracy, p.accuracy))
    print(f"\n{n} candidates, {workers} workers, meter {serial[0].energy_source} ({'estimated' if serial[0].estimated else 'measured'})")
    print("| candidate | serial J/1k | parallel J/1k | agree (2 sigma) | serial fine-tune J | parallel fine-tune J (CPU share) | accuracy s/p |")
    print("|---|---|---|---|---|---|---|")
    for label, se, ss, pe, ps, ok, st, pt, sa, pa in rows:
        print(f"| {label} | {se:.4g} ± {ss:.2g} | {pe:.4g} ± {ps:.2g} | {'yes' if ok else 'NO'} | {st:.2f} | {pt:.2f} | {sa:.4f} / {pa:.4f} |")
    print()
    print(
        f"training energy: machine reading over the parallel phase {phases['parallel']:.1f} J vs the workers' attributed sum "
        f"{sum(r[7] for r in rows):.1f} J (serial phase {phases['serial']:.1f} J)"
    )
    print(f"training phase: serial {serial_train_s:.1f} s, parallel {par_train_s:.1f} s  -> {serial_train_s / par_train_s:.2f}x")
    print(
        "inference energy, parallel vs serial: "
        f"mean {sum(r[3] / r[1] - 1 for r in rows) / len(rows):+.1%}; the same serial models measured again: "
        + ", ".join(f"{_rel(b, a):+.1%}" for a, b in zip(serial, rerun, strict=True))
    )
    print(f"train + measure: serial {serial_s:.1f} s, parallel {par_s:.1f} s  -> {serial_s / par_s:.2f}x (Dask cluster start {startup_s:.1f} s not included)")
    return {
        "candidates": n,
        "workers": workers,
        "serial_s": round(serial_s, 2),
        "parallel_s": round(par_s, 2),
        "speedup": round(serial_s / par_s, 3),
        "train_phase_speedup": round(serial_train_s / par_train_s, 3),
        "cluster_start_s": round(startup_s, 2),
        "speedup_with_cluster_start": round(serial_s / (par_s + startup_s), 3),
        "inference_energies_agree": agree,
        # Within-run standard errors miss run-to-run drift; the signed differences show whether parallel mode biases them.
        "inference_rel_diff_mean": round(sum(r[3] / r[1] - 1 for r in rows) / len(rows), 4),
        "inference_rel_diff_max": round(max(abs(r[3] / r[1] - 1) for r in rows), 4),
        "serial_rerun_rel_diff_mean": round(sum(_rel(b, a) for a, b in zip(serial, rerun, strict=True)) / len(rows), 4),
        "serial_rerun_rel_diff_max": round(max(abs(_rel(b, a)) for a, b in zip(serial, rerun, strict=True)), 4),
        "serial_train_energy_j": round(sum(r[6] or 0.0 for r in rows), 2),
        "parallel_train_energy_j": round(sum(r[7] or 0.0 for r in rows), 2),
        "parallel_phase_machine_energy_j": round(phases["parallel"], 2),
        "serial_phase_machine_energy_j": round(phases["serial"], 2),
        "energy_source": serial[0].energy_source,
        "energy_estimated": serial[0].estimated,
        "wall_s": round(total_s, 1),
    }


def _rel(b: Any, a: Any) -> float:
    """Relative difference of two candidates' measured inference energies."""
    return float(b.inference_energy_j_per_1k / a.inference_energy_j_per_1k - 1)


if __name__ == "__main__":
    sys.exit(main())
