"""Dataset functions (`--dataset PKG.MODULE:FUNCTION`): the contract, materialised as tensors, refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.data import load_cached, prepare
from tests.conftest import ROOT
from thresholds.errors import InputError

MODULE = """
import torch
from torch.utils.data import TensorDataset

g = torch.Generator().manual_seed(0)
X = torch.randn(90, 6, 2, generator=g)
Y = torch.arange(90) % 3

def as_mapping(samples=None, seed=0):
    n = samples or 90
    return {"train": (X[:60], Y[:60]), "val": (X[60:75], Y[60:75]), "test": (X[75:n], Y[75:n]), "task": "classification", "class_labels": ["r", "g", "b"]}

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
    assert data.preprocessing["format"] == "energy-loop.tensor-preprocessing" and data.preprocessing["sample_shape"] == [6, 2]
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


@pytest.mark.parametrize(
    ("function", "needle"),
    [
        ("a_list", "returned = 'a list of 2 items': expected {\"train\""),
        ("missing_val", "(missing ['val'])"),
        ("split_is_text", "train split = 'str': expected a torch Dataset of (x, y) pairs or a pair of tensors"),
        ("bad_task", 'task = \'clustering\': expected "classification" or "regression"'),
        ("fractional_classes", "train targets = 'fractional values': expected class indices"),
        ("shapes_differ", "sample shapes = "),
        ("raises", "expected a dataset function that runs (it raised FileNotFoundError: no such file: /data/train.npz)"),
        ("no_such_function", "expected a callable named 'no_such_function'"),
    ],
)
def test_wrong_returns_are_one_line_naming_what_was_returned(user_module: Path, function: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        prepare(f"user_sets:{function}", user_module / "cache")
    message = str(err.value)
    assert "\n" not in message and needle in message, message


def test_the_mnist1d_sequence_example_is_40_steps_of_1_standardised_feature(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    data = load_cached(str(prepare("examples.mnist1d_sequence:load", tmp_path / "cache", samples=400)))
    assert data.input_shape == (40, 1) and data.n_classes == 10
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 400
    assert isinstance(data.x_train, torch.Tensor)  # only an image folder is ever streamed
    assert abs(float(data.x_train.mean())) < 0.1 and float(data.x_train.std()) == pytest.approx(1.0, abs=0.1)
