"""A user's loss, metric and training step: `model.loss`, `model.metric`, `model.train_step`.

Each is a `PKG.MODULE:FUNCTION`, resolved like the model factory (tasks/common/plugins.py), set in the
scenario's `model:` section or with `--loss`, `--metric`, `--train-step`, and recorded in the
saved model's spec. The three share one vocabulary: `outputs` is the model's `(B, K)` output
(logits; one column for regression) and `targets` the batch's targets as the loss sees them,
class indices `(B,)` (int64) or standardised values `(B, 1)` (float32).

    loss(outputs, targets) -> scalar tensor
        replaces cross-entropy / MSE wherever the loop computes a loss on labels: training,
        fine-tuning, early stopping's validation loss, distillation's hard-label term and the
        gradients of Taylor pruning (a train_step is not used there: Taylor scores the outputs' loss).
    metric(outputs, targets) -> float in [0, 1], higher is better
        the candidate's quality on the test split in place of accuracy (the accuracy targets
        judge it; the `quality_metric` tag names it), and what `early_stopping_monitor: accuracy`
        watches on the validation split.
    train_step(model, batch) -> scalar tensor
        the loss of one training batch, computed your way (the loop runs autocast, the backward
        pass and the Adam step). `batch` keeps the form of the dataset's items: `(x, targets)` for
        tables, images and `(x, y)` items; `(x, targets, *extras)` or `{"x": x, "y": targets, **extras}`
        for a dataset function whose items carry more (a mask, sample weights, an auxiliary target:
        tasks/data/user_data.py), every part indexed by the batch's rows. x is `(B, *input_shape)` float32
        as the dataset gave it. The validation loss is the training step on the whole validation
        split in that form, in eval mode without gradients. Distillation trains on soft labels, so
        it does not apply then.

The model, the loss, the metric, pruning and serving see x and targets alone: only a training step
gets the extras. Every hook is tried once on a tiny batch of the first training rows, in the
dataset's form, before the flow starts (`check`); a hook that raises or returns the wrong thing,
there or later in the loop, is one `InputError` line naming the field, the hook and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tasks.common.plugins import first_line, resolve_callable
from tasks.data.datasets import Batch
from thresholds.energy.schema import HookName
from thresholds.errors import InputError

CONTRACTS: dict[HookName, str] = {
    "loss": "a function (outputs, targets) -> scalar loss tensor",
    "metric": "a function (outputs, targets) -> float in [0, 1], higher is better",
    "train_step": "a function (model, batch) -> scalar loss tensor, where batch = (x, targets, *extras) or "
    "{'x': x, 'y': targets, **extras}",
}


def inputs_and_targets(batch: Batch) -> tuple[Tensor, Tensor]:
    """The model's input and the loss's targets of a batch of either form."""
    return (batch["x"], batch["y"]) if isinstance(batch, dict) else (batch[0], batch[1])


def field_of(hook: HookName) -> str:
    """The scenario key of a hook (`--loss` and the others set it on the command line)."""
    return f"model.{hook}"


@dataclass(frozen=True)
class Hooks:
    """The hooks that are set, resolved: call them through `loss`, `metric` and `train_step`, which check what they
    return."""

    names: Mapping[HookName, str] = field(default_factory=dict)  # hook -> PKG.MODULE:FUNCTION
    functions: Mapping[HookName, Callable[..., Any]] = field(default_factory=dict)

    def __contains__(self, hook: object) -> bool:
        return hook in self.functions

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self._scalar("loss", self._call("loss", outputs, targets))

    def train_step(self, model: nn.Module, batch: Batch) -> Tensor:
        return self._scalar("train_step", self._call("train_step", model, batch))

    def metric(self, outputs: Tensor, targets: Tensor) -> float:
        value = self._call("metric", outputs, targets)
        try:
            number = float(value)
        except Exception:  # a tensor of several values, a string, None: whatever it is, the same line
            raise self.error("metric", f"it returned {_shown(value)}") from None
        if not (math.isfinite(number) and 0 <= number <= 1):
            raise self.error("metric", f"it returned {number:g}")
        return number

    def _call(self, hook: HookName, *args: Any) -> Any:
        try:
            return self.functions[hook](*args)
        except InputError:
            raise
        except Exception as exc:  # the user's code: its message, on one line
            raise self.error(hook, f"it raised {first_line(exc)}") from None

    def _scalar(self, hook: HookName, value: Any) -> Tensor:
        if not isinstance(value, Tensor) or value.numel() != 1 or not value.is_floating_point():
            raise self.error(hook, f"it returned {_shown(value)}")
        return value.reshape(())

    def error(self, hook: HookName, why: str) -> InputError:
        return InputError(field_of(hook), self.names[hook], f"{CONTRACTS[hook]} ({why})")


def _shown(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def resolve(names: Mapping[HookName, str]) -> Hooks:
    """Import every hook that is set (one `InputError` line for the first that does not resolve)."""
    return Hooks(dict(names), {hook: resolve_callable(value, field_of(hook)) for hook, value in names.items()})


def check(names: Mapping[HookName, str], model: nn.Module, batch: Batch) -> Hooks:
    """Resolve the hooks and try each once with `model` on a tiny batch in the dataset's form, before any
    training: the training step takes the batch, the loss and the metric its x and targets.

    The loss and the training step must also be differentiable (a loss computed through `.item()` or
    numpy would train nothing); the metric must be a number in [0, 1].
    """
    hooks = resolve(names)
    x, targets = inputs_and_targets(batch)
    was_training = model.training
    try:
        model.train()
        if "loss" in hooks:
            _backward(hooks, "loss", hooks.loss(model(x).float(), targets))
        if "train_step" in hooks:
            _backward(hooks, "train_step", hooks.train_step(model, batch))
        if "metric" in hooks:
            with torch.no_grad():
                hooks.metric(model.eval()(x).float(), targets)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return hooks


def _backward(hooks: Hooks, hook: HookName, loss: Tensor) -> None:
    if not loss.requires_grad:
        raise hooks.error(hook, "its result has no gradient: was it computed with .item(), .detach() or numpy?")
    try:
        loss.backward()
    except Exception as exc:
        raise hooks.error(hook, f"its backward pass raised {first_line(exc)}") from None
