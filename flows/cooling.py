"""The cooling loop: train the server-room agent, measure what it saves and what it costs, gate, escalate, register.

Wiring only: the work is in tasks/cooling, the stages in tasks/cooling/stages.py, the command in
flows/cli.py (`energy-loop cooling run --scenario cooling-room`).
"""

# No `from __future__ import annotations` here: Prefect validates flow parameters from annotations.

import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from registry.cooling import EXPERIMENT
from tasks.cooling.stages import close_loop, log_attempt, plan_next, run_attempt
from tasks.energy.select import resolve_meter_name
from tasks.loop import LoopOutcome, aborting, open_loop
from thresholds.cooling.policy import Attempt
from thresholds.cooling.schema import settings_for
from thresholds.core import Final


@flow(name="cooling-loop", log_prints=True)
def cooling_loop(
    scenario: str = "cooling-room",
    env: str | None = None,
    months: int | None = None,
    days: int | None = None,
    meter: str | None = None,
    work_root: str = ".energy-loop",
) -> LoopOutcome:
    settings = settings_for(scenario, env, months, days)
    meter_name = resolve_meter_name(meter or settings.measurement.meter)
    loop_id = uuid.uuid4().hex[:12]
    work_dir = str(Path(work_root) / "cooling" / loop_id)
    tags = {"scenario": settings.name, "environment": settings.env, "meter": meter_name, "prefect.flow_run_id": str(flow_run.id or "")}
    loop_run_id = open_loop(EXPERIMENT, f"{settings.name} {settings.env} {loop_id}", settings.model_dump(mode="json"), tags)
    history: list[Attempt] = []
    with aborting(loop_run_id):
        decision = plan_next(settings, history)
        while not isinstance(decision, Final):
            attempt = run_attempt(settings, decision, history, work_dir, meter_name)
            history.append(log_attempt(settings, loop_run_id, attempt, work_dir))
            decision = plan_next(settings, history)
        return close_loop(settings, decision, history, loop_run_id, work_dir, tags)
