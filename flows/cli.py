"""`energy-loop`: run the loop, validate a scenario, list meters. Exit 0 PASSED, 1 not passed, 2 bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from flows import webhook

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
    run.add_argument("--parallel", type=int, default=1, help="candidates trained at once on a local Dask cluster (default 1: in process)")
    run.add_argument("--dask-address", help="train on an existing Dask cluster at this address (e.g. tcp://host:8786) instead of a local one")
    check = sub.add_parser("validate", help="validate a scenario file and print it")
    check.add_argument("scenario")
    sub.add_parser("meters", help="list the energy meters this machine offers and which `auto` picks")
    promote = sub.add_parser("promote", help="move the champion alias to a version whose recorded gates passed")
    promote.add_argument("model", help="registered model name")
    promote.add_argument("version", help="model version number")
    promote.add_argument("--force", action="store_true", help="promote even if its gates did not pass (needs --reason)")
    promote.add_argument("--reason", default="", help="why, written to the version's tags (required with --force)")
    trigger = sub.add_parser("trigger", help="start a deployment run through the Prefect API (CI-triggered retraining)")
    trigger.add_argument("--deployment", required=True, help="FLOW/DEPLOYMENT, e.g. energy-loop/dev-cpu")
    trigger.add_argument("--param", action="append", default=[], metavar="K=V", help="flow parameter override (repeatable)")
    trigger.add_argument("--wait", action="store_true", help="stream the run's state and exit 0 only if the loop ends PASSED")
    trigger.add_argument("--poll-s", type=float, default=2.0, help="seconds between state polls (default 2)")
    show = sub.add_parser("status", help="print the champion and the best passing challenger with their energy figures")
    show.add_argument("model", help="registered model name")
    webhook.add_parser(sub)
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
        if not 1 <= args.parallel <= 64:
            raise InputError("--parallel", args.parallel, "an integer from 1 to 64 (candidates trained at once)")
    except InputError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from mlflow.exceptions import MlflowException

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
            parallel=args.parallel,
            dask_address=args.dask_address,
        )
    except InputError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        # Disk full or an unwritable artifact location: the loop ended FAILED before registering anything.
        print(f"energy-loop: FAILED: could not write {getattr(exc, 'filename', None) or 'an artifact'}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    except MlflowException as exc:
        # Tracking unreachable past the retry budget: the loop ends FAILED, nothing registered, no alias moved;
        # the next loop closes its run as orphaned.
        first = str(exc).splitlines()[0][:300]
        print(
            f"energy-loop: FAILED: the tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite')} failed past the retry budget: {first}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    return print_outcome(outcome, started)


def print_outcome(outcome: Any, started: float) -> int:
    """A finished loop's table and verdict (energy or cooling loop); its exit code."""
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


FLOW_PARAMETERS = ("scenario", "dataset", "target", "model_name", "samples", "task_type", "meter", "work_root")


def _parse_params(pairs: list[str]) -> dict[str, object]:
    """`k=v` pairs; integers stay integers. Raises ValueError naming the bad pair."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in FLOW_PARAMETERS:
            raise ValueError(f"--param = {pair!r}: expected K=V with K one of {', '.join(FLOW_PARAMETERS)}")
        params[key] = int(value) if value.isdigit() else value
    return params


def _trigger(args: argparse.Namespace) -> int:
    try:
        params = _parse_params(args.param)
    except ValueError as exc:
        print(f"energy-loop: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not os.environ.get("PREFECT_API_URL"):
        print("energy-loop: PREFECT_API_URL is not set: no server to trigger, running the flow in this process instead", file=sys.stderr)
        missing = [k for k in ("scenario", "dataset") if k not in params]
        if missing:
            print(f"energy-loop: error: --param {missing[0]}=...: expected when running in process (no deployment defaults)", file=sys.stderr)
            return EXIT_BAD_INPUT
        argv = ["run", "--scenario", str(params["scenario"]), "--dataset", str(params["dataset"])]
        for key, flag in (("target", "--target"), ("model_name", "--model-name"), ("samples", "--samples"), ("meter", "--meter")):
            if key in params:
                argv += [flag, str(params[key])]
        return main(argv)
    return _trigger_deployment(args.deployment, params, args.wait, args.poll_s)


def _trigger_deployment(deployment: str, params: dict[str, object], wait: bool, poll_s: float) -> int:
    import time as clock

    from prefect import get_client
    from prefect.deployments import run_deployment

    from registry.tracking import loop_result

    try:
        flow_run: Any = run_deployment(name=deployment, parameters=params, timeout=0)  # sync outside an event loop
    except Exception as exc:  # unknown deployment, server down: one line, not a traceback
        print(f"energy-loop: error: deployment = {deployment!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"started flow run {flow_run.name} ({flow_run.id}) of {deployment}")
    if not wait:
        return 0
    last = None
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.name != last:
                last = state.name
                print(f"  {clock.strftime('%H:%M:%S')} {state.name}" + (f": {state.message}" if state.message else ""), flush=True)
            if state is not None and state.is_final():
                break
            clock.sleep(poll_s)
    if not state.is_completed():
        print(f"energy-loop: flow run ended {state.name}: {state.message or 'no message'}", file=sys.stderr)
        return EXIT_NOT_PASSED
    result = loop_result(str(flow_run.id))
    if result is None:
        print("energy-loop: the flow run completed but no loop run was found in MLflow (is MLFLOW_TRACKING_URI the worker's?)", file=sys.stderr)
        return EXIT_NOT_PASSED
    loop_state, reason = result
    print(f"{loop_state}: {reason}")
    return EXIT_PASSED if loop_state == "PASSED" else EXIT_NOT_PASSED


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
    # Retry budget for a tracking server that goes away: MLflow's client retries connection errors
    # and 5xx with exponential backoff (never 4xx validation errors). ~1+2+4+8 s, then the command fails.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    handlers = {"run": _run, "validate": _validate, "meters": _meters, "promote": _promote, "status": _status, "trigger": _trigger, "webhook": webhook.main}
    from mlflow.exceptions import MlflowException

    try:
        return handlers[args.command](args)
    except MlflowException as exc:
        # Unreachable or refusing tracking server (e.g. 401 without MLFLOW_TRACKING_USERNAME/PASSWORD): one line, exit 1.
        first = str(exc).splitlines()[0][:300]
        print(f"energy-loop: error: tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}: {first}", file=sys.stderr)
        return EXIT_NOT_PASSED


if __name__ == "__main__":
    sys.exit(main())
