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
    promote = sub.add_parser("promote", help="move the champion alias to a version whose recorded gates passed")
    promote.add_argument("model", help="registered model name")
    promote.add_argument("version", help="model version number")
    promote.add_argument("--force", action="store_true", help="promote even if its gates did not pass (needs --reason)")
    promote.add_argument("--reason", default="", help="why, written to the version's tags (required with --force)")
    show = sub.add_parser("status", help="print the champion and the best passing challenger with their energy figures")
    show.add_argument("model", help="registered model name")
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


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from registry.tracking import PromotionRefused, promote

    if not args.version.isdigit():
        print(f"energy-loop: error: version = {args.version!r}: expected a version number such as 3", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(promote(args.model, args.version, force=args.force, reason=args.reason, user=os.environ.get("USER", "")))
    except PromotionRefused as exc:
        print(f"energy-loop: refused: {exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    except ValueError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MlflowException as exc:
        print(f"energy-loop: error: model = {args.model!r} version = {args.version!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


FIGURES = (
    "accuracy",
    "rmse",
    "inference_energy_j_per_1k",
    "train_energy_j",
    "latency_ms_per_batch",
    "energy_source",
    "energy_estimated",
    "compression_steps",
    "payback",
)


def _status(args: argparse.Namespace) -> int:
    from registry.tracking import status

    result = status(args.model)
    if result["champion"] is None and result["challenger"] is None:
        print(f"energy-loop: error: model = {args.model!r}: no registered versions with recorded gates", file=sys.stderr)
        return EXIT_BAD_INPUT
    for role in ("champion", "challenger"):
        entry = result[role]
        if entry is None:
            print(f"{role:10s} none")
            continue
        figures = ", ".join(f"{k}={entry[k]}" for k in FIGURES if k in entry)
        print(f"{role:10s} version {entry['version']}: {figures}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "codecarbon", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers = {"run": _run, "validate": _validate, "meters": _meters, "promote": _promote, "status": _status}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
