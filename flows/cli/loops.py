"""The loop commands: `run` and `cooling run` (a request built from the flags, checked, then the flow), the
scenario checks `validate` and `cooling validate`, and `meters`."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from flows.cli.common import (
    EXIT_NOT_PASSED,
    bad_input,
    run_loop,
    show_scenario,
    stopped_loop,
    verbose_flag,
)
from flows.cli.options import add_options, request_from
from flows.prefect_api import LoopServices
from thresholds.cooling.request import CoolingRequest
from thresholds.energy.request import LoopRequest
from thresholds.errors import InputError


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="run the energy feedback loop (a Prefect flow)")
    add_options(run, LoopRequest)
    verbose_flag(run)
    # flows/console.py: progress, table, verdict; `stopped`: the one line an interrupt ends with
    run.set_defaults(handler=run_energy_loop, loop_console=True, stopped=stopped_loop)
    check = sub.add_parser("validate", help="validate a scenario file and print it")
    check.add_argument("scenario")
    check.set_defaults(handler=validate)
    sub.add_parser("meters", help="list the energy meters this machine offers and which `auto` picks").set_defaults(
        handler=meters
    )


def add_cooling_parsers(cooling: argparse.ArgumentParser) -> None:
    sub = cooling.add_subparsers(dest="cooling_command", required=True)
    run = sub.add_parser("run", help="run the cooling loop (a Prefect flow)")
    add_options(run, CoolingRequest)
    verbose_flag(run)
    run.set_defaults(handler=run_cooling_loop, loop_console=True, stopped=stopped_loop)
    check = sub.add_parser("validate", help="validate a cooling scenario file and print it")
    check.add_argument("scenario")
    check.set_defaults(handler=validate_cooling)


def run_energy_loop(args: argparse.Namespace) -> int:
    from tasks.energy_loop.inputs import check_request

    # Only where starting them creates nothing: they boot while the inputs are checked.
    early = LoopServices.start_early()
    try:  # fail fast, before any run is started
        request = request_from(LoopRequest, args)
        code = _prepare_data(args, request, check_request(request))
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

    return run_loop(args.prog, services, lambda: energy_loop(request))


def run_cooling_loop(args: argparse.Namespace) -> int:
    from tasks.cooling.inputs import check_request

    early = LoopServices.start_early()  # see run_energy_loop
    try:
        request = request_from(CoolingRequest, args)
        check_request(request)  # fail fast, before any run is opened
    except InputError as exc:
        if early is not None:
            early.stop()
        return bad_input(args.prog, exc)
    services = early or LoopServices()  # boots while the flow is imported
    from flows.cooling import cooling_loop

    return run_loop(args.prog, services, lambda: cooling_loop(request))


def _prepare_data(args: argparse.Namespace, request: LoopRequest, settings: Any) -> int | None:
    """Validate and preprocess the data, and try the model factory, before the flow starts (the flow reuses
    the cached result), so a data error is one line and never a flow traceback. Prints what preparing did;
    an exit code on error."""
    from tasks.energy_loop.inputs import prepare_checked
    from tasks.models.evaluate import resolve_quality_metric

    try:
        prepared = prepare_checked(settings, request)
    except (InputError, OSError) as exc:  # one line; --verbose adds the traceback
        if args.verbose:
            traceback.print_exc()
        if isinstance(exc, InputError):
            return bad_input(args.prog, exc)
        print(
            f"{args.prog}: error: could not write the data cache in {request.work_root}: {exc.strerror or exc}",
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


def validate(args: argparse.Namespace) -> int:
    from thresholds import scenario_path
    from thresholds.energy.schema import load_scenario

    return show_scenario(args.prog, lambda: load_scenario(scenario_path(args.scenario)))


def validate_cooling(args: argparse.Namespace) -> int:
    from thresholds.cooling.schema import load

    return show_scenario(args.prog, lambda: load(args.scenario))


def meters(_: argparse.Namespace) -> int:
    from tasks.meters.select import auto_choice, available_meters

    for name, why in available_meters().items():
        print(f"{name:12s} {why}")
    chosen, why = auto_choice()
    print(f"auto -> {chosen}: {why}")
    return 0
