"""The energy feedback loop: train, measure, gate, escalate, register. Wiring only."""

# No `from __future__ import annotations` here: Prefect validates flow parameters from annotations.

import logging
import uuid
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from registry.energy import EXPERIMENT
from tasks.common.progress import phase
from tasks.common.stages import INPUT_ERRORS_IN_ONE_LINE, LoopOutcome, aborting, invalid_input, open_loop
from tasks.energy_loop import progress
from tasks.energy_loop.dask_stages import candidate_runner, train_rung
from tasks.energy_loop.stages import (
    calibrate_machine,
    check_inputs,
    choose_width,
    close_loop,
    confirm_full_test,
    data_tags,
    deployment_hints,
    idle_power,
    log_candidate,
    measure_candidate,
    plan_next,
    scenario_meter,
    train_candidate,
)
from thresholds.energy.policy import CandidateResult, Final
from thresholds.errors import InputError

logging.getLogger("prefect.flow_runs").addFilter(INPUT_ERRORS_IN_ONE_LINE)  # bad input: the one line in every log


@flow(name="energy-loop", log_prints=True)
def energy_loop(
    scenario: str,
    dataset: str,
    target: str | None = None,
    model_name: str | None = None,
    samples: int | None = None,
    task_type: str = "auto",
    meter: str | None = None,
    work_root: str = ".energy-loop",
    parallel: int | str = 1,
    dask_address: str | None = None,
    model_factory: str | None = None,
    image_size: str | None = None,
    model_loss: str | None = None,
    model_metric: str | None = None,
    model_train_step: str | None = None,
    image_cache: str = "auto",
) -> LoopOutcome:
    # `--model`, `--loss`, `--metric`, `--train-step` override the scenario's model.factory, .loss, .metric, .train_step
    hooks = {"loss": model_loss, "metric": model_metric, "train_step": model_train_step}
    checked = check_inputs(
        scenario,
        dataset,
        str(Path(work_root) / "cache"),
        target,
        samples,
        task_type,
        meter,
        parallel,
        model_factory,
        image_size,
        hooks,
        image_cache,
    )
    if isinstance(checked, InputError):
        return invalid_input(checked)  # type: ignore[return-value]  # Prefect ends the run in the returned state
    settings, meter_name, data_path = checked.settings, checked.meter, checked.data_path
    loop_id = uuid.uuid4().hex[:12]
    work_dir = str(Path(work_root) / "runs" / loop_id)
    name = model_name or f"energy-loop-{Path(data_path).name.rsplit('-', 1)[0]}"
    tags = {
        "scenario": settings.name, "dataset": dataset, "meter": meter_name,
        "prefect.flow_run_id": str(flow_run.id or ""),
        "promotion_mode": settings.promotion,  # read by the webhook receiver when champion is moved by hand
        **data_tags(settings, data_path),
    }  # fmt: skip
    loop_run_id = open_loop(
        EXPERIMENT,
        f"{settings.name} {dataset} {loop_id}",
        {**settings.model_dump(mode="json"), "samples": samples},
        tags,
    )
    history: list[CandidateResult] = []
    with aborting(loop_run_id):
        with phase("setup", "idle power, calibration, parallel width"):
            idle_w = idle_power(settings, meter_name)
            calibration = calibrate_machine(
                settings, meter_name, str(Path(work_root) / "cache"), loop_run_id, data_path
            )
            scale = choose_width(settings, parallel, meter_name, data_path, loop_run_id, dask_address)
        with candidate_runner(scale.width, dask_address, train_candidate) as runner:
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
            decision, history = confirm_full_test(settings, decision, history, data_path)
            hints = deployment_hints(settings, decision, history, data_path, meter_name)
            closed = close_loop(settings, decision, history, loop_run_id, name, work_dir, tags, hints)
        return closed
