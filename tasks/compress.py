"""Structured pruning with torch-pruning (channels, output layer kept)."""

from __future__ import annotations

import torch
from torch import nn

from tasks.models import ModelSpec, widths_of


def prune(model: nn.Module, spec: ModelSpec, ratio: float) -> tuple[nn.Module, ModelSpec]:
    """Remove `ratio` of the channels of every prunable layer by L2 magnitude, in place.

    `ratio` counts channels (neurons), not parameters, as torch-pruning does.
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio = {ratio!r}: expected a fraction of channels in (0, 1)")
    example = torch.zeros(1, spec.in_features)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=heads,
    )
    pruner.step()
    new_spec = widths_of(model, spec)
    return model, new_spec.model_copy(update={"history": [*spec.history, f"prune:{ratio:g}"]})
