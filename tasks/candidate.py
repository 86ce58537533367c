"""One iteration of the loop: build or derive a model, train it, measure it, save it."""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import torch

from tasks import compress, models, quantize, serving
from tasks import distill as distill_mod
from tasks import search as search_mod
from tasks.data import CachedData, load_cached
from tasks.energy import analytic
from tasks.energy.base import EnergyMeter
from tasks.energy.runtime import stabilise_allocator
from tasks.errors import DivergedError, MeterError, RungNotApplicable
from tasks.evaluate import measure_inference, quality, representative_subset
from tasks.train import TrainConfig, TrainReport, fit, loss_fn, loss_targets
from thresholds.policy import CandidateResult, Step, StepKind
from thresholds.schema import Scenario

log = logging.getLogger(__name__)


def _trained(result: CandidateResult, report: TrainReport) -> CandidateResult:
    return result.model_copy(
        update={
            "epochs_run": report.epochs_run,
            "epochs_saved": report.epochs_saved,
            "train_s": report.duration_s,
            "series": {"val_loss": report.val_losses, "train_loss": report.train_losses, "epoch_energy_j": report.epoch_energy_j},
        }
    )


def batch_factor(history: list[str]) -> int:
    """The training batch multiplier a lineage was trained with (`batch:f` step), 1 when none."""
    for step in reversed(history):
        if step.startswith("batch:"):
            return int(step.split(":", 1)[1])
    return 1


def _fine_tune(
    model: torch.nn.Module, teacher: torch.nn.Module | None, data: CachedData, cfg: TrainConfig, scenario: Scenario, meter: EnergyMeter, label: str
) -> tuple[TrainReport, float]:
    """Train `model` on the labels, or on `teacher`'s soft labels when there is one."""
    if teacher is None:
        return fit(model, data, cfg, label=label, meter=meter), 0.0
    ladder = scenario.ladder
    return distill_mod.distill(teacher, model, data, cfg, ladder.distill_temperature, ladder.distill_alpha, meter=meter, label=label)


def _prune(
    model: torch.nn.Module,
    spec: models.ModelSpec,
    ratio: float,
    teacher: torch.nn.Module | None,
    data: CachedData,
    scenario: Scenario,
    meter: EnergyMeter,
    label: str,
) -> tuple[torch.nn.Module, models.ModelSpec, float]:
    """Prune with the scenario's options; iterative schedules fine-tune between steps. Returns that energy too."""
    ladder, training = scenario.ladder, scenario.training
    steps = ladder.pruning_iterative_steps
    epochs = max(1, training.fine_tune_epochs // steps)
    inherited = batch_factor(spec.history)
    cfg = TrainConfig(
        max_epochs=epochs,
        patience=epochs,
        batch_size=training.batch_size * inherited,
        lr=TrainConfig.lr * math.sqrt(inherited),
        seed=training.seed,
        monitor=training.early_stopping_monitor,
    )
    between_j = 0.0

    def between(m: torch.nn.Module, i: int) -> None:
        nonlocal between_j
        report, labelling_j = _fine_tune(m, teacher, data, cfg, scenario, meter, f"{label} step {i + 1}/{steps}")
        between_j += report.energy_j + labelling_j

    n = min(256, len(data.x_train))
    pruned, new_spec = compress.prune(
        model,
        spec,
        ratio,
        importance=ladder.pruning_importance,
        global_pruning=ladder.pruning_global,
        iterative_steps=steps,
        batch=(data.x_train[:n], loss_targets(data.y_train[:n], data.task)),
        loss_fn=loss_fn(data.task),
        between_steps=between,
    )
    return pruned, new_spec, between_j


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
    return measure_step(scenario, produced, data_path, meter, idle_power_w)


def produce_step(
    scenario: Scenario,
    step: Step,
    history: list[CandidateResult],
    index: int,
    data_path: str,
    work_dir: Path,
    meter: EnergyMeter,
) -> CandidateResult:
    """Build or derive candidate `index`, train it and save it; its inference is measured later.

    Only `history[step.parent]` is read, so candidates whose parents are already in `history`
    can be produced in parallel (train in parallel, measure serially: see `measure_step`).
    Failures become a rejected result.
    """
    stabilise_allocator()
    started = time.perf_counter()
    data = load_cached(data_path)
    training = scenario.training
    spent_j = 0.0
    tags: dict[str, str] = {}
    result = CandidateResult(index=index, step=step, energy_source=meter.source, estimated=meter.estimated)
    try:
        if step.kind in (StepKind.BASELINE, StepKind.EARLY_STOPPING, StepKind.MIXED_PRECISION, StepKind.BATCH):
            spec = models.ModelSpec(
                kind=scenario.model.kind,
                in_features=data.n_features,
                out_features=data.out_features,
                hidden=list(scenario.model.hidden),
            )
            torch.manual_seed(training.seed)
            model = models.build(spec)
            early = step.kind != StepKind.BASELINE
            mixed = step.kind == StepKind.MIXED_PRECISION
            factor = int(float(step.value or 1)) if step.kind == StepKind.BATCH else 1
            cfg = TrainConfig(
                max_epochs=training.max_epochs,
                patience=training.patience,
                batch_size=training.batch_size * factor,
                lr=TrainConfig.lr * math.sqrt(factor),  # square-root scaling keeps the noise of each step comparable
                early_stopping=early,
                seed=training.seed,
                autocast=mixed,
                monitor=training.early_stopping_monitor,
            )
            if early:
                extra = ["mixed-precision:bf16"] if mixed else [f"batch:{factor}"] if factor > 1 else []
                spec = spec.model_copy(update={"history": ["early-stopping", *extra]})
            report = fit(model, data, cfg, label=f"#{index} {step.label}", meter=meter)
            spent_j += report.energy_j
            lineage_train_j, lineage_train_sem_j = report.energy_j, report.energy_sem_j
            result = _trained(result, report)
        else:
            parent = history[step.parent if step.parent is not None else 0]
            if parent.model_dir is None or parent.train_energy_j is None:
                raise ValueError(f"parent #{parent.index} has no saved model")
            model, spec = models.load(Path(parent.model_dir))
            lineage_train_j, lineage_train_sem_j = parent.train_energy_j, parent.train_energy_sem_j
            if step.kind == StepKind.SEARCH:
                search_j, points = _search(scenario, history, spec, data, meter, f"#{index} search")
                model, spec, front = points
                spent_j += search_j
                # Trained from scratch: the chosen model's lineage is the whole search that found it.
                lineage_train_j, lineage_train_sem_j = search_j, 0.0
                tags.update(front)
            elif step.kind in (StepKind.PRUNE, StepKind.DISTILL, StepKind.QAT):
                # Pruning and QAT fine-tune the parent itself (optionally on its soft labels); distillation trains a new student.
                teacher = copy.deepcopy(model) if training.distill_fine_tune and step.kind != StepKind.DISTILL else None
                epochs = training.fine_tune_epochs
                if step.kind == StepKind.PRUNE:
                    tags["macs_before"] = str(models.count_macs(model, data.n_features))
                    tags["params_before"] = str(models.count_params(model))
                    model, spec, between_j = _prune(model, spec, float(step.value), teacher, data, scenario, meter, f"#{index} {step.label}")  # type: ignore[arg-type]
                    spent_j += between_j
                    lineage_train_j += between_j
                elif step.kind == StepKind.DISTILL:
                    teacher, teacher_spec = model, spec
                    spec = distill_mod.student_spec(teacher_spec, float(step.value))  # type: ignore[arg-type]
                    torch.manual_seed(training.seed)
                    model = models.build(spec)
                    epochs = training.max_epochs
                else:
                    quantize.attach(model)
                inherited = batch_factor(spec.history)
                cfg = TrainConfig(
                    max_epochs=epochs,
                    patience=min(training.patience, epochs),
                    batch_size=training.batch_size * inherited,
                    lr=TrainConfig.lr * math.sqrt(inherited),
                    seed=training.seed,
                    monitor=training.early_stopping_monitor,
                )
                report, labelling_j = _fine_tune(model, teacher, data, cfg, scenario, meter, f"#{index} {step.label}")
                if step.kind == StepKind.QAT:
                    quantize.detach_snapped(model)
                    spec = spec.model_copy(update={"precision": "int8", "history": [*spec.history, "qat:int8"]})
                spent_j += report.energy_j + labelling_j
                lineage_train_j += report.energy_j + labelling_j
                lineage_train_sem_j = math.hypot(lineage_train_sem_j, report.energy_sem_j)
                if teacher is not None:
                    tags["teacher_params"] = str(models.count_params(teacher))
                result = _trained(result, report)
            else:
                precision = str(step.value)
                spec = spec.model_copy(update={"precision": precision, "history": [*spec.history, f"precision:{precision}"]})
        model_dir = models.save(model, spec, work_dir / f"candidate-{index}")
        serving.save_input_spec(serving.input_spec(data), model_dir)  # what a deployed version takes and returns
        return result.model_copy(
            update={
                "lineage": spec.history,
                "train_energy_j": lineage_train_j,
                "train_energy_sem_j": lineage_train_sem_j,
                "spent_energy_j": spent_j,
                "model_dir": str(model_dir),
                "wall_s": time.perf_counter() - started,
                "tags": {**result.tags, **tags, **meter_tags(meter)},
            }
        )
    except (DivergedError, MeterError, RungNotApplicable) as exc:
        log.warning("candidate #%d (%s) rejected: %s", index, step.label, exc)
        spent_j += getattr(exc, "partial_energy_j", 0.0)
        return result.model_copy(update={"rejected_reason": str(exc), "spent_energy_j": spent_j, "wall_s": time.perf_counter() - started})


def _search(
    scenario: Scenario, history: list[CandidateResult], base: models.ModelSpec, data: CachedData, meter: EnergyMeter, label: str
) -> tuple[float, tuple[torch.nn.Module, models.ModelSpec, dict[str, str]]]:
    """The architecture-search rung: energy spent, and (chosen model, its spec, Pareto tags)."""
    ladder, training = scenario.ladder, scenario.training
    reference = history[0].analytic_inference_energy_j_per_1k
    if base.kind != "mlp" or reference is None:
        raise RungNotApplicable("architecture search needs an MLP baseline with an analytic energy estimate")
    cap = reference * ladder.search_max_energy_vs_baseline
    cfg = TrainConfig(
        max_epochs=training.max_epochs, patience=training.patience, batch_size=training.batch_size, seed=training.seed, monitor=training.early_stopping_monitor
    )
    try:
        model, spec, points, front, spent_j = search_mod.search(
            base, ladder.search_hidden, cap, data, cfg, scenario.measurement.inference_batch_size, meter, label
        )
    except ValueError as exc:
        raise RungNotApplicable(str(exc)) from None
    tags = {
        "search.cap_j_per_1k": f"{cap:.6g}",
        "search.tried": str(len(points)),
        "search.pareto": search_mod.as_json(front)[:4000],
        "search.points": search_mod.as_json(points)[:4000],
    }
    return spent_j, (model, spec, tags)


def meter_tags(meter: EnergyMeter) -> dict[str, str]:
    """How a meter attributes energy, when it is not the plain whole-machine reading."""
    attribution = getattr(meter, "attribution", None)
    return {"train_energy_attribution": str(attribution)} if attribution else {}


def measure_step(scenario: Scenario, produced: CandidateResult, data_path: str, meter: EnergyMeter, idle_power_w: float = 0.0) -> CandidateResult:
    """Score a produced candidate and measure its inference energy (alone on the machine)."""
    if not produced.ok or produced.model_dir is None:
        return produced
    stabilise_allocator()  # also here: in parallel mode this process did not train the model
    started = time.perf_counter()
    index, step = produced.index, produced.step
    data = load_cached(data_path)
    training = scenario.training
    tags: dict[str, str] = dict(produced.tags)
    result = produced
    try:
        model, spec = models.load(Path(produced.model_dir))
        predictor = models.to_precision(model, spec.precision)
        if spec.precision == "int8":
            tags["int8_backend"] = models.int8_backend()
        subset = representative_subset(data.y_test, scenario.measurement.eval_subset, training.seed) if scenario.measurement.eval_subset else None
        q = quality(predictor, data, subset)
        tags["eval_samples"] = str(q.samples)
        if q.accuracy_bound95 is not None:
            tags["accuracy_bound95_pt"] = f"{q.accuracy_bound95 * 100:.2f}"
        measure_start = time.perf_counter()
        inference = measure_inference(
            predictor,
            data,
            meter,
            batch_size=scenario.measurement.inference_batch_size,
            min_window_s=scenario.measurement.min_window_s,
            label=f"#{index} {step.label} inference",
            repeats_min=scenario.measurement.repeats_min,
            repeats_max=scenario.measurement.repeats_max,
            target_rel_ci=scenario.measurement.target_rel_ci,
            idle_power_w=idle_power_w,
        )
        measure_s = time.perf_counter() - measure_start
        inference_j, inference_sem_j = inference.energy_j_per_1k, inference.energy_sem_j_per_1k
        if spec.kind == "mlp":
            estimate = analytic.inference_energy(model, spec.precision, scenario.measurement.inference_batch_size)
            tags["analytic_table"] = estimate.table
            result = result.model_copy(update={"analytic_inference_energy_j_per_1k": estimate.energy_j_per_1k})
            if scenario.measurement.inference_target == "analytic-45nm":
                # Targeting an edge device: the gates judge the estimate; the local reading stays on record.
                tags["measured_inference_energy_j_per_1k"] = f"{inference_j:.6g}"
                inference_j, inference_sem_j = estimate.energy_j_per_1k, 0.0
                result = result.model_copy(update={"energy_source": f"{meter.source}+analytic:{estimate.table}", "estimated": True})
        if idle_power_w:
            tags["idle_power_w_subtracted"] = f"{idle_power_w:.3f}"
        tags.update({f"energy.{k}": v for k, v in inference.measurement.details.items()})
        tags["inference_latency_ms_iqr"] = f"{inference.latency_ms_spread:.4f}"
        tags["inference_samples_measured"] = str(inference.samples)
        return result.model_copy(
            update={
                "accuracy": q.accuracy,
                "rmse": q.rmse,
                "inference_energy_j_per_1k": inference_j,
                "inference_energy_sem_j_per_1k": inference_sem_j,
                "inference_energy_ci95_j_per_1k": inference.energy_ci95_j_per_1k if inference_sem_j else None,
                "inference_repeats": inference.repeats,
                "latency_ms_per_batch": inference.latency_ms_per_batch,
                "spent_energy_j": produced.spent_energy_j + inference.total_energy_j,
                "params": models.count_params(model),
                "macs": models.count_macs(model, data.n_features),
                "measure_s": measure_s,
                "wall_s": produced.wall_s + time.perf_counter() - started,
                "tags": tags,
            }
        )
    except MeterError as exc:
        log.warning("candidate #%d (%s) rejected: %s", index, step.label, exc)
        partial_j = getattr(exc, "partial_energy_j", 0.0)
        return produced.model_copy(update={"rejected_reason": str(exc), "spent_energy_j": produced.spent_energy_j + partial_j})
