"""`energy-loop`: one command for both pipelines. Exit 0 PASSED, 1 not passed, 2 bad input (one line).

    energy-loop run|validate|meters|promote|status|trigger ...    the energy loop
    energy-loop cooling run|validate ...                          the cooling agent (`energy-cooling` is an alias)
    energy-loop webhook serve|register ...                        the champion guard (MLflow registry webhooks)

A subcommand is a parser plus its handler (`set_defaults(handler=...)`); every loop runs through
`run_loop`, the one error path.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from flows.prefect_api import LoopServices, api_settings

EXIT_PASSED, EXIT_NOT_PASSED, EXIT_BAD_INPUT = 0, 1, 2


def _parser(prog: str = "energy-loop") -> argparse.ArgumentParser:
    from thresholds.core import METER_NAMES

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a model, measure its energy, gate it against thresholds and escalate compression "
        "until it passes.",
    )
    parser.set_defaults(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the energy feedback loop (a Prefect flow)")
    run.add_argument(
        "--scenario", required=True, help="thresholds YAML file, or a bundled name: dev-cpu, strict, impossible"
    )
    run.add_argument(
        "--dataset",
        required=True,
        help="mnist1d, digits, ..., a .csv/.parquet file, an image folder (one subfolder per class, PNG/JPEG), "
        "or PKG.MODULE:FUNCTION returning the splits (see tasks/data/user_data.py)",
    )
    run.add_argument(
        "--model",
        help="your model: PKG.MODULE:FACTORY, called as FACTORY(input_shape=(...), n_outputs=K) (sets model.factory)",
    )
    run.add_argument(
        "--loss", help="your loss: PKG.MODULE:FUNCTION, (outputs, targets) -> scalar tensor (sets model.loss)"
    )
    run.add_argument(
        "--metric",
        help="your quality metric: PKG.MODULE:FUNCTION, (outputs, targets) -> float in [0, 1], higher is better "
        "(sets model.metric)",
    )
    run.add_argument(
        "--train-step",
        help="your training step: PKG.MODULE:FUNCTION, (model, batch as items) -> scalar loss tensor (sets "
        "model.train_step)",
    )
    run.add_argument(
        "--image-size",
        help="HxW: resize every image of an image folder to this size (mixed sizes are refused without it)",
    )
    run.add_argument(
        "--image-cache",
        choices=("memory", "stream", "auto"),
        default="auto",
        help="an image folder's decoded tensors: pre-cached in memory, or decoded on the fly by DataLoader workers "
        "(stream); auto (default): memory when the folder as float32 fits in a quarter of RAM",
    )
    run.add_argument("--target", help="target column of a CSV/Parquet dataset")
    run.add_argument("--model-name", help="registered model name (default: energy-loop-<dataset>)")
    run.add_argument("--samples", type=int, help="number of samples to use (mnist1d generates this many; default 5000)")
    run.add_argument(
        "--task",
        dest="task_type",
        choices=["auto", "classification", "regression"],
        default="auto",
        help="task type of a file dataset",
    )
    run.add_argument("--meter", choices=METER_NAMES, help="energy meter (default: the scenario's)")
    run.add_argument(
        "--work-dir", default=".energy-loop", help="folder for cached data and candidate models (default .energy-loop)"
    )
    run.add_argument(
        "--parallel",
        default="auto",
        help="candidates of a rung trained at once on Dask workers: auto (default): only where the parallel "
        "calibration, real rungs of this workload through the loop's own task path, measured it saving both wall time "
        "and energy beyond the noise here; N to force N (1: serial, in process)",
    )
    run.add_argument(
        "--dask-address",
        help="train on an existing Dask cluster at this address (e.g. tcp://host:8786) instead of a local one",
    )
    _verbose(run)
    run.set_defaults(handler=_run, loop_console=True)  # flows/console.py: progress, table, verdict
    check = sub.add_parser("validate", help="validate a scenario file and print it")
    check.add_argument("scenario")
    check.set_defaults(handler=_validate)
    sub.add_parser("meters", help="list the energy meters this machine offers and which `auto` picks").set_defaults(
        handler=_meters
    )
    promote = sub.add_parser("promote", help="move the champion alias to a version whose recorded gates passed")
    promote.add_argument("model", help="registered model name")
    promote.add_argument("version", help="model version number")
    promote.add_argument("--force", action="store_true", help="promote even if its gates did not pass (needs --reason)")
    promote.add_argument("--reason", default="", help="why, written to the version's tags (required with --force)")
    promote.set_defaults(handler=_promote)
    trigger = sub.add_parser("trigger", help="start a deployment run through the Prefect API (CI-triggered retraining)")
    trigger.add_argument("--deployment", required=True, help="FLOW/DEPLOYMENT, e.g. energy-loop/dev-cpu")
    trigger.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="flow parameter override (repeatable)"
    )
    trigger.add_argument(
        "--wait", action="store_true", help="stream the run's state and exit 0 only if the loop ends PASSED"
    )
    trigger.add_argument("--poll-s", type=float, default=2.0, help="seconds between state polls (default 2)")
    _verbose(trigger)
    trigger.set_defaults(handler=_trigger)
    show = sub.add_parser("status", help="print the champion and the best passing challenger with their energy figures")
    show.add_argument("model", help="registered model name")
    show.set_defaults(handler=_status)
    _cooling_parsers(
        sub.add_parser("cooling", help="the cooling agent's pipeline (train, gate, register a DQN)"), METER_NAMES
    )
    score = sub.add_parser(
        "predict",
        help="batch-score a CSV/Parquet file or an image folder with a registered version, measuring its energy",
    )
    score.add_argument("model", help="NAME@ALIAS, NAME/VERSION, or NAME (its champion)")
    score.add_argument(
        "--input",
        required=True,
        help="a .csv or .parquet file with the model's input columns, or a folder of images for an image model",
    )
    score.add_argument("--output", required=True, help="where to write the predictions (.csv or .parquet)")
    score.add_argument(
        "--batch-size", type=int, help="rows per batch (default: the version's deployment.energy_optimal_batch_size)"
    )
    score.set_defaults(handler=_predict)
    _webhook_parsers(
        sub.add_parser(
            "webhook", help="guard the champion alias: the receiver of MLflow registry webhooks, and its registration"
        )
    )
    return parser


def _verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--verbose",
        action="store_true",
        help="also show every log line (Prefect's engine, MLflow, CodeCarbon, training epochs) and the traceback "
        "behind an error",
    )


def _cooling_parsers(cooling: argparse.ArgumentParser, meter_names: tuple[str, ...]) -> None:
    sub = cooling.add_subparsers(dest="cooling_command", required=True)
    run = sub.add_parser("run", help="run the cooling loop (a Prefect flow)")
    run.add_argument(
        "--scenario", required=True, help="cooling-room, cooling-seed, or a path to a thresholds YAML file"
    )
    run.add_argument("--env", choices=["seed", "room"], help="environment (default: the scenario's)")
    run.add_argument("--months", type=int, help="evaluation period in 30-day months (default: the scenario's)")
    run.add_argument("--days", type=int, help="evaluation period in days (short runs)")
    run.add_argument("--meter", choices=meter_names, help="energy meter (default: the scenario's)")
    run.add_argument("--work-dir", default=".energy-loop", help="folder for agents and plots (default .energy-loop)")
    _verbose(run)
    run.set_defaults(handler=_cooling_run, loop_console=True)  # flows/console.py: progress, table, verdict
    check = sub.add_parser("validate", help="validate a cooling scenario file and print it")
    check.add_argument("scenario")
    check.set_defaults(handler=_cooling_validate)


def _webhook_parsers(hook: argparse.ArgumentParser) -> None:
    from flows.webhook import PATH, SECRET_ENV, WEBHOOK_NAME

    sub = hook.add_subparsers(dest="webhook_command", required=True)
    serve = sub.add_parser("serve", help=f"run the receiver (FastAPI; secret from {SECRET_ENV})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.set_defaults(handler=_webhook_serve)
    register = sub.add_parser(
        "register", help=f"create or update the alias webhook on the MLflow server (secret from {SECRET_ENV})"
    )
    register.add_argument(
        "--url", required=True, help=f"the receiver as the MLflow server reaches it, e.g. http://127.0.0.1:8765{PATH}"
    )
    register.add_argument(
        "--name", default=WEBHOOK_NAME, help=f"webhook name; an existing one is updated (default {WEBHOOK_NAME})"
    )
    register.add_argument("--no-test", dest="test", action="store_false", help="skip the signed test delivery")
    register.set_defaults(handler=_webhook_register)


def _run(args: argparse.Namespace) -> int:
    from tasks.energy_loop.inputs import check_arguments
    from thresholds import scenario_path
    from thresholds.errors import InputError

    early = (
        LoopServices.start_early()
    )  # only where starting them creates nothing: they boot while the inputs are checked
    path = scenario_path(args.scenario)
    parallel = args.parallel
    try:  # fail fast, before any run is started
        hooks = {"loss": args.loss, "metric": args.metric, "train_step": args.train_step}
        settings = check_arguments(
            str(path), args.dataset, args.samples, args.image_size, parallel, args.model, hooks, args.image_cache
        )
        code = _prepare_data(args, settings)
    except InputError as exc:
        code = bad_input(args.prog, exc)
    if code is not None:
        if early is not None:
            early.stop()
        return code
    # Otherwise only once every input passed (bad input writes nothing, not even Prefect's home): they boot while the
    # flow is imported.
    services = early or LoopServices()
    from flows.energy_loop import energy_loop

    return run_loop(
        args.prog,
        services,
        lambda: energy_loop(
            scenario=str(path),
            dataset=args.dataset,
            target=args.target,
            model_name=args.model_name,
            samples=args.samples,
            task_type=args.task_type,
            meter=args.meter,
            work_root=args.work_dir,
            parallel=parallel,
            dask_address=args.dask_address,
            model_factory=args.model,
            image_size=args.image_size,
            model_loss=args.loss,
            model_metric=args.metric,
            model_train_step=args.train_step,
            image_cache=args.image_cache,
        ),
    )


def run_loop(prog: str, services: LoopServices, loop: Callable[[], Any]) -> int:
    """Run a pipeline's flow once its Prefect API and tracking store are ready (flows/prefect_api.py):
    the one error path of every loop command. Its table and verdict, or one line."""
    from mlflow.exceptions import MlflowException

    from flows import console
    from thresholds.errors import InputError

    started = time.perf_counter()
    try:
        url = services.ready()
    except RuntimeError as exc:
        print(f"{prog}: FAILED: {exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    try:
        try:
            with api_settings(url):
                outcome = loop()
        finally:
            console.end_line()
    except InputError as exc:
        return bad_input(prog, exc)
    except OSError as exc:
        # Disk full or an unwritable artifact location: the loop ended FAILED before registering anything.
        print(
            f"{prog}: FAILED: could not write {getattr(exc, 'filename', None) or 'an artifact'}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    except MlflowException as exc:
        # Tracking unreachable past the retry budget: the loop ends FAILED, nothing registered, no alias moved;
        # the next loop closes its run as orphaned.
        first = str(exc).splitlines()[0][:300]
        print(
            f"{prog}: FAILED: the tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite')} failed past "
            f"the retry budget: {first}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    return print_outcome(outcome, started)


def _cooling_run(args: argparse.Namespace) -> int:
    from tasks.cooling.inputs import check_arguments
    from thresholds.errors import InputError

    early = LoopServices.start_early()  # see _run
    try:
        check_arguments(
            args.scenario, args.env, args.months, args.days, args.meter
        )  # fail fast, before any run is opened
    except InputError as exc:
        if early is not None:
            early.stop()
        return bad_input(args.prog, exc)
    services = early or LoopServices()  # boots while the flow is imported
    from flows.cooling import cooling_loop

    return run_loop(
        args.prog,
        services,
        lambda: cooling_loop(
            scenario=args.scenario,
            env=args.env,
            months=args.months,
            days=args.days,
            meter=args.meter,
            work_root=args.work_dir,
        ),
    )


def _cooling_validate(args: argparse.Namespace) -> int:
    from thresholds.cooling.schema import load

    return _show_scenario(args.prog, lambda: load(args.scenario))


def bad_input(prog: str, exc: Exception) -> int:
    """Bad input: one line naming the field, the value and what was expected; exit 2."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _show_scenario(prog: str, load: Callable[[], Any]) -> int:
    """Validate a scenario and print it as JSON, or say in one line what is wrong with it."""
    from thresholds.errors import InputError

    try:
        scenario = load()
    except InputError as exc:
        return bad_input(prog, exc)
    print(scenario.model_dump_json(indent=2))
    return 0


def _prepare_data(args: argparse.Namespace, settings: Any) -> int | None:
    """Validate and preprocess the data, and try the model factory, before the flow starts (the flow reuses
    the cached result), so a data error is one line and never a flow traceback. Prints what preparing did;
    an exit code on error."""
    import traceback
    from pathlib import Path

    from tasks.energy_loop.inputs import prepare_checked
    from tasks.models.evaluate import resolve_quality_metric
    from thresholds.errors import InputError

    try:
        work = Path(args.work_dir) / "cache"
        prepared = prepare_checked(
            settings, args.dataset, work, args.target, args.samples, args.task_type, args.image_size, args.image_cache
        )
    except (InputError, OSError) as exc:  # one line; --verbose adds the traceback
        if args.verbose:
            traceback.print_exc()
        if isinstance(exc, InputError):
            return bad_input(args.prog, exc)
        print(
            f"{args.prog}: error: could not write the data cache in {args.work_dir}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    data = prepared.data
    rows = len(data.y_train) + len(data.y_val) + len(data.y_test)
    inputs = f"samples of shape {data.input_shape}" if data.sample_shape else f"{data.n_features} model inputs"
    print(
        f"Data {data.name}: {rows} rows, {inputs}, {data.task}"
        + (f", {data.n_classes} classes" if data.task == "classification" else "")
    )
    for note in data.notes:
        print(f"  - {note}")
    if data.task == "classification" or settings.model.metric:
        metric, why = resolve_quality_metric(settings.targets.quality_metric, data, settings.model.metric)
        print(f"  - quality metric: {metric} ({why})")
    if prepared.model:
        print(f"Model {settings.model.factory}: {prepared.model}")
    for hook, value in settings.model.hooks.items():
        if hook != "metric":  # named on the quality metric's line
            print(f"  - {hook}: {value}")
    return None


def print_outcome(outcome: Any, started: float) -> int:
    """A finished loop's table and verdict (energy or cooling loop); its exit code."""
    print()
    print(outcome.table_md)
    print()
    print(f"{outcome.state}: {outcome.reason}")
    print(outcome.champion_reason)
    print(
        f"model {outcome.model_name}, versions {outcome.versions}, MLflow run {outcome.loop_run_id}, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return EXIT_PASSED if outcome.state == "PASSED" else EXIT_NOT_PASSED


def _validate(args: argparse.Namespace) -> int:
    from thresholds import scenario_path
    from thresholds.energy.schema import load_scenario

    return _show_scenario(args.prog, lambda: load_scenario(scenario_path(args.scenario)))


def _meters(_: argparse.Namespace) -> int:
    from tasks.meters.select import auto_choice, available_meters

    for name, why in available_meters().items():
        print(f"{name:12s} {why}")
    chosen, why = auto_choice()
    print(f"auto -> {chosen}: {why}")
    return 0


def _webhook_serve(args: argparse.Namespace) -> int:
    from flows.webhook import check_port, read_secret, serve

    try:
        secret, port = read_secret(), check_port(args.port)
    except ValueError as exc:
        return bad_input(args.prog, exc)
    return serve(secret, args.host, port)


def _webhook_register(args: argparse.Namespace) -> int:
    from flows.webhook import check_registration, read_secret, register

    try:
        secret = read_secret()
        check_registration(args.url)
    except ValueError as exc:
        return bad_input(args.prog, exc)
    return register(secret, args.url, args.name, args.test)


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from registry.core import PromotionRefused, promote

    if not args.version.isdigit():
        print(f"energy-loop: error: version = {args.version!r}: expected a version number such as 3", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(promote(args.model, args.version, force=args.force, reason=args.reason, user=os.environ.get("USER", "")))
    except PromotionRefused as exc:
        print(f"energy-loop: refused: {exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    except ValueError as exc:
        return bad_input("energy-loop", exc)
    except MlflowException as exc:
        print(
            f"energy-loop: error: model = {args.model!r} version = {args.version!r}: {str(exc).splitlines()[0]}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return 0


FLOW_PARAMETERS = (
    *(
        "scenario",
        "dataset",
        "target",
        "model_name",
        "samples",
        "task_type",
        "meter",
        "work_root",
        "model_factory",
        "image_size",
    ),
    *("model_loss", "model_metric", "model_train_step", "image_cache"),
    *("env", "months", "days"),
)  # both flows


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
    from tasks.energy_loop.inputs import check_overrides

    try:
        params = _parse_params(args.param)
        check_overrides(params)  # what this client can check; the flow run's first task checks the rest
    except ValueError as exc:
        return bad_input("energy-loop", exc)
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "energy-loop: PREFECT_API_URL is not set: no server to trigger, running the flow in this process instead",
            file=sys.stderr,
        )
        missing = [k for k in ("scenario", "dataset") if k not in params]
        if missing:
            print(
                f"energy-loop: error: --param {missing[0]}=...: expected when running in process (no "
                "deployment defaults)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        argv = ["run", "--scenario", str(params["scenario"]), "--dataset", str(params["dataset"])]
        flags = (
            ("target", "--target"),
            ("model_name", "--model-name"),
            ("samples", "--samples"),
            ("meter", "--meter"),
            ("model_factory", "--model"),
        )
        hooks = (("model_loss", "--loss"), ("model_metric", "--metric"), ("model_train_step", "--train-step"))
        for key, flag in (*flags, ("image_size", "--image-size"), ("image_cache", "--image-cache"), *hooks):
            if key in params:
                argv += [flag, str(params[key])]
        return main([*argv, "--verbose"] if args.verbose else argv)
    return _trigger_deployment(args.deployment, params, args.wait, args.poll_s)


def _trigger_deployment(deployment: str, params: dict[str, object], wait: bool, poll_s: float) -> int:
    import time as clock

    from prefect import get_client
    from prefect.deployments import run_deployment

    from registry.core import loop_result
    from thresholds.errors import INVALID_INPUT

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
                print(
                    f"  {clock.strftime('%H:%M:%S')} {state.name}" + (f": {state.message}" if state.message else ""),
                    flush=True,
                )
            if state is not None and state.is_final():
                break
            clock.sleep(poll_s)
    if state.name == INVALID_INPUT:  # its first task refused a parameter: the one line, as `run` says it
        print(f"energy-loop: error: {state.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not state.is_completed():
        print(f"energy-loop: flow run ended {state.name}: {state.message or 'no message'}", file=sys.stderr)
        return EXIT_NOT_PASSED
    result = loop_result(str(flow_run.id))
    if result is None:
        print(
            "energy-loop: the flow run completed but no loop run was found in MLflow (is MLFLOW_TRACKING_URI "
            "the worker's?)",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    loop_state, reason = result
    print(f"{loop_state}: {reason}")
    return EXIT_PASSED if loop_state == "PASSED" else EXIT_NOT_PASSED


FIGURES = (
    "accuracy",
    "rmse",
    "inference_energy_j_per_1k",
    "observed.inference_energy_j_per_1k",
    "train_energy_j",
    "latency_ms_per_batch",
    "energy_source",
    "energy_estimated",
    "compression_steps",
    "payback",
)


def _status(args: argparse.Namespace) -> int:
    from registry.core import status

    result = status(args.model)
    if result["champion"] is None and result["challenger"] is None:
        print(
            f"energy-loop: error: model = {args.model!r}: no registered versions with recorded gates", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    for role in ("champion", "challenger"):
        entry = result[role]
        if entry is None:
            print(f"{role:10s} none")
            continue
        figures = ", ".join(f"{k}={entry[k]}" for k in FIGURES if k in entry)
        print(f"{role:10s} version {entry['version']}: {figures}")
    return 0


DEFAULT_PREDICT_BATCH = 1024


def _predict(args: argparse.Namespace) -> int:
    """Score a table at the version's energy-optimal batch size; log the energy it measured to the version."""
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from registry import mlflow_model
    from registry.store import client
    from tasks.meters.select import make_meter
    from tasks.serving import scorer as serving
    from thresholds.errors import InputError

    def bad(message: str) -> int:
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    source, target = Path(args.input), Path(args.output)
    if args.batch_size is not None and args.batch_size < 1:
        return bad(f"--batch-size = {args.batch_size}: expected an integer >= 1")
    images = source.is_dir()  # an image folder for an image model: decoded once the version's recorded size is known
    try:
        serving.check_output_path(target)
        frame = None if images else serving.read_table(source)
    except InputError as exc:
        return bad(str(exc))
    mc = client()
    name, ref = mlflow_model.parse_ref(args.model)
    try:
        version = mlflow_model.resolve_version(mc, name, ref)
    except LookupError as exc:
        return bad(str(exc))
    tags = dict(version.tags)
    recorded = tags.get(mlflow_model.BATCH_SIZE_TAG, "")
    batch_size = args.batch_size or (int(recorded) if recorded.isdigit() else DEFAULT_PREDICT_BATCH)
    pyfunc = mlflow_model.load_pyfunc(mc, name, str(version.version))
    scorer = pyfunc.unwrap_python_model().scorer
    try:
        if frame is None:
            rows = serving.images_to_score(source, scorer, batch_size)  # decoded chunk by chunk while scoring
        else:
            scorer.check(frame, where=f"input {source}")
            rows = serving.table_to_score(frame)
    except InputError as exc:
        return bad(str(exc))
    meter_name, power_w = serving.meter_setting(tags)
    meter = make_meter(meter_name, power_w)
    why = (
        "recorded energy-optimal"
        if args.batch_size is None and recorded.isdigit()
        else "given"
        if args.batch_size
        else "default"
    )
    print(
        f"scoring {rows.rows} rows with {name} version {version.version} at batch size {batch_size} ({why}), meter "
        f"{meter.source}",
        file=sys.stderr,
    )

    def progress(done: int) -> None:
        filled = 30 * done // rows.rows
        end = "\n" if done == rows.rows else ""
        print(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done}/{rows.rows} rows", end=end, file=sys.stderr, flush=True
        )

    check = (
        None if frame is not None else functools.partial(scorer.check, where=f"input {source}")
    )  # a table was checked whole, above
    try:
        predictions, report = serving.score(pyfunc.predict, rows, batch_size, meter, progress, check)
    except MlflowException as exc:  # the signature refused a value (e.g. a fraction in an integer column)
        print(file=sys.stderr)
        return bad(f"input {source}: {str(exc).splitlines()[0][:300]}")
    except InputError as exc:  # an image that breaks mid-stream: named, and nothing is written
        print(file=sys.stderr)
        return bad(str(exc))
    finally:
        meter.close()
    if rows.files is not None:
        predictions.insert(0, serving.FILE_COLUMN, rows.files)
    try:
        serving.write_table(predictions, target)
    except OSError as exc:
        print(f"{args.prog}: FAILED: could not write {target}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    details = {
        "rows": str(report.rows),
        "batch_size": str(report.batch_size),
        "energy_source": report.source,
        "energy_estimated": str(report.estimated).lower(),
        "duration_s": f"{report.duration_s:.4g}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mlflow_model.record_observed(mc, name, str(version.version), report.energy_j_per_1k, details)
    loop = tags.get("inference_energy_j_per_1k", "not recorded")
    label = "estimated" if report.estimated else "measured"
    print(f"wrote {report.rows} predictions to {target} in {report.duration_s:.2f} s")
    print(
        f"energy: {report.energy_j_per_1k:.6g} J per 1k predictions ({label}, {report.source}); the loop measured "
        f"{loop} J per 1k"
    )
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "energy-loop") -> int:
    args = _parser(prog).parse_args(argv)
    # Retry budget for a tracking server that goes away: MLflow's client retries connection errors
    # and 5xx with exponential backoff (never 4xx validation errors). ~1+2+4+8 s, then the command fails.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault(
        "PREFECT_SERVER_ANALYTICS_ENABLED", "false"
    )  # before any Prefect server starts: it reads this
    from mlflow.exceptions import MlflowException

    if getattr(args, "loop_console", False):  # the loop: progress, table and verdict; --verbose adds every log line
        from flows import console

        logs: contextlib.AbstractContextManager[object] = console.session(args.verbose)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for noisy in ("httpx", "codecarbon", "alembic", "mlflow.store.db.utils", "numba", "mlflow.pyfunc"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logs = contextlib.nullcontext()
    try:
        with logs:
            return int(args.handler(args))
    except MlflowException as exc:
        # Unreachable or refusing tracking server (e.g. 401 without MLFLOW_TRACKING_USERNAME/PASSWORD): one line,
        # exit 1.
        first = str(exc).splitlines()[0][:300]
        print(
            f"{args.prog}: error: tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}: "
            f"{first}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED


def cooling_main(argv: Sequence[str] | None = None) -> int:
    """`energy-cooling ARGS`: the alias of `energy-loop cooling ARGS`."""
    return main(["cooling", *(sys.argv[1:] if argv is None else argv)], prog="energy-cooling")


if __name__ == "__main__":
    sys.exit(main())
