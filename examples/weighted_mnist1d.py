"""mnist1d with five rare classes, and a training step that weighs each sample: items `(x, y, weight)`.

    energy-loop run --scenario dev-cpu --dataset examples.weighted_mnist1d:load
                    --train-step examples.weighted_mnist1d:weighted_step

`load` is a dataset function (the contract of `tasks/data/user_data.py`) whose splits are tensors
`(x, y, weight)`: the training and validation splits keep every signal of digits 0-4 and one in
`RARE_SHARE` of digits 5-9, and each sample weighs `n / (K * n_class)`, so every class counts the same
in the loss (sklearn's "balanced" class weight); the test split is mnist1d's own, balanced one.
`weighted_step` is a training step (`--train-step`) that uses the weight: the loop hands it each
batch as the dataset gave it, `(x, targets, weight)` with the batch's rows; the model itself, the
accuracy and serving see x alone. Without `--train-step` the weights are carried but unused.
Weighing trades the common digits' accuracy for the rare ones': with the default MLP on 5000 signals
(3 seeds, tasks/models/train.py `fit`), digits 5-9 went from 0.22 to 0.38 test accuracy, digits 0-4 from
0.66 to 0.47, all ten from 0.44 to 0.43.
A torch Dataset of items `{"x": ..., "y": ..., "weight": ...}` would do the same, with dict batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

RARE_SHARE = 0.2  # the share of digits 5-9 kept in the training and validation splits


def balanced_weights(y: Tensor, n_classes: int = 10) -> Tensor:
    """Each sample's weight `n / (K * n_class)`: every class weighs as much as in a balanced split."""
    counts = torch.bincount(y, minlength=n_classes).clamp(min=1).float()
    return (len(y) / (n_classes * counts))[y]


def load(samples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """`samples` signals generated (default 5000): 80 % become the imbalanced train and validation splits
    (15 % of what is kept validates), 20 % mnist1d's balanced test split. x is (N, 40), standardised."""
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples or 5000
    args.seed = seed
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero((y < 5) | (rng.random(len(y)) < RARE_SHARE))
    mean, std = float(x[kept].mean()), float(x[kept].std()) or 1.0

    def split(rows: np.ndarray | None) -> tuple[Tensor, Tensor, Tensor]:
        signals, labels = (data["x_test"], data["y_test"]) if rows is None else (x[rows], y[rows])
        targets = torch.from_numpy(labels.astype(np.int64))
        return torch.from_numpy((signals.astype(np.float32) - mean) / std), targets, balanced_weights(targets)

    order = rng.permutation(kept)
    n_val = len(order) * 15 // 100
    return {"train": split(order[n_val:]), "val": split(order[:n_val]), "test": split(None), "task": "classification"}


def weighted_step(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """The batch's cross-entropy, each sample counted by its weight (a weighted mean, like
    `CrossEntropyLoss(weight=...)`)."""
    x, targets, weight = batch
    per_sample = nn.functional.cross_entropy(model(x).float(), targets, reduction="none")
    return (per_sample * weight).sum() / weight.sum()
