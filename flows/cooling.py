"""The cooling loop: train the server-room agent, measure what it saves and what it costs, gate, escalate, register.

Wiring only: the work is in tasks/cooling, the stages in tasks/cooling/stages.py, the command in
flows/cli/loops.py (`energy-loop cooling run --scenario cooling-room`).
"""

# No `from __future__ import annotations` here: Prefect reads the parameter's schema from its annotation.

import logging
import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from registry import keys
from registry.cooling import EXPERIMENT
from tasks.common import progress
from tasks.common.stages import INPUT_ERRORS_IN_ONE_LINE, LoopOutcome, aborting, invalid_input, open_loop
from tasks.cooling.stages import check_inputs, close_loop, log_attempt, plan_next, run_attempt
from thresholds.cooling.policy import Attempt
from thresholds.cooling.request import CoolingRequest
from thresholds.core import Final
from thresholds.errors import InputError

logging.getLogger("prefect.flow_runs").addFilter(INPUT_ERRORS_IN_ONE_LINE)  # bad input: the one line in every log


# As the energy loop's: `check_inputs` validates the request, so a bad one ends the run `InvalidInput` with its line.
@flow(name=CoolingRequest.FLOW_NAME, log_prints=True, validate_parameters=False)
def cooling_loop(request: CoolingRequest) -> LoopOutcome:
    """The loop for one request (thresholds/cooling/request.py): a `CoolingRequest`, or a mapping of its options."""
    checked = check_inputs(request)
    if isinstance(checked, InputError):
        return invalid_input(checked)  # type: ignore[return-value]  # Prefect ends the run in the returned state
    settings, meter_name = checked.settings, checked.meter
    loop_id = uuid.uuid4().hex[:12]
    work_dir = str(Path(checked.request.work_root) / "cooling" / loop_id)
    tags = {
        keys.SCENARIO: settings.name,
        keys.ENVIRONMENT: settings.env,
        keys.METER: meter_name,
        keys.PREFECT_FLOW_RUN_ID: str(flow_run.id or ""),
    }
    loop_run_id = open_loop(
        EXPERIMENT, f"{settings.name} {settings.env} {loop_id}", settings.model_dump(mode="json"), tags
    )
    history: list[Attempt] = []
    with aborting(loop_run_id):
        decision = plan_next(settings, history)
        while not isinstance(decision, Final):
            attempt = run_attempt(settings, decision, history, work_dir, meter_name)
            history.append(log_attempt(settings, loop_run_id, attempt, work_dir))
            decision = plan_next(settings, history)
        with progress.phase("closing", "plots, registration"):
            closed = close_loop(settings, decision, history, loop_run_id, work_dir, tags)
        return closed
