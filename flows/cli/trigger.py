"""`energy-loop trigger`: start a deployment run through the Prefect API (CI-triggered retraining).

The deployment names its flow (`FLOW/DEPLOYMENT`), and the flow its request model: `--param K=V` takes the
model's fields as keys. The overrides are merged onto the deployment's own `request` and the whole request
is checked here (what a client can: every field, and a scenario file this checkout has), then sent whole;
the flow run's first task checks the rest (the data, the user's code, a scenario only the worker has).
Without a Prefect server the same request runs in this process, as `run` would run it.

Light at import: the CI job's client install (pyproject's `client` group) has no training stack.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from flows.cli.common import EXIT_BAD_INPUT, EXIT_NOT_PASSED, EXIT_PASSED, bad_input, interrupted, verbose_flag
from flows.cli.options import argv_for
from thresholds.cooling.request import CoolingRequest
from thresholds.energy.request import LoopRequest
from thresholds.errors import InputError
from thresholds.request import check_given, fields, from_text, parse

# A deployment's flow -> its request model, and the command that runs it in this process.
FLOWS: dict[str, tuple[type[BaseModel], list[str]]] = {
    LoopRequest.FLOW_NAME: (LoopRequest, ["run"]),
    CoolingRequest.FLOW_NAME: (CoolingRequest, ["cooling", "run"]),
}


def add_parsers(sub: Any) -> None:
    trigger = sub.add_parser("trigger", help="start a deployment run through the Prefect API (CI-triggered retraining)")
    trigger.add_argument(
        "--deployment", required=True, help=f"FLOW/DEPLOYMENT, e.g. energy-loop/dev-cpu (FLOW: {', '.join(FLOWS)})"
    )
    keys = "; ".join(f"{flow}: {', '.join(f.name for f in fields(model))}" for flow, (model, _) in FLOWS.items())
    trigger.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help=f"an option of the run, over the deployment's own (repeatable); K one of {keys}",
    )
    trigger.add_argument(
        "--wait", action="store_true", help="stream the run's state and exit 0 only if the loop ends PASSED"
    )
    trigger.add_argument("--poll-s", type=float, default=2.0, help="seconds between state polls (default 2)")
    verbose_flag(trigger)
    trigger.set_defaults(handler=trigger_run)


def _flow_of(deployment: str) -> tuple[type[BaseModel], list[str]]:
    flow, sep, name = deployment.partition("/")
    if not sep or not name or flow not in FLOWS:
        raise InputError("--deployment", deployment, f"FLOW/DEPLOYMENT with FLOW one of {', '.join(FLOWS)}")
    return FLOWS[flow]


def parse_params(model: type[BaseModel], pairs: Sequence[str]) -> dict[str, object]:
    """`K=V` pairs as the request's fields take them (digits become integers where a field takes one)."""
    keys = [f.name for f in fields(model)]
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in keys:
            raise InputError("--param", pair, f"K=V with K one of {', '.join(keys)}")
        params[key] = from_text(model, key, value)
    return params


def trigger_run(args: argparse.Namespace) -> int:
    try:
        model, command = _flow_of(args.deployment)
        params = parse_params(model, args.param)
        check_given(model, params)  # before any server is asked: each value given here
    except InputError as exc:
        return bad_input("energy-loop", exc)
    if os.environ.get("PREFECT_API_URL"):
        return _trigger_deployment(args.deployment, model, params, args.wait, args.poll_s)
    print(
        "energy-loop: PREFECT_API_URL is not set: no server to trigger, running the flow in this process instead",
        file=sys.stderr,
    )
    required = [f.name for f in fields(model) if f.required]
    missing = [k for k in required if k not in params]
    if missing:
        print(
            f"energy-loop: error: --param {missing[0]}=...: expected when running in process (no deployment defaults)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        parse(model, params)  # named as given here (keys), before `run` names its flags
    except InputError as exc:
        return bad_input("energy-loop", exc)
    argv = [*command, *argv_for(model, params)]
    return int(args.main([*argv, "--verbose"] if args.verbose else argv))  # `main`, as `run` would be run


def _deployment_request(deployment: str, model: type[BaseModel], params: dict[str, object]) -> dict[str, object]:
    """The deployment's own request with `params` over it, checked as far as a client can; as the flow gets it."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        own = client.read_deployment_by_name(deployment).parameters
    if not isinstance(own.get("request", {}), dict) or set(own) - {"request"}:
        raise InputError(
            "deployment",
            deployment,
            "parameters {request: {...}} (it was created before the request object: `prefect deploy --all` updates it)",
        )
    request = parse(model, {**own.get("request", {}), **params})
    if isinstance(request, LoopRequest):  # each pipeline's own checks, and only its modules imported
        from tasks.energy_loop.inputs import check_on_client

        check_on_client(request, params)
    elif isinstance(request, CoolingRequest):
        from tasks.cooling.inputs import check_on_client as check_cooling_on_client

        check_cooling_on_client(request, params)
    return request.model_dump(mode="json", exclude_unset=True)


def _trigger_deployment(
    deployment: str, model: type[BaseModel], params: dict[str, object], wait: bool, poll_s: float
) -> int:
    from prefect.deployments import run_deployment

    try:
        request = _deployment_request(deployment, model, params)
    except InputError as exc:
        return bad_input("energy-loop", exc)
    except Exception as exc:  # unknown deployment, server down: one line, not a traceback
        print(f"energy-loop: error: deployment = {deployment!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # sync outside an event loop
        flow_run: Any = run_deployment(name=deployment, parameters={"request": request}, timeout=0)
    except Exception as exc:
        print(f"energy-loop: error: deployment = {deployment!r}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # from the line on: a Ctrl-C right after it is read lands here too
        print(f"started flow run {flow_run.name} ({flow_run.id}) of {deployment}", flush=True)
        if not wait:
            return 0
        state = _wait(flow_run.id, poll_s)
    except KeyboardInterrupt as exc:  # Ctrl-C stops the waiting, not the run: say how to stop that too
        return interrupted(
            "energy-loop",
            exc,
            f"stopped waiting; flow run {flow_run.name} goes on (stop it: prefect flow-run cancel {flow_run.id})",
        )
    return _verdict(state, str(flow_run.id))


def _wait(flow_run_id: Any, poll_s: float) -> Any:
    """Stream the run's state changes until it is final; the final state."""
    from prefect import get_client

    last = None
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and state.name != last:
                last = state.name
                print(
                    f"  {time.strftime('%H:%M:%S')} {state.name}" + (f": {state.message}" if state.message else ""),
                    flush=True,
                )
            if state is not None and state.is_final():
                return state
            time.sleep(poll_s)


def _verdict(state: Any, flow_run_id: str) -> int:
    from registry.core import loop_result
    from thresholds.errors import INVALID_INPUT

    if state.name == INVALID_INPUT:  # its first task refused a parameter: the one line, as `run` says it
        print(f"energy-loop: error: {state.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not state.is_completed():
        print(f"energy-loop: flow run ended {state.name}: {state.message or 'no message'}", file=sys.stderr)
        return EXIT_NOT_PASSED
    result = loop_result(flow_run_id)
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
