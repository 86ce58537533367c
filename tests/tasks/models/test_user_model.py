"""A user's model factory checked before the flow: build, output shape and memory, each refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.models import user_model
from tasks.models.user_model import check_factory
from thresholds.errors import InputError

MODULE = '''
import torch
from torch import nn

def good(input_shape, n_outputs):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 32), nn.ReLU(), nn.Linear(32, n_outputs)
    )

def raises(input_shape, n_outputs):
    raise ValueError("depth must be at least 2\\n(and a second line)")

def one_too_many(input_shape, n_outputs):
    return good(input_shape, n_outputs + 1)

def not_a_module(input_shape, n_outputs):
    return "a model"

def wrong_input(input_shape, n_outputs):
    return nn.Linear(7, n_outputs)

class Hog(nn.Module):
    """Asks for 4 PiB in a training step: a real allocation failure, at any batch above 2."""

    def __init__(self, n_outputs):
        super().__init__()
        self.head = nn.Linear(4, n_outputs)

    def forward(self, x):
        if len(x) > 2:
            torch.empty(2**50)
        return self.head(x.flatten(1)[:, :4])

def hog(input_shape, n_outputs):
    return Hog(n_outputs)
'''


@pytest.fixture(autouse=True)
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_models.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)


def test_a_good_factory_is_built_and_described() -> None:
    checked = check_factory("user_models:good", (1, 8, 8), 10, batch_size=64)
    assert (
        checked.type_name == "Sequential" and checked.params == 64 * 32 + 32 + 32 * 10 + 10 and checked.step_bytes > 0
    )


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        ("no_such_module:make", "model.factory = 'no_such_module:make': expected an importable module"),
        ("user_models:missing", "expected a callable named 'missing'"),
        ("user_models:raises", "n_outputs=10 (it raised ValueError: depth must be at least 2)"),
        (
            "user_models:one_too_many",
            "model output shape = (2, 11): expected (2, 10) for a batch of 2: one output per class (10 classes)",
        ),
        ("user_models:not_a_module", "expected a factory that returns a torch.nn.Module (it returned a str)"),
        (
            "user_models:wrong_input",
            "expected a model that takes a batch of shape (N, 1, 8, 8) (its forward raised RuntimeError",
        ),
    ],
)
def test_a_bad_factory_is_one_line(factory: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        check_factory(factory, (1, 8, 8), 10, batch_size=64)
    message = str(err.value)
    assert "\n" not in message and needle in message, message


def test_an_allocation_failure_in_a_training_step_names_the_batch_size_to_lower() -> None:
    with pytest.raises(InputError) as err:
        check_factory("user_models:hog", (1, 8, 8), 10, batch_size=4096)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "training.batch_size = 4096: expected a batch size at which user_models:hog fits in memory"
    )
    assert "failed to allocate" in message and "try 2048" in message


def test_a_step_estimated_beyond_the_memory_available_is_refused_without_trying_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[int] = []
    monkeypatch.setattr(user_model, "_available_bytes", lambda: 64 * 2**20)  # a 64 MiB machine
    monkeypatch.setattr(user_model, "_try_step", lambda *args: tried.append(args[2]))
    with pytest.raises(InputError) as err:
        check_factory("user_models:good", (3, 64, 64), 10, batch_size=65536)
    message = str(err.value)
    assert message.startswith(
        "training.batch_size = 65536: expected a batch size at which user_models:good fits in memory (a training "
        "step needs about"
    )
    suggested = int(message.rsplit("try ", 1)[1].rstrip(")"))
    assert suggested & (suggested - 1) == 0 and suggested < 65536  # a power of two below the scenario's
    assert tried == []
    check_factory("user_models:good", (3, 64, 64), 10, batch_size=suggested)  # the suggestion itself fits the estimate
    assert tried == [suggested]
