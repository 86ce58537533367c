"""Run the loop once on a scenario and print what it achieved, measured in this one run.

    python benchmarks/loop.py [--scenario dev-cpu] [--dataset mnist1d] [--samples N]

Prints a readable table, then one JSON object on the last line. Ratios compare the
candidate the loop ended on (the passing one, else the closest) with the baseline
measured in the same run, by the same meter.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)

PROCESS_STARTED = time.perf_counter()  # the command's own start: imports and server start count in `process_wall_s`


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="dev-cpu")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--model-name", default="benchmark-loop")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.prefect_api import LoopServices, api_settings

    # Where both stores exist, `energy-loop run` starts its server and tracking store before it imports the
    # libraries (flows/prefect_api.py); so does this benchmark, the same way.
    early = LoopServices.start_early()
    import mlflow  # noqa: F401  (the libraries load before the clock starts, as always; the project's own modules after)
    import prefect  # noqa: F401
    import torch  # noqa: F401

    from tasks.energy_loop.inputs import check_request, prepare_checked
    from tasks.meters.contention import max_other_share
    from thresholds import scenario_path
    from thresholds.energy.policy import closest, relative_cost
    from thresholds.energy.request import LoopRequest
    from thresholds.energy.schema import load_scenario
    from thresholds.errors import InputError

    path = scenario_path(args.scenario)
    started, started_epoch_s = time.perf_counter(), time.time()
    try:  # like the CLI: bad input is one line before the flow, not a traceback
        request = LoopRequest(
            scenario=str(path), dataset=args.dataset, samples=args.samples, model_name=args.model_name
        )
        prepare_checked(check_request(request), request)
    except InputError as exc:
        print(f"benchmarks/loop.py: error: {exc}", file=sys.stderr)
        return 2
    services = early or LoopServices()
    from flows.energy_loop import energy_loop

    with api_settings(services.ready()):
        outcome = energy_loop(request)
        wall_s = time.perf_counter() - started
        breakdown = overhead_breakdown(outcome.loop_run_id, outcome.history, started_epoch_s, wall_s)

    history = outcome.history
    baseline = history[0]
    final = history[outcome.chosen] if outcome.chosen is not None else closest(load_scenario(path), history)
    assert final is not None, "no candidate was trained"
    busy_s = sum(c.train_s + c.measure_s for c in history)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 4)

    figures = {
        "scenario": load_scenario(path).name,
        "dataset": args.dataset,
        "final_state": outcome.state,
        "final_candidate": "+".join(final.lineage) or final.step.label,
        "inference_energy_ratio": ratio(
            relative_cost(final, baseline), 1.0
        ),  # paired where measured so: what the gate judged
        "train_energy_ratio": ratio(final.train_energy_j, baseline.train_energy_j),  # as measured
        "train_energy_ratio_priced": final.train_ratio_vs_baseline,  # priced by work: what the gate judged
        "latency_ratio": ratio(final.latency_ms_per_batch, baseline.latency_ms_per_batch),
        "accuracy_delta_pt": None
        if final.accuracy is None or baseline.accuracy is None
        else round((final.accuracy - baseline.accuracy) * 100, 2),
        "baseline_accuracy": baseline.accuracy,
        "final_accuracy": final.accuracy,
        "iterations": len(history),
        "wall_s": round(wall_s, 1),
        "overhead_share": round(1 - busy_s / wall_s, 3),
        "energy_source": final.energy_source,
        "energy_estimated": final.estimated,
        "max_other_cpu_share": max_other_share(c.tags for c in history),  # above the scenario's limit: not a result
        "startup_s": round(started - PROCESS_STARTED, 1),  # imports, before the loop's wall starts (as always)
        "process_wall_s": round(time.perf_counter() - PROCESS_STARTED, 1),
        "overhead_breakdown_s": breakdown,
        # Where the loop's own energy and wall time went (tasks/energy_loop/ledger.py): loop_energy_j and its parts.
        **{k: round(v, 2) for k, v in outcome.loop_energy.items()},
        "measurement_wall_share": round(sum(c.measure_s for c in history) / wall_s, 3),
    }
    logging.getLogger("prefect").setLevel(
        logging.WARNING
    )  # the ephemeral server's shutdown line must not follow the JSON
    print(outcome.table_md)
    print()
    print(f"{outcome.state}: {outcome.reason}")
    for key, value in figures.items():
        if key != "overhead_breakdown_s":
            print(f"  {key:24s} {value}")
    print("\nWhere the wall time went (s; from the flow's Prefect task runs):")
    for key, value in figures["overhead_breakdown_s"].items():
        print(f"  {key:24s} {value}")
    emit(figures)
    return 0


# Task-run name prefixes -> the phase they belong to (a task named `train-#3-prune:0.5` is `train`).
PHASES = {
    "check_inputs": "input checks + data preparation",
    "open_loop": "logging (open loop run)",
    "idle_power": "idle power",
    "fit_batch_sizes": "batch-size fit",
    "calibrate_machine": "calibration",
    "plan_next": "policy",
    "train": "train task",
    "measure": "measure task",
    "log_candidate": "logging (candidates)",
    "confirm_full_test": "full-split confirmation",
    "deployment_hints": "batch-size sweep + payback",
    "close_loop": "logging (registration, artifacts)",
}


def overhead_breakdown(loop_run_id: str, history: list[Any], started_epoch_s: float, wall_s: float) -> dict[str, float]:
    """Seconds per phase: the server start (until the flow run started), each task kind's run time
    (training and measurement split out of their tasks), and what is left (engine, teardown)."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from registry.keys import PREFECT_FLOW_RUN_ID

    flow_run_id = MlflowClient().get_run(loop_run_id).data.tags.get(PREFECT_FLOW_RUN_ID, "")
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    out: dict[str, float] = {}
    if flow_run.start_time is not None:
        out["server start + flow run creation"] = flow_run.start_time.timestamp() - started_epoch_s
    for run in runs:
        phase = next((v for k, v in PHASES.items() if run.name.startswith(k)), "other tasks")
        out[phase] = out.get(phase, 0.0) + run.total_run_time.total_seconds()
    train_s = sum(c.train_s for c in history)
    measure_s = sum(c.measure_s for c in history)
    out["training (inside train task)"] = train_s
    out["train task setup (data load, model save)"] = out.pop("train task", train_s) - train_s
    out["inference measurement (inside measure task)"] = measure_s
    out["measure task setup (load, accuracy)"] = out.pop("measure task", measure_s) - measure_s
    out["engine + teardown (rest of wall)"] = wall_s - sum(out.values())
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    sys.exit(main())
