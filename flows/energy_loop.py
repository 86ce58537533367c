"""The energy feedback loop: train, measure, gate, escalate, register. Wiring only."""

# No `from __future__ import annotations` here: Prefect reads the parameter's schema from its annotation.

import logging
import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from registry import keys
from registry.energy import EXPERIMENT
from tasks.common.progress import phase
from tasks.common.stages import INPUT_ERRORS_IN_ONE_LINE, LoopOutcome, aborting, invalid_input, open_loop
from tasks.data.sources import masked
from tasks.energy_loop import progress
from tasks.energy_loop.dask_stages import candidate_runner, train_rung
from tasks.energy_loop.inputs import cache_dir
from tasks.energy_loop.keys import DATASET, PRODUCTION_RETRAIN_FOR, SAMPLES, TARGET
from tasks.energy_loop.ledger import loop_energy
from tasks.energy_loop.stages import (
    Closing,
    calibrate_machine,
    champion_reference,
    check_inputs,
    choose_width,
    close_loop,
    confirm_full_test,
    data_tags,
    deployment_hints,
    fit_batch_sizes,
    idle_power,
    log_candidate,
    log_data_source,
    loop_ledger,
    measure_candidate,
    plan_next,
    scenario_meter,
    train_candidate,
)
from thresholds.energy.policy import CandidateResult, Final
from thresholds.energy.request import LoopRequest
from thresholds.errors import InputError

logging.getLogger("prefect.flow_runs").addFilter(INPUT_ERRORS_IN_ONE_LINE)  # bad input: the one line in every log


# Prefect would validate the request itself (and end a bad one in a different failure): `check_inputs` does, so
# a bad value ends the run `InvalidInput` with its one line, from a deployment, a schedule or a Python call alike.
@flow(name=LoopRequest.FLOW_NAME, log_prints=True, validate_parameters=False)
def energy_loop(request: LoopRequest) -> LoopOutcome:
    """The loop for one request (thresholds/energy/request.py): a `LoopRequest`, or a mapping of its options."""
    checked = check_inputs(request)
    if isinstance(checked, InputError):
        return invalid_input(checked)  # type: ignore[return-value]  # Prefect ends the run in the returned state
    settings, meter_name, data_path, options = checked.settings, checked.meter, checked.data_path, checked.request
    loop_id = uuid.uuid4().hex[:12]
    work_dir = str(Path(options.work_root) / "runs" / loop_id)
    name = options.model_name or f"energy-loop-{Path(data_path).name.rsplit('-', 1)[0]}"
    tags = {
        keys.SCENARIO: settings.name, DATASET: masked(options.dataset), keys.METER: meter_name,
        keys.SCENARIO_SOURCE: options.scenario,  # as given: a retrain (the production automation) starts from it
        **({TARGET: options.target} if options.target else {}),
        **({PRODUCTION_RETRAIN_FOR: ",".join(options.production_breach)} if options.production_breach else {}),
        keys.PREFECT_FLOW_RUN_ID: str(flow_run.id or ""),
        keys.PROMOTION_MODE: settings.promotion,  # read by the webhook receiver when champion is moved by hand
        **data_tags(settings, data_path),
    }  # fmt: skip
    loop_run_id = open_loop(
        EXPERIMENT,
        f"{settings.name} {masked(options.dataset)} {loop_id}",
        {**settings.model_dump(mode="json"), SAMPLES: options.samples},
        tags,
    )
    history: list[CandidateResult] = []
    accounts = loop_ledger(settings, meter_name)  # the loop's own energy, per stretch
    with aborting(loop_run_id), accounts:
        with accounts.stretch("setup"):
            log_data_source(loop_run_id, data_path)  # what was read (a table's source, rows, digest)
            settings = fit_batch_sizes(settings, data_path, loop_run_id)  # every candidate measured at these sizes
            with phase("setup", "idle power, calibration, parallel width"):
                idle_w = idle_power(settings, meter_name)
                calibration = calibrate_machine(settings, meter_name, str(cache_dir(options)), loop_run_id, data_path)
                scale = choose_width(
                    settings, options.parallel, meter_name, data_path, loop_run_id, options.dask_address
                )
        with (
            accounts.stretch("candidates"),
            candidate_runner(scale.width, options.dask_address, train_candidate) as runner,
        ):
            decision = plan_next(settings, history, calibration, scale.width)
            while not isinstance(decision, Final):
                calls = [
                    dict(
                        scenario=settings,
                        step=n.step,
                        history=history,
                        index=len(history) + i,
                        data_path=data_path,
                        work_dir=work_dir,
                        meter=meter_name,
                    )
                    for i, n in enumerate(decision)
                ]
                progress.training(settings, history, decision)
                for produced in train_rung(
                    runner, train_candidate, calls, history, scenario_meter(settings, meter_name), scale
                ):
                    progress.trained(settings, history, produced)
                    candidate = measure_candidate(
                        settings, produced, data_path, meter_name, idle_w, history[0].model_dir if history else None
                    )
                    history.append(log_candidate(settings, loop_run_id, history, candidate))
                    progress.judged(settings, history, produced)
                decision = plan_next(settings, history, calibration, scale.width)
        with phase("closing", "full-test confirmation, batch-size sweep, registration"):
            with accounts.stretch("closing"):
                decision, history = confirm_full_test(settings, decision, history, data_path)
                hints = deployment_hints(settings, decision, history, data_path, meter_name)
                champion = champion_reference(settings, name, data_path, meter_name, idle_w, history)
            closing = Closing(hints, loop_energy(accounts.stretches, history), champion)
            closed = close_loop(settings, decision, history, loop_run_id, name, work_dir, tags, closing)
        return closed
