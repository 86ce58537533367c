"""One iteration of the loop: produce candidate number `len(history)` with its rung's producer (producers.py), save
it, then measure it (measure.py). `run_step` does both in turn; in parallel mode the stages produce in parallel and
measure serially."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tasks.common.errors import DivergedError, RungNotApplicable
from tasks.data.datasets import load_cached
from tasks.energy_loop.measure import measure_step
from tasks.energy_loop.producers import PRODUCERS
from tasks.energy_loop.production import Production, batch_factor, model_spec
from tasks.meters.base import EnergyMeter, MeterError
from tasks.meters.runtime import stabilise_allocator
from tasks.models import factory as models
from tasks.models import hooks
from tasks.models.train import TrainReport
from tasks.serving import scorer as serving
from thresholds.energy.keys import EPOCH_ENERGY_J, TRAIN_ENERGY_ATTRIBUTION, TRAIN_LOSS, VAL_LOSS
from thresholds.energy.policy import CandidateResult, Step, price_training
from thresholds.energy.schema import Scenario

__all__ = ["PRODUCERS", "batch_factor", "measure_step", "meter_tags", "model_spec", "produce_step", "run_step"]

log = logging.getLogger(__name__)


def run_step(
    scenario: Scenario,
    step: Step,
    history: list[CandidateResult],
    data_path: str,
    work_dir: Path,
    meter: EnergyMeter,
    idle_power_w: float = 0.0,
) -> CandidateResult:
    """Produce and measure candidate number `len(history)`; failures become a rejected result."""
    produced = produce_step(scenario, step, history, len(history), data_path, work_dir, meter)
    measured = measure_step(
        scenario, produced, data_path, meter, idle_power_w, history[0].model_dir if history else None
    )
    return price_training(history, measured)


def produce_step(
    scenario: Scenario,
    step: Step,
    history: list[CandidateResult],
    index: int,
    data_path: str,
    work_dir: Path,
    meter: EnergyMeter,
) -> CandidateResult:
    """Build or derive candidate `index` with its rung's producer, train it and save it; its inference is measured
    later.

    Only `history[step.parent]` is read, so candidates whose parents are already in `history`
    can be produced in parallel (train in parallel, measure serially: see `measure_step`).
    Failures become a rejected result.
    """
    stabilise_allocator()
    started = time.perf_counter()
    data = load_cached(data_path)
    p = Production(
        scenario=scenario,
        step=step,
        history=history,
        index=index,
        data=data,
        meter=meter,
        hooks=hooks.resolve(scenario.model.hooks),
    )
    result = CandidateResult(index=index, step=step, energy_source=meter.source, estimated=meter.estimated)
    try:
        made = PRODUCERS[step.kind](p)
        if made.report is not None:
            result = _trained(result, made.report)
        model_dir = models.save(made.model, made.spec, work_dir / f"candidate-{index}")
        if made.finish is not None:
            made.finish(model_dir)
        p.data.write_preprocessing(model_dir)  # the model's raw-table inputs, logged with its files
        serving.save_input_spec(serving.input_spec(p.data), model_dir)  # what a deployed version takes and returns
        return result.model_copy(
            update={
                "lineage": made.spec.history,
                "train_energy_j": made.lineage_j,
                "train_energy_sem_j": made.lineage_sem_j,
                "train_segments": made.segments if made.segments is not None else p.lineage(),
                "spent_energy_j": p.spent_j,
                "model_dir": str(model_dir),
                "wall_s": time.perf_counter() - started,
                "tags": {**result.tags, **p.tags, **meter_tags(meter)},
            }
        )
    except (DivergedError, MeterError, RungNotApplicable) as exc:
        log.warning("candidate #%d (%s) rejected: %s", index, step.label, exc)
        spent_j = p.spent_j + getattr(exc, "partial_energy_j", 0.0)
        refused = isinstance(exc, RungNotApplicable)
        return result.model_copy(
            update={
                "rejected_reason": str(exc),
                "not_applicable": refused,
                "spent_energy_j": spent_j,
                "wall_s": time.perf_counter() - started,
            }
        )


def meter_tags(meter: EnergyMeter) -> dict[str, str]:
    """How a meter attributes energy, when it is not the plain whole-machine reading."""
    attribution = getattr(meter, "attribution", None)
    return {TRAIN_ENERGY_ATTRIBUTION: str(attribution)} if attribution else {}


def _trained(result: CandidateResult, report: TrainReport) -> CandidateResult:
    return result.model_copy(
        update={
            "epochs_run": report.epochs_run,
            "epochs_saved": report.epochs_saved,
            "train_s": report.duration_s,
            "series": {
                VAL_LOSS: report.val_losses,
                TRAIN_LOSS: report.train_losses,
                EPOCH_ENERGY_J: report.epoch_energy_j,
            },
        }
    )
