"""Quantization-aware training for the int8 rung.

While training, every Linear weight is replaced by its int8 fake-quantized value (symmetric,
per tensor, as torch.ao's dynamic quantization rounds it) with a straight-through gradient,
so the network learns weights that survive the rounding. The weights are then snapped to
the int8 grid and the model is served, like the PTQ rung, with dynamic int8 quantization.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class FakeQuantInt8(nn.Module):
    """Weight -> its symmetric int8 fake-quantized value; the gradient passes straight through."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = float(weight.detach().abs().max().clamp(min=1e-8)) / 127.5
        return torch.fake_quantize_per_tensor_affine(weight, scale, 0, -128, 127)


def attach(model: nn.Module) -> nn.Module:
    """Fake-quantize every Linear weight of `model` (in place) until `detach_snapped` is called."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and not parametrize.is_parametrized(module, "weight"):
            parametrize.register_parametrization(module, "weight", FakeQuantInt8())
    return model


def detach_snapped(model: nn.Module) -> nn.Module:
    """Remove the fake quantizers, keeping the weights on the int8 grid they were trained for."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
