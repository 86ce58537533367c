"""Bad models, hooks and data of your own, through the real CLI: found before the flow starts, one line, exit 2,
no traceback anywhere, nothing registered (no tracking store and no Prefect home even created)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_loop_cli

pytestmark = pytest.mark.integration

USER_CODE = """
import torch
from torch import nn

def good(input_shape, n_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), n_outputs))

def raises(input_shape, n_outputs):
    raise ValueError("needs 3 channels, got a greyscale input")

def one_output_too_many(input_shape, n_outputs):
    return good(input_shape, n_outputs + 1)

class Hog(nn.Module):
    def __init__(self, n_outputs):
        super().__init__()
        self.head = nn.Linear(4, n_outputs)

    def forward(self, x):
        if len(x) > 2:
            torch.empty(2**50)  # 4 PiB: a real allocation failure at the training batch size
        return self.head(x.flatten(1)[:, :4])

def hog(input_shape, n_outputs):
    return Hog(n_outputs)

def returns_a_list():
    return [torch.zeros(4, 3), torch.zeros(4)]

def weighted(samples=None, seed=0):  # items (x, y, weight)
    x, y = torch.randn(60, 4), torch.arange(60) % 2
    return {"train": (x[:40], y[:40], torch.ones(40)), "val": (x[40:], y[40:], torch.ones(20)),
            "task": "classification"}

def weight_too_short(samples=None, seed=0):
    x, y = torch.randn(60, 4), torch.arange(60) % 2
    return {"train": (x[:40], y[:40], torch.ones(10)), "val": (x[40:], y[40:], torch.ones(20)),
            "task": "classification"}

def step_for_pairs(model, batch):
    x, targets = batch
    return nn.functional.cross_entropy(model(x), targets)

def loss_raises(outputs, targets):
    raise KeyError("class_weights")

def metric_above_one(outputs, targets):
    return 1.5
"""


def _images(root: Path, classes: dict[str, int], size: tuple[int, int] = (8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _good_folder(root: Path) -> Path:
    return _images(root, {"a": 12, "b": 12})


def _one_class(root: Path) -> Path:
    return _images(root, {"a": 25})


def _empty_class(root: Path) -> Path:
    _good_folder(root)
    (root / "c").mkdir()
    return root


def _corrupt_file(root: Path) -> Path:
    _good_folder(root)
    (root / "b" / "7.png").write_bytes(b"not a PNG at all" * 8)
    return root


def _non_image_file(root: Path) -> Path:
    _good_folder(root)
    (root / "a" / "labels.csv").write_text("file,label\n")
    return root


def _mixed_sizes(root: Path) -> Path:
    _good_folder(root)
    _images(root / "b", {"big": 1}, size=(16, 12))
    return root


# (id, dataset maker -> --dataset value, extra CLI arguments, what the one line must say)
IMPORT = ["--model", "no_such_package.models:make"]
HOG = ["--model", "user_code:hog"]
GOOD = ["--model", "user_code:good"]
CASES: list[tuple[str, Callable[[Path], str], list[str], str]] = [
    ("model does not import", lambda d: str(_good_folder(d)), IMPORT,
     "model.factory = 'no_such_package.models:make': expected an importable"),
    ("model names no callable", lambda d: str(_good_folder(d)), ["--model", "user_code:missing"],
     "expected a callable named 'missing' in module 'user_code'"),
    ("factory raises", lambda d: str(_good_folder(d)), ["--model", "user_code:raises"],
     "(it raised ValueError: needs 3 channels, got a greyscale input)"),
    ("output shape mismatch", lambda d: str(_good_folder(d)), ["--model", "user_code:one_output_too_many"],
     "model output shape = (2, 3): expected (2, 2)"),
    ("model does not fit in memory", lambda d: str(_good_folder(d)), HOG,
     "training.batch_size = 64: expected a batch size at which user_code:hog fits"),
    ("dataset function returns the wrong types", lambda d: "user_code:returns_a_list", [],
     "returned = 'a list of 2 items': expected {\"train\""),
    ("dataset function does not import", lambda d: "no_such_package.data:load", [],
     "--dataset = 'no_such_package.data:load': expected an importable module"),
    ("dataset function extra of another length", lambda d: "user_code:weight_too_short", [],
     "train split extra [2] = 'shape (10,)': expected 40 rows, one per sample like x and y"),
    ("train step gets the dataset's form", lambda d: "user_code:weighted",
     [*GOOD, "--train-step", "user_code:step_for_pairs"],
     # the dry run's batch: (x, targets, weight)
     "or {'x': x, 'y': targets, **extras} (it raised ValueError: too many values to unpack (expected 2))"),
    ("one class", lambda d: str(_one_class(d)), [], "class folders = ['a']: expected at least 2 subfolders"),
    ("empty class", lambda d: str(_empty_class(d)), [],
     "class folder = 'c': expected at least one PNG or JPEG image (it is empty)"),
    ("corrupt image", lambda d: str(_corrupt_file(d)), [], "file = 'b/7.png': expected a readable PNG or JPEG image"),
    ("non-image file", lambda d: str(_non_image_file(d)), [],
     "file = 'a/labels.csv': expected only PNG or JPEG images"),
    ("mixed image sizes", lambda d: str(_mixed_sizes(d)), [],
     "image size = '12x16 (b/big/0.png)': expected every image 8x8 like 24 of 25"),
    ("bad --image-size", lambda d: str(_good_folder(d)), ["--image-size", "big"],
     "--image-size = 'big': expected HxW in pixels"),
    ("loss does not import", lambda d: str(_good_folder(d)), [*GOOD, "--loss", "no_such_package.losses:focal"],
     "model.loss = 'no_such_package.losses:focal': expected an importable module"),
    ("loss raises", lambda d: str(_good_folder(d)), [*GOOD, "--loss", "user_code:loss_raises"],
     "model.loss = 'user_code:loss_raises': expected a function (outputs, targets) -> scalar loss tensor "
     "(it raised KeyError: 'class_weights')"),
    ("metric out of range", lambda d: str(_good_folder(d)), [*GOOD, "--metric", "user_code:metric_above_one"],
     "model.metric = 'user_code:metric_above_one': expected a function (outputs, targets) -> float in [0, 1], "
     "higher is better (it returned 1.5)"),
    ("train step not an entry point", lambda d: str(_good_folder(d)), [*GOOD, "--train-step", "steps.py"],
     "model.train_step = 'steps.py': expected a module path, a colon and a callable's name (PKG.MODULE:FUNCTION"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "extra", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_model_or_data_is_one_line_before_the_flow(
    tmp_path: Path, make: Callable[[Path], str], extra: list[str], needle: str
) -> None:
    (tmp_path / "user_code.py").write_text(USER_CODE)
    dataset = make(tmp_path / "images")
    done = run_loop_cli(tmp_path, "--dataset", dataset, "--model-name", "bad", *extra, timeout_s=300)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("energy-loop: error: "), output
    assert needle in lines[0], lines[0]
    # Nothing started, so nothing registered: no tracking store and no Prefect home were even created.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "prefect-home").exists()
