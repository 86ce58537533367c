"""A Transformer-encoder classifier for sequences, written as a user of the loop would write it.

Each sample is (steps, features), for example mnist1d read as 40 steps of 1 feature. The steps
are embedded, get a learned position, go through self-attention layers, and are averaged.

    energy-loop run --model examples.transformer_seq:make --dataset PKG.MODULE:FUNCTION
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TransformerClassifier(nn.Module):
    def __init__(self, steps: int, features: int, n_outputs: int, d_model: int, n_heads: int, n_layers: int, ff_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.position = nn.Parameter(torch.zeros(1, steps, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=ff_dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(self.embed(x) + self.position)
        return self.head(self.norm(h.mean(dim=1)))


def make(input_shape: tuple[int, ...], n_outputs: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, ff_dim: int = 128) -> nn.Module:
    """`input_shape` is (steps, features)."""
    if len(input_shape) != 2:
        raise ValueError(f"input_shape {tuple(input_shape)}: expected (steps, features)")
    steps, features = input_shape
    return TransformerClassifier(steps, features, n_outputs, d_model, n_heads, n_layers, ff_dim)
