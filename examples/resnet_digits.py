"""A ResNet-style CNN for small greyscale images, written as a user of the loop would write it.

Deliberately over-parameterised for 8x8 digits upsampled to 32x32: three stages of residual
blocks with BatchNorm, far wider than the data needs, so the loop's pruning has much to remove.

    energy-loop run --model examples.resnet_digits:make --dataset DIR
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual addition (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, channels: int, n_outputs: int, widths: tuple[int, ...], blocks_per_stage: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(Block(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


def make(
    input_shape: tuple[int, ...], n_outputs: int, widths: tuple[int, ...] = (32, 64, 128), blocks_per_stage: int = 1
) -> nn.Module:
    """`input_shape` is (channels, height, width): 1 channel for greyscale images."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape {tuple(input_shape)}: expected (channels, height, width)")
    return ResNet(input_shape[0], n_outputs, tuple(widths), blocks_per_stage)
