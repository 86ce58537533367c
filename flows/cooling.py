"""The cooling loop: train the server-room agent, measure what it saves and what it costs, gate, escalate, register.

    python -m flows.cooling run --scenario cooling-room [--env seed|room] [--months N] [--meter NAME]

Exit 0 PASSED, 1 not passed, 2 bad input (one line on stderr). Wiring only: the work is in tasks/cooling.
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters from annotations.

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from flows.cli import run_loop
from tasks.cooling.stages import CoolingOutcome, close_loop, log_attempt, open_loop, plan_next, run_attempt
from tasks.energy.select import METER_NAMES, close_shared_meters, resolve_meter_name
from tasks.errors import InputError
from tasks.stages import abort_loop  # the same best-effort close of the parent run as the energy loop
from thresholds.cooling.policy import Attempt, Final
from thresholds.cooling.schema import CoolingScenario, load, parse

EXIT_PASSED, EXIT_NOT_PASSED, EXIT_BAD_INPUT = 0, 1, 2


def settings_for(scenario: str, env: str | None = None, months: int | None = None, days: int | None = None) -> CoolingScenario:
    """The scenario file with the command line's overrides, validated again as a whole."""
    settings = load(scenario)
    raw = settings.model_dump(mode="json")
    if env is not None:
        raw["env"] = env
    if months is not None:
        raw["evaluation"] = {**raw["evaluation"], "months": months, "days": None}
    if days is not None:
        raw["evaluation"] = {**raw["evaluation"], "days": days}
    return parse(raw, f"{scenario} with overrides")


@flow(name="cooling-loop", log_prints=True)
def cooling_loop(
    scenario: str = "cooling-room",
    env: str | None = None,
    months: int | None = None,
    days: int | None = None,
    meter: str | None = None,
    work_root: str = ".energy-loop",
) -> CoolingOutcome:
    settings = settings_for(scenario, env, months, days)
    meter_name = resolve_meter_name(meter or settings.measurement.meter)
    loop_id = uuid.uuid4().hex[:12]
    work_dir = str(Path(work_root) / "cooling" / loop_id)
    tags = {"scenario": settings.name, "environment": settings.env, "meter": meter_name, "prefect.flow_run_id": str(flow_run.id or "")}
    loop_run_id = open_loop(f"{settings.name} {settings.env} {loop_id}", settings.model_dump(mode="json"), tags)
    history: list[Attempt] = []
    try:
        decision = plan_next(settings, history)
        while not isinstance(decision, Final):
            attempt = run_attempt(settings, decision, history, work_dir, meter_name)
            history.append(log_attempt(settings, loop_run_id, attempt, work_dir))
            decision = plan_next(settings, history)
        return close_loop(settings, decision, history, loop_run_id, work_dir, tags)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        abort_loop(loop_run_id, f"{type(exc).__name__}: {exc}", status)
        raise
    finally:
        close_shared_meters()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="energy-cooling", description="Train and gate the server-room cooling agent (a Prefect flow).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cooling loop")
    run.add_argument("--scenario", required=True, help="cooling-room, cooling-seed, or a path to a thresholds YAML file")
    run.add_argument("--env", choices=["seed", "room"], help="environment (default: the scenario's)")
    run.add_argument("--months", type=int, help="evaluation period in 30-day months (default: the scenario's)")
    run.add_argument("--days", type=int, help="evaluation period in days (short runs)")
    run.add_argument("--meter", choices=list(METER_NAMES), help="energy meter (default: the scenario's)")
    run.add_argument("--work-dir", default=".energy-loop", help="folder for agents and plots (default .energy-loop)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "codecarbon", "alembic", "mlflow.store.db.utils", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings_for(args.scenario, args.env, args.months, args.days)  # fail fast, before any run is opened
    except InputError as exc:
        print(f"energy-cooling: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_loop(
        "energy-cooling",
        lambda: cooling_loop(scenario=args.scenario, env=args.env, months=args.months, days=args.days, meter=args.meter, work_root=args.work_dir),
    )


if __name__ == "__main__":
    sys.exit(main())
