"""One producer per rung kind, registered by `@producer(StepKind.X)`: a function from the `Production` to the model
it `Made`. The rung table (thresholds/energy/policy/rungs.py) says what each rung is and when the ladder takes it;
its producer here makes it."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch

from tasks.common.errors import RungNotApplicable
from tasks.compression import distill as distill_mod
from tasks.compression import onnx_runtime
from tasks.compression import prune as compress
from tasks.compression import qat as quantize
from tasks.compression import search as search_mod
from tasks.energy_loop.production import Made, Production, batch_factor, model_spec, train_config
from tasks.models import factory as models
from tasks.models import fuse
from tasks.models.train import TrainConfig, loss_fn, loss_targets
from thresholds.energy import keys
from thresholds.energy.policy import CandidateResult, StepKind
from thresholds.energy.schema import Training

Producer = Callable[[Production], Made]
PRODUCERS: dict[StepKind, Producer] = {}


def producer(*kinds: StepKind) -> Callable[[Producer], Producer]:
    """Register the function that produces candidates of these rung kinds (one per kind: a second one is an error)."""

    def register(fn: Producer) -> Producer:
        for kind in kinds:
            if kind in PRODUCERS:
                raise ValueError(f"rung {kind.value!r} has a producer already: {PRODUCERS[kind].__name__}")
            PRODUCERS[kind] = fn
        return fn

    return register


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
        p.tags[keys.TEACHER_PARAMS] = str(models.count_params(teacher))
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
    p.tags[keys.MACS_BEFORE] = str(models.count_macs(model, spec.input_shape))
    p.tags[keys.PARAMS_BEFORE] = str(models.count_params(model))
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
        p.tags[keys.TEACHER] = f"#{record.index}"
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
    how = compress.Pruning(
        importance=ladder.pruning_importance,
        global_pruning=ladder.pruning_global,
        iterative_steps=steps,
        keep_layers=p.scenario.model.keep_layers,
        attention=ladder.pruning_attention,
    )
    return compress.prune(
        model,
        spec,
        float(p.step.value),  # type: ignore[arg-type]
        how,
        batch=(p.data.x_train[:n], loss_targets(p.data.y_train[:n], p.data.task)),
        loss_fn=loss_fn(p.data.task, p.hooks),
        between_steps=between,
    )


# Training-cost moves (thresholds/energy/policy/training_moves.py): they cut what the lineage costs to train, not what
# the model costs to run.


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
    p.tags.update({keys.PRUNE_AT_EPOCH: str(at), keys.EPOCHS_BEFORE_PRUNING: str(first.epochs_run)})
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
    p.tags[keys.FINE_TUNE_BUDGET_EPOCHS] = str(epochs)
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
    p.tags[keys.ARCHITECTURE_FROM] = f"#{parent.index}"
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
            search_mod.Space(base, ladder.search_hidden, cap, p.scenario.measurement.inference_batch_size),
            p.data,
            train_config(training, training.max_epochs, training.patience),
            p.meter,
            f"#{p.index} search",
            p.hooks,
        )
    except ValueError as exc:
        raise RungNotApplicable(str(exc)) from None
    p.spent_j += search_j
    p.tags.update(
        {
            keys.SEARCH_CAP_J_PER_1K: f"{cap:.6g}",
            keys.SEARCH_TRIED: str(len(points)),
            keys.SEARCH_PARETO: search_mod.as_json(front)[:4000],
            keys.SEARCH_POINTS: search_mod.as_json(points)[:4000],
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
