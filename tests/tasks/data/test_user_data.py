"""Dataset functions (`--dataset PKG.MODULE:FUNCTION`): the contract, materialised as tensors, refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.data.datasets import load_cached, prepare
from tests.conftest import ROOT
from thresholds.errors import InputError

MODULE = """
import torch
from torch.utils.data import Dataset, TensorDataset

g = torch.Generator().manual_seed(0)
X = torch.randn(90, 6, 2, generator=g)
Y = torch.arange(90) % 3
W = torch.rand(90, generator=g, dtype=torch.float64)
M = torch.rand(90, 6, generator=g) > 0.5

class Items(Dataset):  # items as `item(row)` makes them: mappings, tuples, or a mix

    def __init__(self, rows, item):
        self.rows, self.item = list(rows), item

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.item(self.rows[i])

def masked_item(r):
    return {"x": X[r], "y": int(Y[r]), "mask": M[r], "weight": float(W[r])}

def weighted(samples=None, seed=0):
    return {"train": (X[:60], Y[:60], W[:60]), "val": (X[60:75], Y[60:75], W[60:75]), "test": (X[75:], Y[75:], W[75:]),
            "task": "classification"}

def masked():
    return Items(range(60), masked_item), Items(range(60, 90), masked_item), None, "classification"

def columns():
    return {"train": {"x": X[:60], "y": Y[:60], "mask": M[:60]}, "val": {"x": X[60:], "y": Y[60:], "mask": M[60:]},
            "task": "classification"}

def mixed_forms():
    return (Items(range(60), lambda r: masked_item(r) if r != 33 else (X[r], int(Y[r]))),
            Items(range(60, 90), masked_item), None, "classification")

def mapping_without_y():
    return (Items(range(60), lambda r: {"x": X[r], "label": int(Y[r])}),
            Items(range(60, 90), masked_item), None, "classification")

def columns_without_x():
    return {"train": {"inputs": X, "y": Y}, "val": (X, Y), "task": "classification"}

def extra_too_short():
    return {"train": (X, Y, W[:10]), "val": (X, Y, W), "task": "classification"}

def extra_is_text():
    return (Items(range(60), lambda r: (X[r], int(Y[r]), "cat")),
            Items(range(60, 90), lambda r: (X[r], int(Y[r]), "dog")), None, "classification")

def forms_differ():
    return {"train": (X, Y, W), "val": (X, Y), "task": "classification"}

def as_mapping(samples=None, seed=0):
    n = samples or 90
    return {"train": (X[:60], Y[:60]), "val": (X[60:75], Y[60:75]), "test": (X[75:n], Y[75:n]),
            "task": "classification", "class_labels": ["r", "g", "b"]}

def as_tuple_of_datasets():
    return TensorDataset(X[:60], Y[:60]), TensorDataset(X[60:], Y[60:]), None, "classification"

def regression():
    return {"train": (X[:60], Y[:60] * 10.0 + 5), "val": (X[60:], Y[60:] * 10.0 + 5), "task": "regression"}

def a_list():
    return [X, Y]

def missing_val():
    return {"train": (X, Y), "task": "classification"}

def split_is_text():
    return {"train": "train.csv", "val": (X, Y), "task": "classification"}

def bad_task():
    return {"train": (X, Y), "val": (X, Y), "task": "clustering"}

def fractional_classes():
    return {"train": (X, Y + 0.5), "val": (X, Y), "task": "classification"}

def shapes_differ():
    return {"train": (X, Y), "val": (X[:, :3], Y), "task": "classification"}

def raises():
    raise FileNotFoundError("no such file: /data/train.npz")
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_sets.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_mapping_of_tensor_pairs_keeps_its_splits_shape_and_labels(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:as_mapping", user_module / "cache", samples=84)))
    assert data.name == "user_sets" and data.input_shape == (6, 2) and data.x_train.shape == (60, 6, 2)
    assert len(data.y_val) == 15 and len(data.y_test) == 9  # `samples` reached the function
    assert data.class_labels == ("r", "g", "b") and data.n_classes == 3 and data.y_train.dtype == torch.int64
    assert data.preprocessing["format"] == "energy-loop.tensor-preprocessing" and data.preprocessing[
        "sample_shape"
    ] == [6, 2]
    assert list(data.raw_example[0]) == [f"x_{i}" for i in range(12)]


def test_datasets_without_a_test_split_hold_out_a_stratified_part_of_train(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:as_tuple_of_datasets", user_module / "cache")))
    assert len(data.y_train) == 48 and len(data.y_test) == 12 and len(data.y_val) == 30
    assert torch.bincount(data.y_test).tolist() == [4, 4, 4]
    assert any("held out a stratified 20% of the training split" in n for n in data.notes), data.notes


def test_a_regression_target_is_standardised_on_the_training_split(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:regression", user_module / "cache")))
    assert data.task == "regression" and data.out_features == 1
    assert abs(float(data.y_train.mean())) < 1e-5 and float(data.y_train.std()) == pytest.approx(1.0, abs=0.02)
    original = data.y_test.double() * data.target_std + data.target_mean
    assert set(original.round().tolist()) <= {5.0, 15.0, 25.0}  # back in the target's own units


def test_tensors_with_an_extra_keep_it_beside_x_and_y_and_batches_are_tuples(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:weighted", user_module / "cache")))  # read back with weights_only=True
    assert data.extra_keys is None and [len(data.extras[s][0]) for s in ("train", "val", "test")] == [60, 15, 15]
    assert data.extras["train"][0].dtype == torch.float32  # float64 weights as float32, like x
    assert torch.allclose(data.extras["train"][0], __import__("user_sets").W[:60].float())
    batch = data.batch("train", data.y_train, torch.tensor([3, 0, 59]))
    assert isinstance(batch, tuple)
    x, targets, weight = batch
    assert torch.equal(x, data.x_train[[3, 0, 59]]) and torch.equal(targets, data.y_train[[3, 0, 59]])
    assert torch.equal(weight, data.extras["train"][0][[3, 0, 59]])
    assert any(
        "items (x, y, extra of shape ()): only a training step (model.train_step) gets the extras" in n
        for n in data.notes
    ), data.notes


def test_dataset_items_as_mappings_keep_their_extras_aligned_through_the_held_out_test_split(user_module: Path) -> None:
    module = __import__("user_sets")
    data = load_cached(str(prepare("user_sets:masked", user_module / "cache")))
    assert data.extra_keys == ("mask", "weight") and len(data.y_test) == 12 and len(data.y_train) == 48
    assert (
        data.extras["train"][0].dtype == torch.bool and data.extras["train"][1].dtype == torch.float32
    )  # python floats -> float32
    for split in ("train", "val", "test"):
        x: torch.Tensor = getattr(data, f"x_{split}")
        rows = [
            int((module.X == sample).all(dim=(1, 2)).nonzero()) for sample in x
        ]  # which of the function's rows each sample is
        mask, weight = data.extras[split]
        assert torch.equal(mask, module.M[rows]) and torch.allclose(weight, module.W[rows].float()), split
    batch = data.batch("val", data.y_val, slice(0, 4))
    assert (
        isinstance(batch, dict)
        and list(batch) == ["x", "y", "mask", "weight"]
        and all(len(v) == 4 for v in batch.values())
    )


def test_columns_as_a_mapping_are_a_split_whose_batches_are_dicts(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:columns", user_module / "cache")))
    assert data.extra_keys == ("mask",) and data.extras["train"][0].shape == (48, 6)
    assert list(data.batch("train", data.y_train)) == ["x", "y", "mask"]


def test_pairs_carry_no_extras_and_keep_the_pair_batch(user_module: Path) -> None:
    data = load_cached(str(prepare("user_sets:as_mapping", user_module / "cache")))
    assert data.extras == {"train": [], "val": [], "test": []} and data.extra_keys is None
    assert len(data.batch("train", data.y_train)) == 2 and not any("extra" in n for n in data.notes)


@pytest.mark.parametrize(
    ("function", "needle"),
    [
        ("a_list", "returned = 'a list of 2 items': expected {\"train\""),
        ("missing_val", "(missing ['val'])"),
        (
            "split_is_text",
            "train split = 'str': expected a torch Dataset of (x, y, *extras) or {'x', 'y', ...} items, or tensors",
        ),
        (
            "mixed_forms",
            "train split items = 'tuples of 2': expected items of one form, like the first: "
            "mappings with keys ['x', 'y', 'mask', 'weight']",
        ),
        (
            "mapping_without_y",
            "train split = \"a Items whose items have keys ['x', 'label']\": expected mappings with keys 'x' and 'y'",
        ),
        ("columns_without_x", "train split = \"a mapping with keys ['inputs', 'y']\": expected a torch Dataset of"),
        ("extra_too_short", "train split extra [2] = 'shape (10,)': expected 90 rows, one per sample like x and y"),
        (
            "extra_is_text",
            "train split extra [2] = 'a list of str': expected numbers: a number or a tensor per Dataset item",
        ),
        (
            "forms_differ",
            "val split form = '(x, y)': expected the training split's form, (x, y, extra of shape ()): the same extras",
        ),
        ("bad_task", 'task = \'clustering\': expected "classification" or "regression"'),
        ("fractional_classes", "train targets = 'fractional values': expected class indices"),
        ("shapes_differ", "sample shapes = "),
        (
            "raises",
            "expected a dataset function that runs (it raised FileNotFoundError: no such file: /data/train.npz)",
        ),
        ("no_such_function", "expected a callable named 'no_such_function'"),
    ],
)
def test_wrong_returns_are_one_line_naming_what_was_returned(user_module: Path, function: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        prepare(f"user_sets:{function}", user_module / "cache")
    message = str(err.value)
    assert "\n" not in message and needle in message, message


def test_the_mnist1d_sequence_example_is_40_steps_of_1_standardised_feature(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    data = load_cached(str(prepare("examples.mnist1d_sequence:load", tmp_path / "cache", samples=400)))
    assert data.input_shape == (40, 1) and data.n_classes == 10
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 400
    assert isinstance(data.x_train, torch.Tensor)  # only an image folder is ever streamed
    assert abs(float(data.x_train.mean())) < 0.1 and float(data.x_train.std()) == pytest.approx(1.0, abs=0.1)
