"""One iteration of the loop: build or derive a model, train it, measure it, save it.

Each rung kind has one producer here (`@producer(StepKind.X)`): a function from the `Production`
(scenario, step, history, data, meter) to the model it `Made`. The policy's rung table
(thresholds/energy/policy.py) decides which rung comes next; this table makes it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from tasks.common.errors import DivergedError, RungNotApplicable
from tasks.compression import distill as distill_mod
from tasks.compression import onnx_runtime
from tasks.compression import prune as compress
from tasks.compression import qat as quantize
from tasks.compression import search as search_mod
from tasks.data.datasets import CachedData, load_cached
from tasks.meters import analytic, contention
from tasks.meters.base import EnergyMeter, MeterError
from tasks.meters.paired import AcrossSizes
from tasks.meters.runtime import stabilise_allocator, torch_threads
from tasks.models import factory as models
from tasks.models import fuse, hooks
from tasks.models.evaluate import (
    InferenceReport,
    across_sizes,
    measure_inference,
    measure_inference_paired,
    quality,
    quality_tag,
    representative_subset,
    resolve_quality_metric,
)
from tasks.models.hooks import Hooks
from tasks.models.train import TrainConfig, TrainReport, fit, loss_fn, loss_targets
from tasks.serving import scorer as serving
from thresholds.energy.policy import CandidateResult, Step, StepKind, price_training
from thresholds.energy.schema import Scenario, Training
from thresholds.energy.training_cost import TrainSegment

log = logging.getLogger(__name__)


def _trained(result: CandidateResult, report: TrainReport) -> CandidateResult:
    return result.model_copy(
        update={
            "epochs_run": report.epochs_run,
            "epochs_saved": report.epochs_saved,
            "train_s": report.duration_s,
            "series": {
                "val_loss": report.val_losses,
                "train_loss": report.train_losses,
                "epoch_energy_j": report.epoch_energy_j,
            },
        }
    )


def batch_factor(history: list[str]) -> int:
    """The training batch multiplier a lineage was trained with (`batch:f` step), 1 when none."""
    for step in reversed(history):
        if step.startswith("batch:"):
            return int(step.split(":", 1)[1])
    return 1


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


def train_config(
    training: Training,
    epochs: int,
    patience: int,
    batch_factor: int = 1,
    early_stopping: bool = True,
    autocast: bool = False,
) -> TrainConfig:
    """The one place a rung's training settings are built: the scenario's recipe at `batch_factor` x the batch size."""
    return TrainConfig(
        max_epochs=epochs,
        patience=patience,
        batch_size=training.batch_size * batch_factor,
        lr=TrainConfig.lr * math.sqrt(batch_factor),  # square-root scaling keeps the noise of each step comparable
        early_stopping=early_stopping,
        seed=training.seed,
        autocast=autocast,
        monitor=training.early_stopping_monitor,
        min_delta_pct=training.early_stopping_min_delta_pct,
        energy_window_s=training.energy_window_s,
    )


@dataclass
class Production:
    """One candidate being produced: what its rung reads, and the energy and tags it has added up so far."""

    scenario: Scenario
    step: Step
    history: list[CandidateResult]
    index: int
    data: CachedData
    meter: EnergyMeter
    spent_j: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    segments: list[TrainSegment] = field(default_factory=list)  # the training runs of this production
    hooks: Hooks = field(default_factory=Hooks)  # the user's loss, metric and training step (`model.*` of the scenario)

    @property
    def label(self) -> str:
        return f"#{self.index} {self.step.label}"

    def parent(self) -> tuple[torch.nn.Module, models.ModelSpec, CandidateResult]:
        """The model this rung starts from (`step.parent`), its spec and its record."""
        parent = self.history[self.step.parent if self.step.parent is not None else 0]
        if parent.model_dir is None or parent.train_energy_j is None:
            raise ValueError(f"parent #{parent.index} has no saved model")
        model, spec = models.load(Path(parent.model_dir))
        return model, spec, parent

    def train(
        self, model: torch.nn.Module, cfg: TrainConfig, teacher: torch.nn.Module | None = None, label: str | None = None
    ) -> tuple[TrainReport, float]:
        """Train `model` on the labels, or on `teacher`'s soft labels; returns the report and the labelling energy."""
        if teacher is None:
            report, labelling_j = (
                fit(model, self.data, cfg, label=label or self.label, meter=self.meter, hooks=self.hooks),
                0.0,
            )
        else:
            ladder = self.scenario.ladder
            report, labelling_j = distill_mod.distill(
                teacher,
                model,
                self.data,
                cfg,
                ladder.distill_temperature,
                ladder.distill_alpha,
                self.meter,
                label or self.label,
                self.hooks,
            )
        self.spent_j += report.energy_j + labelling_j
        work = work_key(model, cfg, teacher is not None)
        self.segments.append(
            TrainSegment(
                origin=self.index,
                run=len(self.segments),
                work=work,
                epochs=report.epochs_run,
                energy_j=report.energy_j + labelling_j,
                energy_sem_j=report.energy_sem_j,
            )
        )
        return report, labelling_j

    def lineage(self, parent: CandidateResult | None = None) -> list[TrainSegment]:
        """The training runs behind the model this production made: its parent's, then its own."""
        return [*(parent.train_segments if parent is not None else []), *self.segments]


def work_key(model: torch.nn.Module, cfg: TrainConfig, distilled: bool) -> str:
    """What makes two training epochs the same work: the parameter shapes (the architecture as trained),
    the batch size, autocast and whether the labels come from a teacher."""
    shapes = ";".join("x".join(map(str, p.shape)) for p in model.parameters())
    digest = hashlib.sha256(shapes.encode()).hexdigest()[:10]
    return (
        f"{digest}/bs{cfg.batch_size}/{'autocast' if cfg.autocast else 'fp32'}/{'teacher' if distilled else 'labels'}"
    )


class Made(NamedTuple):
    """What a rung's producer returns: the model, its spec, the energy of its whole lineage, its main training run."""

    model: torch.nn.Module
    spec: models.ModelSpec
    lineage_j: float
    lineage_sem_j: float
    report: TrainReport | None = None
    segments: list[TrainSegment] | None = None  # the lineage's training runs; None: this production's own
    finish: Callable[[Path], None] | None = None  # writes what the rung adds to the saved model folder


Producer = Callable[[Production], Made]
PRODUCERS: dict[StepKind, Producer] = {}


def producer(*kinds: StepKind) -> Callable[[Producer], Producer]:
    """Register the function that produces candidates of these rung kinds (one per kind)."""

    def register(fn: Producer) -> Producer:
        for kind in kinds:
            PRODUCERS[kind] = fn
        return fn

    return register


def model_spec(scenario: Scenario, data: CachedData) -> models.ModelSpec:
    """The scenario's architecture for this data: the user's factory (`model.factory`) or a built-in (`model.kind`)."""
    settings = scenario.model
    common = dict(input_shape=data.input_shape, out_features=data.out_features, hooks=settings.hooks)
    if settings.factory:
        return models.ModelSpec(factory=settings.factory, **common)
    kwargs = {"hidden": list(settings.hidden)} if settings.kind == "mlp" else {}
    return models.ModelSpec(factory=models.BUILTINS[settings.kind], kwargs=kwargs, **common)


def _fresh(p: Production) -> tuple[torch.nn.Module, models.ModelSpec]:
    """The scenario's architecture, freshly initialised from the training seed."""
    spec = model_spec(p.scenario, p.data)
    torch.manual_seed(p.scenario.training.seed)
    return models.build(spec), spec


@producer(StepKind.BASELINE, StepKind.EARLY_STOPPING, StepKind.MIXED_PRECISION, StepKind.BATCH)
def from_scratch(p: Production) -> Made:
    """The baseline (fixed epochs) and the recipe: early stopping, optionally under autocast or at a larger batch."""
    training, kind = p.scenario.training, p.step.kind
    model, spec = _fresh(p)
    early = kind != StepKind.BASELINE
    mixed = kind == StepKind.MIXED_PRECISION
    factor = int(float(p.step.value or 1)) if kind == StepKind.BATCH else 1
    if early:
        extra = ["mixed-precision:bf16"] if mixed else [f"batch:{factor}"] if factor > 1 else []
        spec = spec.model_copy(update={"history": ["early-stopping", *extra]})
    report, _ = p.train(
        model,
        train_config(training, training.max_epochs, training.patience, factor, early_stopping=early, autocast=mixed),
    )
    return Made(model, spec, report.energy_j, report.energy_sem_j, report)


def _fine_tuned(
    p: Production,
    model: torch.nn.Module,
    spec: models.ModelSpec,
    teacher: torch.nn.Module | None,
    epochs: int,
    parent: CandidateResult,
    autocast: bool = False,
) -> Made:
    """Train a derived model (pruned, student, fake-quantized) on top of its parent's lineage."""
    training = p.scenario.training
    report, _ = p.train(
        model,
        train_config(training, epochs, min(training.patience, epochs), batch_factor(spec.history), autocast=autocast),
        teacher,
    )
    if teacher is not None:
        p.tags["teacher_params"] = str(models.count_params(teacher))
    lineage_j = (
        parent.train_energy_j or 0.0
    ) + p.spent_j  # everything this rung trained, on top of the parent's lineage
    return Made(
        model, spec, lineage_j, math.hypot(parent.train_energy_sem_j, report.energy_sem_j), report, p.lineage(parent)
    )


@producer(StepKind.PRUNE)
def prune(p: Production) -> Made:
    """Structured pruning of the parent at ratio `step.value` (iterative schedules fine-tune between steps), then a
    fine-tune."""
    model, spec, parent = p.parent()
    ladder, training = p.scenario.ladder, p.scenario.training
    teacher = _teacher(p, model)
    p.tags["macs_before"] = str(models.count_macs(model, spec.input_shape))
    p.tags["params_before"] = str(models.count_params(model))
    steps = ladder.pruning_iterative_steps
    epochs = max(1, training.fine_tune_epochs // steps)
    between_cfg = train_config(training, epochs, epochs, batch_factor(spec.history))

    def between(m: torch.nn.Module, i: int) -> None:
        p.train(m, between_cfg, teacher, f"{p.label} step {i + 1}/{steps}")

    model, spec = _pruned(p, model, spec, steps, between)
    if p.step.teacher is not None:
        spec = spec.model_copy(update={"history": [*spec.history, f"kd:#{p.step.teacher}"]})
    epochs = p.step.epochs or training.fine_tune_epochs  # a longer fine-tune when backing off for accuracy
    made = _fine_tuned(p, model, spec, teacher, epochs, parent)
    return made if p.step.teacher is None else _with_teacher_lineage(made, p.history[p.step.teacher])


def _with_teacher_lineage(made: Made, teacher: CandidateResult) -> Made:
    """A model taught by a candidate outside its own lineage cannot be made without that teacher: the teacher's
    training runs join its lineage (each run once, so a run both lineages share is not counted twice)."""
    own = made.segments or []
    have = {(s.origin, s.run) for s in own}
    extra = [s for s in teacher.train_segments if (s.origin, s.run) not in have]
    lineage_j = made.lineage_j + sum(s.energy_j for s in extra)
    return made._replace(
        segments=[*own, *extra],
        lineage_j=lineage_j,
        lineage_sem_j=math.hypot(made.lineage_sem_j, *(s.energy_sem_j for s in extra)),
    )


def _teacher(p: Production, parent_model: torch.nn.Module) -> torch.nn.Module | None:
    """Whose soft labels a pruned model's fine-tune learns: the candidate `step.teacher` names (an accuracy
    back-off), else the unpruned parent with `training.distill_fine_tune`, else none (the labels)."""
    if p.step.teacher is not None:
        record = p.history[p.step.teacher]
        if record.model_dir is None:
            raise ValueError(f"teacher #{record.index} has no saved model")
        p.tags["teacher"] = f"#{record.index}"
        return models.load(Path(record.model_dir))[0]
    return copy.deepcopy(parent_model) if p.scenario.training.distill_fine_tune else None


def _pruned(
    p: Production,
    model: torch.nn.Module,
    spec: models.ModelSpec,
    steps: int = 1,
    between: Callable[[torch.nn.Module, int], None] | None = None,
) -> tuple[torch.nn.Module, models.ModelSpec]:
    """`model` with `step.value` of its channels pruned by the scenario's importance (in `steps`, `between` them)."""
    ladder = p.scenario.ladder
    n = min(256, len(p.data.x_train))
    return compress.prune(
        model,
        spec,
        float(p.step.value),  # type: ignore[arg-type]
        importance=ladder.pruning_importance,
        global_pruning=ladder.pruning_global,
        iterative_steps=steps,
        batch=(p.data.x_train[:n], loss_targets(p.data.y_train[:n], p.data.task)),
        loss_fn=loss_fn(p.data.task, p.hooks),
        between_steps=between,
        keep_layers=p.scenario.model.keep_layers,
        attention=ladder.pruning_attention,
    )


# Training-cost moves: chosen by the policy for a missed training-energy target (`_training_move` in
# thresholds/energy/policy.py); they cut what the lineage costs to train, not what the model costs to run.


def _recipe_of(lineage: list[str]) -> list[str]:
    """The training-recipe steps of a lineage (early stopping, mixed precision, batch factor)."""
    return [s for s in lineage if s == "early-stopping" or s.startswith(("mixed-precision:", "batch:"))] or [
        "early-stopping"
    ]


def _recipe_config(training: Training, recipe: list[str], epochs: int, early_stopping: bool = True) -> TrainConfig:
    """The recipe's training settings (batch factor and autocast of `recipe`) for `epochs`."""
    autocast = "mixed-precision:bf16" in recipe
    return train_config(
        training,
        epochs,
        min(training.patience, epochs),
        batch_factor(recipe),
        early_stopping=early_stopping,
        autocast=autocast,
    )


@producer(StepKind.PRUNE_EARLY)
def prune_early(p: Production) -> Made:
    """`prune-early:r`: train the recipe for `training.prune_at_epoch` epochs, prune r of the channels,
    and keep training the pruned model with early stopping: no separate fine-tune."""
    training = p.scenario.training
    recipe = _recipe_of(p.history[p.step.parent if p.step.parent is not None else 0].lineage)
    at = min(training.prune_at_epoch, training.max_epochs - 1)
    model, spec = _fresh(p)
    first, _ = p.train(
        model, _recipe_config(training, recipe, max(1, at), early_stopping=False), label=f"{p.label} epochs 1-{at}"
    )
    model, spec = _pruned(p, model, spec)
    rest, _ = p.train(
        model, _recipe_config(training, recipe, max(1, training.max_epochs - at)), label=f"{p.label} pruned"
    )
    p.tags.update({"prune_at_epoch": str(at), "epochs_before_pruning": str(first.epochs_run)})
    spec = spec.model_copy(update={"history": [*recipe, f"prune-early:{float(p.step.value):g}@{at}"]})  # type: ignore[arg-type]
    return Made(model, spec, p.spent_j, math.hypot(first.energy_sem_j, rest.energy_sem_j), rest)


@producer(StepKind.PRUNE_ES)
def prune_es(p: Production) -> Made:
    """`prune-es:r/Nep`: prune the parent (the recipe) once and fine-tune with early stopping for at
    most `step.epochs`, the budget the training target leaves."""
    model, spec, parent = p.parent()
    training = p.scenario.training
    teacher = _teacher(p, model)
    model, spec = _pruned(p, model, spec)
    epochs = max(1, p.step.epochs or training.fine_tune_epochs)
    p.tags["fine_tune_budget_epochs"] = str(epochs)
    made = _fine_tuned(p, model, spec, teacher, epochs, parent, autocast="mixed-precision:bf16" in spec.history)
    history = [*spec.history[:-1], f"prune-es:{float(p.step.value):g}/{epochs}ep"]  # type: ignore[arg-type]
    return made._replace(spec=spec.model_copy(update={"history": history}))


@producer(StepKind.SCRATCH)
def scratch(p: Production) -> Made:
    """`scratch`: the parent's (compressed or searched) architecture, fp32, trained from scratch with
    early stopping at the recipe's settings. Its lineage is this training alone: the architecture is
    now known, so reproducing the model needs nothing else (the loop's total counts the search)."""
    _, parent_spec, parent = p.parent()
    training = p.scenario.training
    recipe = _recipe_of(parent_spec.history)
    widths = (
        "-".join(str(w) for w in (parent_spec.hidden or parent_spec.channels)) or f"#{parent.index}"
    )  # a user's model: its parent's structure
    spec = parent_spec.model_copy(update={"precision": "fp32", "history": [*recipe, f"scratch:{widths}"]})
    torch.manual_seed(training.seed)
    model = models.build(spec)
    report, _ = p.train(model, _recipe_config(training, recipe, training.max_epochs))
    p.tags["architecture_from"] = f"#{parent.index}"
    return Made(model, spec, report.energy_j, report.energy_sem_j, report)


@producer(StepKind.DISTILL)
def distill(p: Production) -> Made:
    """A student keeping `step.value` of the parent's widths (a pruned copy of a user's model, or
    `model.student`), trained on the parent's soft labels."""
    teacher, teacher_spec, parent = p.parent()
    torch.manual_seed(p.scenario.training.seed)
    settings = p.scenario.model
    ratio = float(p.step.value)  # type: ignore[arg-type]
    student, spec = distill_mod.student(teacher, teacher_spec, ratio, settings.keep_layers, settings.student)
    epochs = (
        p.step.epochs or p.scenario.training.max_epochs
    )  # `distill:f/Nep`: the budget a missed training target leaves
    return _fine_tuned(p, student, spec, teacher, epochs, parent)


@producer(StepKind.QAT)
def qat(p: Production) -> Made:
    """Quantization-aware training of the parent (int8 fake-quantized weights), then served at int8."""
    model, spec, parent = p.parent()
    models.check_precision(model, spec.model_copy(update={"precision": "int8"}))  # before any training
    teacher = _teacher(p, model)
    quantize.attach(model)
    made = _fine_tuned(p, model, spec, teacher, p.scenario.training.fine_tune_epochs, parent)
    quantize.detach_snapped(model)
    return made._replace(spec=spec.model_copy(update={"precision": "int8", "history": [*spec.history, "qat:int8"]}))


def _served(
    model: torch.nn.Module,
    spec: models.ModelSpec,
    parent: CandidateResult,
    finish: Callable[[Path], None] | None = None,
) -> Made:
    """A serving form of the parent (a precision, a runtime, the fused form): nothing is trained, so its lineage
    is the parent's, energy and runs."""
    return Made(
        model,
        spec,
        parent.train_energy_j or 0.0,
        parent.train_energy_sem_j,
        segments=parent.train_segments,
        finish=finish,
    )


@producer(StepKind.PRECISION)
def precision(p: Production) -> Made:
    """The parent served at a lower precision (`step.value`: int8, fp16, bf16); nothing is trained."""
    model, spec, parent = p.parent()
    value = str(p.step.value)
    spec = spec.model_copy(update={"precision": value, "history": [*spec.history, f"precision:{value}"]})
    models.check_precision(model, spec)
    return _served(model, spec, parent)


@producer(StepKind.SEARCH)
def search(p: Production) -> Made:
    """Energy-aware architecture search: MLP widths trained with the recipe under an analytic energy cap; the
    Pareto set goes to the tags, its most accurate member is the candidate. Its lineage is the whole search."""
    _, base, _ = p.parent()
    ladder, training = p.scenario.ladder, p.scenario.training
    reference = p.history[0].analytic_inference_energy_j_per_1k
    if base.kind != "mlp" or reference is None:
        raise RungNotApplicable("architecture search needs an MLP baseline with an analytic energy estimate")
    cap = reference * ladder.search_max_energy_vs_baseline
    try:
        model, spec, points, front, search_j = search_mod.search(
            base,
            ladder.search_hidden,
            cap,
            p.data,
            train_config(training, training.max_epochs, training.patience),
            p.scenario.measurement.inference_batch_size,
            p.meter,
            f"#{p.index} search",
            p.hooks,
        )
    except ValueError as exc:
        raise RungNotApplicable(str(exc)) from None
    p.spent_j += search_j
    p.tags.update(
        {
            "search.cap_j_per_1k": f"{cap:.6g}",
            "search.tried": str(len(points)),
            "search.pareto": search_mod.as_json(front)[:4000],
            "search.points": search_mod.as_json(points)[:4000],
        }
    )
    return Made(model, spec, search_j, 0.0)


@producer(StepKind.ORT)
def ort(p: Production) -> Made:
    """The parent exported to ONNX and served under onnxruntime at `step.value` (fp32, or int8 by
    onnxruntime's dynamic quantization); nothing is trained. Its measurement (`measure_step`) runs the
    session, and `kept` keeps it only on a measured gain over its torch parent."""
    missing = onnx_runtime.unavailable()
    if missing:
        raise RungNotApplicable(f"the onnxruntime rung {missing}")
    model, spec, parent = p.parent()
    if spec.precision != "fp32":
        raise RungNotApplicable(f"the onnxruntime rung exports fp32 models; #{parent.index} is {spec.precision}")
    precision = str(p.step.value)

    def finish(model_dir: Path) -> None:
        try:
            onnx_runtime.save_for_onnxruntime(model_dir, precision)
        except (
            Exception
        ) as exc:  # the exporter and the quantizer raise many types: the rung does not apply to this model
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise RungNotApplicable(f"ONNX export of #{parent.index} at {precision} failed: {first}") from None

    spec = spec.model_copy(update={"history": [*spec.history, f"ort:{precision}"]})
    return _served(model, spec, parent, finish)


@producer(StepKind.FUSE)
def fuse_form(p: Production) -> Made:
    """The parent served in its fused torch form (`tasks.models.fuse`): the same weights, a runtime.json that says
    `torch-fused`; nothing is trained. Checked to compute what the parent computes before it is measured."""
    model, spec, parent = p.parent()
    if spec.precision != "fp32":
        raise RungNotApplicable(f"the fuse rung serves fp32 models; #{parent.index} is {spec.precision}")
    try:
        fuse.check(model, p.data.x_test[:64].float())
    except fuse.NotFusable as exc:
        raise RungNotApplicable(f"no fused form of #{parent.index}: {exc}") from None

    def finish(model_dir: Path) -> None:
        onnx_runtime.record(model_dir, onnx_runtime.Runtime(runtime="torch-fused"))

    spec = spec.model_copy(update={"history": [*spec.history, "fuse"]})
    return _served(model, spec, parent, finish)


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
    return {"train_energy_attribution": str(attribution)} if attribution else {}


def _measure_inference(
    scenario: Scenario,
    predictor: torch.nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    label: str,
    idle_power_w: float,
    reference_dir: str | None,
) -> tuple[InferenceReport, dict[str, object], float]:
    """The candidate's inference report at the scenario's serving batch sizes (one figure across them:
    `across_sizes`); with a reference model (the baseline) and `measurement.paired`, measured in ABBA
    windows interleaved with it at each size, plus the paired-ratio fields of the result and the energy
    the reference's windows spent. Several sizes share the windows one size would get (at least two
    pairs each), so measuring at more sizes costs little more time."""
    m = scenario.measurement
    sizes = m.batch_sizes_served
    common = dict(min_window_s=m.min_window_s, target_rel_ci=m.target_rel_ci, idle_power_w=idle_power_w)

    def at(b: int) -> str:
        return label if len(sizes) == 1 else f"{label} b{b}"

    if m.paired and reference_dir and m.inference_target == "this-machine" and meter.source != "null":
        ref_model, ref_spec = models.load(Path(reference_dir))
        reference = onnx_runtime.predictor(Path(reference_dir), ref_model, ref_spec, m.inference_threads)
        per_size_min = math.ceil(m.repeats_min / len(sizes))
        pairs_min = max(2, per_size_min + per_size_min % 2)  # whole ABBA blocks
        pairs_max = max(pairs_min, math.ceil(m.repeats_max / len(sizes)))
        try:
            measured = [
                measure_inference_paired(
                    predictor,
                    reference,
                    data,
                    meter,
                    batch_size=b,
                    label=at(b),
                    pairs_min=pairs_min,
                    pairs_max=pairs_max,
                    **common,  # type: ignore[arg-type]
                )
                for b in sizes
            ]
        except ValueError as exc:  # a window read no energy above idle: nothing to pair
            log.warning("%s: paired measurement unavailable (%s); measured alone", label, exc)
        else:
            paired = AcrossSizes(tuple(r for _, _, r in measured))
            theirs = across_sizes([t for _, t, _ in measured])
            low, high = paired.ci95
            tags = {
                "inference_paired_with": reference_dir,
                "inference_reference_j_per_1k": f"{theirs.energy_j_per_1k:.6g}",
            }
            if len(sizes) > 1:
                tags["inference_ratio_worst_size"] = f"{paired.worst:.6g}"
                tags.update(
                    {
                        f"inference_ratio_at_batch_{b}": f"{r.ratio:.6g}"
                        for b, (_, _, r) in zip(sizes, measured, strict=True)
                    }
                )
                tags.update(
                    {
                        f"inference_j_per_1k_at_batch_{b}": f"{mine.energy_j_per_1k:.6g}"
                        for b, (mine, _, _) in zip(sizes, measured, strict=True)
                    }
                )
            fields: dict[str, object] = {
                "inference_ratio_vs_baseline": paired.ratio,
                "inference_ratio_log_sem": paired.log_sem,
                "inference_ratio_ci95_low": low,
                "inference_ratio_ci95_high": high,
                "inference_pairs": paired.n,
                "tags": tags,
            }
            return across_sizes([mine for mine, _, _ in measured]), fields, theirs.total_energy_j
    repeats_max = max(m.repeats_min, math.ceil(m.repeats_max / len(sizes)))
    alone = [
        measure_inference(
            predictor,
            data,
            meter,
            batch_size=b,
            label=at(b),
            repeats_min=m.repeats_min,
            repeats_max=repeats_max,
            **common,  # type: ignore[arg-type]
        )
        for b in sizes
    ]
    per_size = (
        {f"inference_j_per_1k_at_batch_{b}": f"{r.energy_j_per_1k:.6g}" for b, r in zip(sizes, alone, strict=True)}
        if len(sizes) > 1
        else {}
    )
    return across_sizes(alone), {"tags": per_size} if per_size else {}, 0.0


def measure_step(
    scenario: Scenario,
    produced: CandidateResult,
    data_path: str,
    meter: EnergyMeter,
    idle_power_w: float = 0.0,
    reference_dir: str | None = None,
) -> CandidateResult:
    """Score a produced candidate and measure its inference energy (alone on the machine)."""
    if not produced.ok or produced.model_dir is None:
        return produced
    stabilise_allocator()  # also here: in parallel mode this process did not train the model
    started = time.perf_counter()
    try:
        with torch_threads(scenario.measurement.inference_threads):
            return _scored(
                scenario, produced, Path(produced.model_dir), data_path, meter, idle_power_w, reference_dir, started
            )
    except MeterError as exc:
        log.warning("candidate #%d (%s) rejected: %s", produced.index, produced.step.label, exc)
        partial_j = getattr(exc, "partial_energy_j", 0.0)
        return produced.model_copy(
            update={"rejected_reason": str(exc), "spent_energy_j": produced.spent_energy_j + partial_j}
        )


def _scored(
    scenario: Scenario,
    produced: CandidateResult,
    model_dir: Path,
    data_path: str,
    meter: EnergyMeter,
    idle_power_w: float,
    reference_dir: str | None,
    started: float,
) -> CandidateResult:
    """`measure_step`'s work, run at the scenario's inference threads. They are recorded in the folder's
    runtime.json: the served model runs at the threads its figures were measured at."""
    index, step = produced.index, produced.step
    data = load_cached(data_path)
    training = scenario.training
    tags: dict[str, str] = dict(produced.tags)
    result = produced
    threads = scenario.measurement.inference_threads
    model, spec = models.load(model_dir)
    predictor = onnx_runtime.predictor(model_dir, model, spec, threads)
    runtime = onnx_runtime.record(model_dir, onnx_runtime.runtime_of(model_dir).model_copy(update={"threads": threads}))
    tags.update(
        {
            "serving.runtime": runtime.runtime,
            "serving.precision": runtime.precision,
            "serving.threads": str(threads or "default"),
        }
    )
    tags["serving.batch_sizes"] = ",".join(str(b) for b in scenario.measurement.batch_sizes_served)
    if runtime.runtime == "torch" and spec.precision == "int8":
        tags["int8_backend"] = models.int8_backend()
    subset = (
        representative_subset(data.y_test, scenario.measurement.eval_subset, training.seed)
        if scenario.measurement.eval_subset
        else None
    )
    metric, _ = resolve_quality_metric(
        scenario.targets.quality_metric, data, spec.hooks.get("metric")
    )  # the metric the model was saved with
    q = quality(predictor, data, subset, metric)
    tags["eval_samples"] = str(q.samples)
    tags["quality_metric"] = quality_tag(metric, data)
    if q.accuracy_bound95 is not None:
        tags["accuracy_bound95_pt"] = f"{q.accuracy_bound95 * 100:.2f}"
    measure_start = time.perf_counter()
    with contention.watched() as others:
        inference, paired_fields, reference_j = _measure_inference(
            scenario, predictor, data, meter, f"#{index} {step.label} inference", idle_power_w, reference_dir
        )
    tags[contention.TAG] = f"{others.share:.3f}"
    busy = contention.busy_warning(
        f"candidate #{index} ({step.label})", others.share, scenario.measurement.max_other_cpu_share
    )
    if busy:
        log.warning(busy)
        tags["measurement.warning"] = busy
    tags.update(paired_fields.pop("tags", {}))  # type: ignore[call-overload]
    result = result.model_copy(update=paired_fields)
    measure_s = time.perf_counter() - measure_start
    inference_j, inference_sem_j = inference.energy_j_per_1k, inference.energy_sem_j_per_1k
    if spec.kind == "mlp":
        estimate = analytic.inference_energy(model, runtime.precision, scenario.measurement.inference_batch_size)
        tags["analytic_table"] = estimate.table
        result = result.model_copy(update={"analytic_inference_energy_j_per_1k": estimate.energy_j_per_1k})
        if scenario.measurement.inference_target == "analytic-45nm":
            # Targeting an edge device: the gates judge the estimate; the local reading stays on record.
            tags["measured_inference_energy_j_per_1k"] = f"{inference_j:.6g}"
            inference_j, inference_sem_j = estimate.energy_j_per_1k, 0.0
            result = result.model_copy(
                update={"energy_source": f"{meter.source}+analytic:{estimate.table}", "estimated": True}
            )
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
            "macs": models.count_macs(model, spec.input_shape),
            "measure_s": measure_s,
            "wall_s": produced.wall_s + time.perf_counter() - started,
            "tags": tags,
        }
    )
