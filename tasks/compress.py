"""Structured pruning with torch-pruning: channels (neurons) are removed, the output layer is kept.

Options: L2-magnitude or first-order Taylor importance (needs a batch and a loss), per-layer
or global ratios, one-shot or an iterative schedule with a callback between steps (the loop
fine-tunes there). The result is an ordinary narrower model: its spec records the new widths
and the pruning step, so it reloads exactly with `weights_only=True`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tasks.models import ModelSpec, widths_of


def pruning_label(ratio: float, importance: str = "magnitude", global_pruning: bool = False, iterative_steps: int = 1) -> str:
    options = [
        o
        for o in (importance if importance != "magnitude" else "", "global" if global_pruning else "", f"x{iterative_steps}" if iterative_steps > 1 else "")
        if o
    ]
    return f"prune:{ratio:g}" + (f"({','.join(options)})" if options else "")


def prune(
    model: nn.Module,
    spec: ModelSpec,
    ratio: float,
    importance: str = "magnitude",
    global_pruning: bool = False,
    iterative_steps: int = 1,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: nn.Module | None = None,
    between_steps: Callable[[nn.Module, int], None] | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Remove `ratio` of the channels of the prunable layers, in place.

    `ratio` counts channels (neurons), not parameters, as torch-pruning does. With Taylor
    importance, `batch` and `loss_fn` provide the gradients it scores channels by.
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio = {ratio!r}: expected a fraction of channels in (0, 1)")
    if importance not in ("magnitude", "taylor"):
        raise ValueError(f"importance = {importance!r}: expected 'magnitude' or 'taylor'")
    if importance == "taylor" and (batch is None or loss_fn is None):
        raise ValueError("taylor importance needs a batch and a loss function to compute gradients")
    if iterative_steps < 1:
        raise ValueError(f"iterative_steps = {iterative_steps!r}: expected an integer >= 1")
    example = torch.zeros(1, spec.in_features)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    scorer = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=scorer,
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        iterative_steps=iterative_steps,
        ignored_layers=heads,
    )
    for step in range(iterative_steps):
        if importance == "taylor":
            assert batch is not None and loss_fn is not None
            model.zero_grad()
            loss_fn(model(batch[0]), batch[1]).backward()
        pruner.step()
        if between_steps is not None and step < iterative_steps - 1:
            between_steps(model, step)
    model.zero_grad(set_to_none=True)
    new_spec = widths_of(model, spec)
    label = pruning_label(ratio, importance, global_pruning, iterative_steps)
    return model, new_spec.model_copy(update={"history": [*spec.history, label]})
