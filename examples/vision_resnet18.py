"""torchvision's ResNet-18, untrained, for images of any channel count (`pip install -e '.[vision]'`).

energy-loop run --model examples.vision_resnet18:make --dataset DIR
"""

from __future__ import annotations

from torch import nn

from tasks.models import vision_compat


def make(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """`input_shape` is (channels, height, width); no pretrained weights are downloaded."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape {tuple(input_shape)}: expected (channels, height, width)")
    torchvision = vision_compat.load()  # the optional [vision] extra, beside the CPU torch
    model = torchvision.models.resnet18(weights=None, num_classes=n_outputs)
    if input_shape[0] != 3:  # the stem takes RGB; greyscale (or other) images get a stem of their own
        model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
