"""Knowledge distillation (Hinton et al. 2015): a narrower student learns the teacher's soft labels.

The student is, by default, the teacher's own architecture made narrower: the built-ins with every
width scaled (fresh weights, as before), any other model as a pruned copy of the teacher that
keeps `width_factor` of its channels (it starts from the teacher's surviving weights). A second
factory may be named instead (`model.student`); it is built fresh for the same inputs and outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from tasks.compression import prune as compress
from tasks.data.datasets import CachedData, outputs
from tasks.meters.base import EnergyMeter
from tasks.models import factory as models
from tasks.models.hooks import Hooks
from tasks.models.train import BatchLoss, TrainConfig, TrainReport, fit, loss_targets


def student_spec(teacher: models.ModelSpec, width_factor: float) -> models.ModelSpec:
    """The teacher's architecture with every hidden width (or channel count) scaled by `width_factor`."""
    if not 0 < width_factor < 1:
        raise ValueError(f"width_factor = {width_factor!r}: expected a fraction in (0, 1)")
    scale = lambda widths: [max(1, round(w * width_factor)) for w in widths]  # noqa: E731
    return teacher.model_copy(
        update={
            "hidden": scale(teacher.hidden),
            "channels": scale(teacher.channels),
            "precision": "fp32",
            "history": [*teacher.history, f"distill:{width_factor:g}"],
        }
    )


def student(
    teacher: nn.Module,
    teacher_spec: models.ModelSpec,
    width_factor: float,
    keep_layers: Sequence[str] = (),
    factory: str | None = None,
) -> tuple[nn.Module, models.ModelSpec]:
    """The student for `teacher`: a second factory's model, a narrower built-in, or a pruned copy (see the module
    docstring).

    Call under a fixed seed: fresh students are initialised from the global generator.
    """
    if factory is not None:
        spec = models.ModelSpec(
            factory=factory,
            input_shape=teacher_spec.input_shape,
            out_features=teacher_spec.out_features,
            hooks=teacher_spec.hooks,
        )
        spec = spec.model_copy(update={"history": [*teacher_spec.history, f"distill:{factory}"]})
        return models.build(spec), spec
    if teacher_spec.kind in models.BUILTINS and not teacher_spec.pruned:
        spec = student_spec(teacher_spec, width_factor)
        return models.build(spec), spec
    if not 0 < width_factor < 1:
        raise ValueError(f"width_factor = {width_factor!r}: expected a fraction in (0, 1)")
    model, spec = compress.prune(
        copy.deepcopy(teacher), teacher_spec, 1 - width_factor, compress.Pruning(keep_layers=keep_layers)
    )
    history = [*teacher_spec.history, f"distill:{width_factor:g}"]
    return model, spec.model_copy(update={"precision": "fp32", "history": history})


def distillation_loss(
    teacher_out: torch.Tensor,
    y: torch.Tensor,
    task: str,
    temperature: float,
    alpha: float,
    hard: BatchLoss | None = None,
) -> BatchLoss:
    """alpha x soft-label loss (KL at temperature T, scaled by T^2) + (1 - alpha) x hard-label loss;
    `hard(outputs, targets)` (the user's loss) replaces the task's hard-label loss."""
    targets = loss_targets(y, task)
    if task == "classification":
        soft = nn.functional.log_softmax(teacher_out / temperature, dim=1)

        def loss(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            kd = nn.functional.kl_div(
                nn.functional.log_softmax(out / temperature, dim=1), soft[idx], log_target=True, reduction="batchmean"
            )
            labels = nn.functional.cross_entropy(out, y[idx]) if hard is None else hard(out, targets[idx])
            return alpha * kd * temperature**2 + (1 - alpha) * labels

        return loss

    def regression_loss(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        labels = nn.functional.mse_loss(out.squeeze(1), y[idx]) if hard is None else hard(out, targets[idx])
        return alpha * nn.functional.mse_loss(out, teacher_out[idx]) + (1 - alpha) * labels

    return regression_loss


class SoftLabels(NamedTuple):
    """How the student learns the teacher's outputs: softened at `temperature`, weighted `alpha` against the labels."""

    temperature: float = 4.0
    alpha: float = 0.7


HINTON = SoftLabels()  # the defaults: T = 4, alpha = 0.7


def distill(
    teacher: nn.Module,
    student: nn.Module,
    data: CachedData,
    cfg: TrainConfig,
    soft: SoftLabels = HINTON,
    meter: EnergyMeter | None = None,
    label: str = "distill",
    hooks: Hooks | None = None,
) -> tuple[TrainReport, float]:
    """Train `student` in place; returns its report and the energy of the teacher's labelling pass.
    `hooks`: the user's (tasks/models/hooks.py); their loss is the hard-label term."""
    hooks = hooks or Hooks()
    teacher.eval()
    labelling_j = 0.0
    if meter is not None:
        with meter.window(f"{label} teacher labels") as window, torch.no_grad():
            teacher_out = outputs(teacher, data.x_train)
        labelling_j = window.measurement.energy_j
    else:
        with torch.no_grad():
            teacher_out = outputs(teacher, data.x_train)
    loss = distillation_loss(
        teacher_out, data.y_train, data.task, soft.temperature, soft.alpha, hooks.loss if "loss" in hooks else None
    )
    return fit(student, data, cfg, label=label, meter=meter, batch_loss=loss, hooks=hooks), labelling_j
