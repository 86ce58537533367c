"""`energy-loop serve`: a registered version over HTTP that measures its own energy, latency and quality."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flows.cli.common import EXIT_BAD_INPUT, is_interrupt

API_KEY_ENV = "ENERGY_LOOP_API_KEY"


def add_parsers(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a registered version over HTTP (a drop-in for `mlflow models serve`), measuring its energy, "
        "latency and quality, and following its alias",
    )
    serve.add_argument("model", help="NAME@ALIAS (follows the alias), NAME/VERSION, or NAME (follows its champion)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000, as mlflow models serve)")
    serve.add_argument(
        "--meter", default=None, help="energy meter: auto, codecarbon, rapl, nvml, fixed-power (default: the version's)"
    )
    serve.add_argument("--interval-s", type=float, default=30.0, help="seconds per reporting window (default 30)")
    serve.add_argument("--poll-s", type=float, default=10.0, help="seconds between checks of the alias (default 10)")
    serve.add_argument(
        "--api-key",
        default=None,
        help=f"bearer token every request but /ping, /health, /version must carry (or ${API_KEY_ENV})",
    )
    serve.add_argument(
        "--feedback-dir", default=None, help="append labelled rows here as Parquet parts (a dataset folder)"
    )
    serve.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body in MiB (default 16)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="requests scored at once, as threads of this process (default 1: each scored at the torch threads the "
        "version was measured at; one process keeps request ids, swaps and energy windows in one place)",
    )
    serve.add_argument(
        "--idle-window-s",
        type=float,
        default=2.0,
        help="seconds the machine's idle power is measured at start, to count energy above it as the loop does "
        "(default 2; 0: count the whole draw)",
    )
    serve.add_argument(
        "--telemetry",
        choices=("on", "off"),
        default="on",
        help="off: no energy windows, counters or request ids (to measure what the measurement costs)",
    )
    serve.add_argument(
        "--scenario",
        default=None,
        help="scenario whose production: block judges the windows (default: the version's own scenario; "
        "none: not judged)",
    )
    serve.set_defaults(handler=serve_command, stopped="stopped serving")


def _production_watch(args: argparse.Namespace, mc: Any, name: str, version: Any, task: str) -> Any:
    """The judgement of the windows against the scenario's production block (None without one). A scenario named
    on the command line that is not valid raises InputError; the version's own, if it cannot be read, is skipped."""
    from registry import keys, mlflow_model
    from tasks.energy_loop.keys import DATASET, PRODUCTION_RETRAIN_FOR, TARGET
    from tasks.serving.watch import Watch
    from thresholds import scenario_path
    from thresholds.energy.production import BREACH_EVENT, Verdict, retrain_request
    from thresholds.energy.schema import load_scenario
    from thresholds.errors import InputError

    try:
        scenario = load_scenario(scenario_path(args.scenario or dict(version.tags).get(keys.SCENARIO_SOURCE, "")))
    except InputError:
        if args.scenario:
            raise
        return None
    production = scenario.production
    if production is None:
        return None
    target = scenario.targets.min_accuracy if task == "classification" else scenario.targets.max_rmse

    def announce(verdict: Verdict, payload: dict[str, Any]) -> None:
        from datetime import UTC, datetime

        from prefect.events import emit_event

        at = datetime.now(UTC).isoformat(timespec="seconds")
        # Where a retrain starts (the automation of prefect.yaml renders it into the triggered run's request, with
        # the batch sizes serving observed): the version's scenario and data, its feedback, a stricter scenario.
        tags = dict(mc.get_model_version(name, payload["version"]).tags)
        version_of = {"scenario": tags.get(keys.SCENARIO_SOURCE), "dataset": tags.get(DATASET),
                      "target": tags.get(TARGET), "retrained_for": tags.get(PRODUCTION_RETRAIN_FOR)}  # fmt: skip
        missed = [m["figure"] for m in payload["misses"]]
        retrain = retrain_request(production, version_of, missed, _feedback_parts(args.feedback_dir))
        payload["request"] = {"scenario": retrain.scenario, "dataset": retrain.dataset, "target": retrain.target,
                              "production_breach": retrain.production_breach, "why": retrain.why}  # fmt: skip
        resource = {"prefect.resource.id": f"energy-loop.model.{name}", "prefect.resource.name": name,
                    "energy-loop.version": payload["version"],
                    "energy-loop.retrain": str("retrain" in production.on_breach).lower()}  # fmt: skip
        sent = emit_event(event=verdict.event, resource=resource, payload=payload)
        breach = verdict.event == BREACH_EVENT
        key = keys.PRODUCTION_LAST_BREACH if breach else keys.PRODUCTION_LAST_RECOVERY
        mlflow_model.record_production_event(mc, name, payload["version"], key, {"at": at, **payload})
        misses = "; ".join(f"{m['figure']} {m['value']:.4g} > limit {m['limit']:.4g}" for m in payload["misses"])
        print(f"{at} {verdict.event}: {name} version {payload['version']}" + (f": {misses}" if misses else "")
              + ("" if sent else " (no Prefect API: the event was not sent)"), file=sys.stderr, flush=True)  # fmt: skip

    if "energy" in production.judge and production.max_energy_j_per_1k is None:
        print("production: energy is not judged: set production.max_energy_j_per_1k (the loop's own figure counts "
              "the model alone, not what serving a request costs)", file=sys.stderr)  # fmt: skip
    if production.stricter:
        load_scenario(scenario_path(production.stricter))  # one that cannot be read: one line, exit 2, before serving
    return Watch(production, task, target, announce)  # a limit the task does not have: one line, exit 2


def _feedback_parts(folder: str | None) -> str | None:
    """The feedback folder as a retrain's dataset (absolute: the worker's working directory is not this one), once it
    holds a labelled part; None before."""
    if not folder or not any(Path(folder).glob("part-*.parquet")):
        return None
    return str(Path(folder).resolve())


def _bad(args: argparse.Namespace, message: str) -> int:
    print(f"{args.prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def serve_command(args: argparse.Namespace) -> int:
    """Load the version, start the threads, serve until SIGTERM or Ctrl-C, write the last window, exit 0."""
    import time

    import uvicorn

    from registry import mlflow_model
    from registry.store import client
    from tasks.meters.select import make_meter
    from tasks.meters.share import ProcessShareMeter
    from tasks.models.evaluate import measure_idle_power_w
    from tasks.serving import feedback, server, telemetry
    from tasks.serving.scorer import meter_setting
    from thresholds.errors import InputError

    for name, value, low in (("--interval-s", args.interval_s, 0.1), ("--poll-s", args.poll_s, 0.1),
                             ("--max-body-mb", args.max_body_mb, 0.001), ("--workers", args.workers, 1),
                             ("--idle-window-s", args.idle_window_s, 0.0)):  # fmt: skip
        if not value >= low:
            return _bad(args, f"{name} = {value}: expected a number >= {low}")
    if not 0 < args.port < 65536:
        return _bad(args, f"--port = {args.port}: expected an integer from 1 to 65535")
    mc = client()
    name, ref = mlflow_model.parse_ref(args.model)
    try:
        version = mlflow_model.resolve_version(mc, name, ref)
    except LookupError as exc:
        return _bad(args, str(exc))

    def resolve() -> tuple[str, str]:
        found = mlflow_model.resolve_version(mc, name, ref)
        return str(found.version), str(found.run_id)

    def load(number: str) -> Any:
        return mlflow_model.load_pyfunc(mc, name, number)

    steps = {"n": 0}

    def log_window(run_id: str, figures: telemetry.WindowFigures) -> None:
        steps["n"] += 1
        mlflow_model.log_observed_window(
            mc, run_id, figures.metrics(), figures.tags(), int(time.time() * 1000), steps["n"]
        )

    try:
        pyfunc = load(str(version.version))
        served = server.Served(str(version.version), pyfunc, str(version.run_id))
        server.check_answers(served)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        return _bad(args, f"model = {args.model!r}: version {version.version} cannot be served ({first})")
    tags = dict(version.tags)
    meter_name, power_w = meter_setting(tags)
    machine_meter = make_meter(args.meter or meter_name, power_w)
    measuring = args.telemetry == "on"
    idle_power_w = measure_idle_power_w(machine_meter, args.idle_window_s) if measuring and args.idle_window_s else 0.0
    meter = ProcessShareMeter(machine_meter)
    scorer = served.scorer
    settings = server.Settings(
        reference=args.model,
        alias=ref[1:] if ref.startswith("@") else None,
        interval_s=args.interval_s,
        poll_s=args.poll_s,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        feedback_dir=Path(args.feedback_dir) if args.feedback_dir else None,
        workers=args.workers,
        telemetry=measuring,
    )
    metric = "accuracy" if scorer.input.task == "classification" else "rmse"
    try:
        watch = _production_watch(args, mc, name, version, scorer.input.task)
    except InputError as exc:
        return _bad(args, str(exc))
    state = server.ServerState(
        settings=settings,
        registry=server.Registry(resolve, load, log_window),
        served=served,
        energy=server.EnergyWindows(meter, idle_power_w),
        feedback=feedback.Feedback(scorer.input.task, list(scorer.input.class_labels), settings.feedback_dir),
        exposition=telemetry.Exposition(name, metric),
        watch=watch,
    )
    state.exposition.served(served.version)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    print(
        f"serving {name} version {served.version}"
        + (f" (following @{settings.alias})" if settings.alias else "")
        + f" on http://{args.host}:{args.port}, "
        + (f"judged by {watch.production.judge} every window, " if watch else "")
        + (
            f"meter {meter.source} (above {idle_power_w:.1f} W idle), a window every {args.interval_s:g} s"
            if measuring
            else "telemetry off"
        ),
        file=sys.stderr,
        flush=True,
    )
    state.run_background()
    config = uvicorn.Config(
        server.create_app(state), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30
    )
    try:
        # SIGTERM / Ctrl-C: uvicorn stops accepting, finishes the requests in flight, then raises the signal again
        # for the command's own handler; for `serve` that is the end it was asked for, not an interruption.
        uvicorn.Server(config).run()
    except BaseException as exc:
        if not is_interrupt(exc):
            raise
    finally:
        last = state.stop()
        meter.close()
    print(
        "stopped serving" + (f": last window {last.requests} requests, {last.rows} rows" if last else ""),
        file=sys.stderr,
    )
    return 0
