"""One iteration of the loop: build or derive a model, train it, measure it, save it."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tasks import compress, models, quantize
from tasks import distill as distill_mod
from tasks import search as search_mod
from tasks.data import CachedData, load_cached
from tasks.energy import analytic
from tasks.energy.base import EnergyMeter
from tasks.energy.runtime import stabilise_allocator
from tasks.errors import DivergedError, MeterError, RungNotApplicable
from tasks.evaluate import InferenceReport, measure_inference, measure_inference_paired, quality, representative_subset
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
    return measure_step(scenario, produced, data_path, meter, idle_power_w, history[0].model_dir if history else None)


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
        if step.kind in TRAINING_MOVES:
            made = TRAINING_MOVES[step.kind](scenario, step, history, data, meter, f"#{index} {step.label}")
            model, spec = made.model, made.spec
            spent_j += made.spent_j
            lineage_train_j, lineage_train_sem_j = made.lineage_train_j, made.lineage_train_sem_j
            result = _trained(result, made.report)
            tags.update(made.tags)
        elif step.kind in (StepKind.BASELINE, StepKind.EARLY_STOPPING, StepKind.MIXED_PRECISION, StepKind.BATCH):
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
                epochs = step.epochs or training.fine_tune_epochs  # a longer fine-tune when backing off for accuracy
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


@dataclass
class Made:
    """What a training-cost move produced: the model, its energy and the lineage's training energy."""

    model: torch.nn.Module
    spec: models.ModelSpec
    report: TrainReport  # the last training phase (its curves go to the candidate's run)
    spent_j: float  # energy this iteration spent training
    lineage_train_j: float  # energy to produce this model from scratch
    lineage_train_sem_j: float
    tags: dict[str, str] = field(default_factory=dict)


def _recipe_config(scenario: Scenario, lineage: list[str], max_epochs: int, patience: int) -> TrainConfig:
    """The recipe's training settings (batch factor and autocast of `lineage`) for `max_epochs`."""
    training = scenario.training
    factor = batch_factor(lineage)
    return TrainConfig(
        max_epochs=max_epochs,
        patience=min(patience, max_epochs),
        batch_size=training.batch_size * factor,
        lr=TrainConfig.lr * math.sqrt(factor),
        seed=training.seed,
        autocast="mixed-precision:bf16" in lineage,
        monitor=training.early_stopping_monitor,
    )


def _prune_once(model: torch.nn.Module, spec: models.ModelSpec, ratio: float, data: CachedData, scenario: Scenario) -> tuple[torch.nn.Module, models.ModelSpec]:
    """One-shot pruning with the scenario's importance (no fine-tune between steps)."""
    n = min(256, len(data.x_train))
    return compress.prune(
        model,
        spec,
        ratio,
        importance=scenario.ladder.pruning_importance,
        global_pruning=scenario.ladder.pruning_global,
        batch=(data.x_train[:n], loss_targets(data.y_train[:n], data.task)),
        loss_fn=loss_fn(data.task),
    )


def produce_prune_early(scenario: Scenario, step: Step, history: list[CandidateResult], data: CachedData, meter: EnergyMeter, label: str) -> Made:
    """`prune-early:r`: train the recipe for `training.prune_at_epoch` epochs, prune r of the channels,
    and keep training the pruned model with early stopping: no separate fine-tune."""
    training = scenario.training
    recipe_lineage = _recipe_from_lineage(history[step.parent if step.parent is not None else 0].lineage)
    at = min(training.prune_at_epoch, training.max_epochs - 1)
    spec = models.ModelSpec(kind=scenario.model.kind, in_features=data.n_features, out_features=data.out_features, hidden=list(scenario.model.hidden))
    torch.manual_seed(training.seed)
    model = models.build(spec)
    warm = _recipe_config(scenario, recipe_lineage, max(1, at), training.patience)
    first = fit(model, data, dataclasses.replace(warm, early_stopping=False), label=f"{label} epochs 1-{at}", meter=meter)
    model, spec = _prune_once(model, spec, float(step.value), data, scenario)  # type: ignore[arg-type]
    rest = fit(model, data, _recipe_config(scenario, recipe_lineage, max(1, training.max_epochs - at), training.patience), label=f"{label} pruned", meter=meter)
    spent_j = first.energy_j + rest.energy_j
    history_steps = [*recipe_lineage, f"prune-early:{float(step.value):g}@{at}"]  # type: ignore[arg-type]
    return Made(
        model=model,
        spec=spec.model_copy(update={"history": history_steps}),
        report=rest,
        spent_j=spent_j,
        lineage_train_j=spent_j,
        lineage_train_sem_j=math.hypot(first.energy_sem_j, rest.energy_sem_j),
        tags={"prune_at_epoch": str(at), "epochs_before_pruning": str(first.epochs_run)},
    )


def produce_prune_es(scenario: Scenario, step: Step, history: list[CandidateResult], data: CachedData, meter: EnergyMeter, label: str) -> Made:
    """`prune-es:r/Nep`: prune the parent (the recipe) once and fine-tune with early stopping for at
    most `step.epochs`, the budget the training target leaves."""
    parent = history[step.parent if step.parent is not None else 0]
    if parent.model_dir is None or parent.train_energy_j is None:
        raise RungNotApplicable(f"parent #{parent.index} has no saved model")
    model, spec = models.load(Path(parent.model_dir))
    teacher = copy.deepcopy(model) if scenario.training.distill_fine_tune else None
    model, spec = _prune_once(model, spec, float(step.value), data, scenario)  # type: ignore[arg-type]
    epochs = max(1, step.epochs or scenario.training.fine_tune_epochs)
    cfg = _recipe_config(scenario, spec.history, epochs, scenario.training.patience)
    report, labelling_j = _fine_tune(model, teacher, data, cfg, scenario, meter, label)
    spent_j = report.energy_j + labelling_j
    history_steps = [*spec.history[:-1], f"prune-es:{float(step.value):g}/{epochs}ep"]  # type: ignore[arg-type]
    return Made(
        model=model,
        spec=spec.model_copy(update={"history": history_steps}),
        report=report,
        spent_j=spent_j,
        lineage_train_j=parent.train_energy_j + spent_j,
        lineage_train_sem_j=math.hypot(parent.train_energy_sem_j, report.energy_sem_j),
        tags={"fine_tune_budget_epochs": str(epochs)},
    )


def produce_scratch(scenario: Scenario, step: Step, history: list[CandidateResult], data: CachedData, meter: EnergyMeter, label: str) -> Made:
    """`scratch`: the parent's (compressed or searched) architecture, fp32, trained from scratch with
    early stopping at the recipe's settings. Its lineage is this training alone: the architecture is
    now known, so reproducing the model needs nothing else (the loop's total counts the search)."""
    parent = history[step.parent if step.parent is not None else 0]
    if parent.model_dir is None:
        raise RungNotApplicable(f"parent #{parent.index} has no saved model")
    _, parent_spec = models.load(Path(parent.model_dir))
    recipe = _recipe_from_lineage(parent_spec.history)
    widths = "-".join(str(w) for w in (parent_spec.hidden if parent_spec.kind == "mlp" else parent_spec.channels))
    spec = parent_spec.model_copy(update={"precision": "fp32", "history": [*recipe, f"scratch:{widths}"]})
    torch.manual_seed(scenario.training.seed)
    model = models.build(spec)
    report = fit(model, data, _recipe_config(scenario, recipe, scenario.training.max_epochs, scenario.training.patience), label=label, meter=meter)
    return Made(
        model=model,
        spec=spec,
        report=report,
        spent_j=report.energy_j,
        lineage_train_j=report.energy_j,
        lineage_train_sem_j=report.energy_sem_j,
        tags={"architecture_from": f"#{parent.index}"},
    )


def _recipe_from_lineage(lineage: list[str]) -> list[str]:
    """The training-recipe steps of a lineage (early stopping, mixed precision, batch factor)."""
    return [s for s in lineage if s == "early-stopping" or s.startswith(("mixed-precision:", "batch:"))] or ["early-stopping"]


MoveProducer = Callable[[Scenario, Step, list[CandidateResult], CachedData, EnergyMeter, str], Made]
TRAINING_MOVES: dict[StepKind, MoveProducer] = {
    StepKind.PRUNE_EARLY: produce_prune_early,
    StepKind.PRUNE_ES: produce_prune_es,
    StepKind.SCRATCH: produce_scratch,
}


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


def _measure_inference(
    scenario: Scenario, predictor: torch.nn.Module, data: CachedData, meter: EnergyMeter, label: str, idle_power_w: float, reference_dir: str | None
) -> tuple[InferenceReport, dict[str, object], float]:
    """The candidate's inference report; with a reference model (the baseline) and
    `measurement.paired`, measured in ABBA windows interleaved with it, plus the paired-ratio
    fields of the result and the energy the reference's windows spent."""
    m = scenario.measurement
    common = dict(batch_size=m.inference_batch_size, min_window_s=m.min_window_s, label=label, target_rel_ci=m.target_rel_ci, idle_power_w=idle_power_w)
    if m.paired and reference_dir and m.inference_target == "this-machine" and meter.source != "null":
        ref_model, ref_spec = models.load(Path(reference_dir))
        reference = models.to_precision(ref_model, ref_spec.precision)
        pairs_min = max(2, m.repeats_min + m.repeats_min % 2)  # whole ABBA blocks
        try:
            mine, theirs, paired = measure_inference_paired(
                predictor,
                reference,
                data,
                meter,
                pairs_min=pairs_min,
                pairs_max=max(pairs_min, m.repeats_max),
                **common,  # type: ignore[arg-type]
            )
        except ValueError as exc:  # a window read no energy above idle: nothing to pair
            log.warning("%s: paired measurement unavailable (%s); measured alone", label, exc)
        else:
            low, high = paired.ci95
            fields: dict[str, object] = {
                "inference_ratio_vs_baseline": paired.ratio,
                "inference_ratio_log_sem": paired.log_sem,
                "inference_ratio_ci95_low": low,
                "inference_ratio_ci95_high": high,
                "inference_pairs": paired.n,
                "tags": {"inference_paired_with": reference_dir, "inference_reference_j_per_1k": f"{theirs.energy_j_per_1k:.6g}"},
            }
            return mine, fields, theirs.total_energy_j
    alone = measure_inference(predictor, data, meter, repeats_min=m.repeats_min, repeats_max=m.repeats_max, **common)  # type: ignore[arg-type]
    return alone, {}, 0.0


def measure_step(
    scenario: Scenario, produced: CandidateResult, data_path: str, meter: EnergyMeter, idle_power_w: float = 0.0, reference_dir: str | None = None
) -> CandidateResult:
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
        inference, paired_fields, reference_j = _measure_inference(
            scenario, predictor, data, meter, f"#{index} {step.label} inference", idle_power_w, reference_dir
        )
        tags.update(paired_fields.pop("tags", {}))  # type: ignore[call-overload]
        result = result.model_copy(update=paired_fields)
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
                "spent_energy_j": produced.spent_energy_j + inference.total_energy_j + reference_j,
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
