"""`energy-loop`: run the loop, validate a scenario, list meters. Exit 0 PASSED, 1 not passed, 2 bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

EXIT_PASSED, EXIT_NOT_PASSED, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="energy-loop",
        description="Train a model, measure its energy, gate it against thresholds and escalate compression until it passes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the energy feedback loop (a Prefect flow)")
    run.add_argument("--scenario", required=True, help="thresholds YAML file, or a bundled name: dev-cpu, strict, impossible")
    run.add_argument("--dataset", required=True, help="mnist1d, digits, or a path to a .csv/.parquet file")
    run.add_argument("--target", help="target column of a CSV/Parquet dataset")
    run.add_argument("--model-name", help="registered model name (default: energy-loop-<dataset>)")
    run.add_argument("--samples", type=int, help="number of samples to use (mnist1d generates this many; default 5000)")
    run.add_argument("--task", dest="task_type", choices=["auto", "classification", "regression"], default="auto", help="task type of a file dataset")
    run.add_argument("--meter", choices=["auto", "codecarbon", "nvml", "rapl", "fixed-power", "null"], help="energy meter (default: the scenario's)")
    run.add_argument("--work-dir", default=".energy-loop", help="folder for cached data and candidate models (default .energy-loop)")
    check = sub.add_parser("validate", help="validate a scenario file and print it")
    check.add_argument("scenario")
    sub.add_parser("meters", help="list the energy meters this machine offers and which `auto` picks")
    return parser


def _run(args: argparse.Namespace) -> int:
    from tasks.data import resolve_source
    from tasks.errors import InputError
    from thresholds import scenario_path
    from thresholds.schema import load_scenario

    path = scenario_path(args.scenario)
    try:
        load_scenario(path)  # fail fast, before any server or run is started
        resolve_source(args.dataset)
        if args.samples is not None and args.samples < 20:
            raise InputError("--samples", args.samples, "an integer >= 20")
    except InputError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.energy_loop import energy_loop

    started = time.perf_counter()
    try:
        outcome = energy_loop(
            scenario=str(path),
            dataset=args.dataset,
            target=args.target,
            model_name=args.model_name,
            samples=args.samples,
            task_type=args.task_type,
            meter=args.meter,
            work_root=args.work_dir,
        )
    except InputError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print()
    print(outcome.table_md)
    print()
    print(f"{outcome.state}: {outcome.reason}")
    print(outcome.champion_reason)
    print(f"model {outcome.model_name}, versions {outcome.versions}, MLflow run {outcome.loop_run_id}, {time.perf_counter() - started:.1f} s")
    return EXIT_PASSED if outcome.state == "PASSED" else EXIT_NOT_PASSED


def _validate(args: argparse.Namespace) -> int:
    from tasks.errors import InputError
    from thresholds import scenario_path
    from thresholds.schema import load_scenario

    try:
        scenario = load_scenario(scenario_path(args.scenario))
    except InputError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(scenario.model_dump_json(indent=2))
    return 0


def _meters(_: argparse.Namespace) -> int:
    from tasks.energy.select import auto_choice, available_meters

    for name, why in available_meters().items():
        print(f"{name:12s} {why}")
    chosen, why = auto_choice()
    print(f"auto -> {chosen}: {why}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "codecarbon", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers = {"run": _run, "validate": _validate, "meters": _meters}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
