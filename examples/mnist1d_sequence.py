"""mnist1d as a sequence task: each sample is 40 steps of 1 feature, standardised: a `--dataset` function.

    energy-loop run --scenario dev-cpu --model examples.transformer_seq:make --dataset examples.mnist1d_sequence:load

`load` follows the dataset-function contract of `tasks/data/user_data.py`: it returns the train, validation
and test splits as (x, y) tensor pairs, and the task. Offline: mnist1d generates its data.
"""

from __future__ import annotations

from typing import Any


def load(samples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """`samples` signals in all (default 5000): 80 % train, of which 15 % validation, and mnist1d's own 20 % test
    split."""
    import numpy as np
    import torch
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples or 5000
    args.seed = seed
    data = make_dataset(args)
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    mean, std = float(x.mean()), float(x.std()) or 1.0  # one scale for every step: the training signals' statistics

    def shaped(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((values.astype(np.float32) - mean) / std).unsqueeze(
            -1
        )  # (N, 40) -> (N, 40 steps, 1 feature)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = len(x) * 15 // 100
    val, train = order[:n_val], order[n_val:]
    return {
        "train": (shaped(x[train]), torch.from_numpy(y[train])),
        "val": (shaped(x[val]), torch.from_numpy(y[val])),
        "test": (shaped(data["x_test"]), torch.from_numpy(data["y_test"].astype(np.int64))),
        "task": "classification",
    }
