"""`PKG.MODULE:NAME` entry points: resolved from the working directory, refused in one line."""

from __future__ import annotations

import pytest

from tasks.common.plugins import is_entry_point, resolve_callable
from thresholds.errors import InputError


def test_resolves_a_module_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "def make(input_shape, n_outputs):\n    return ('made', input_shape, n_outputs)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = resolve_callable("my_models:make", "--model")
    assert factory(input_shape=(3,), n_outputs=2) == ("made", (3,), 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no_such_pkg.models:make", "an importable module (ModuleNotFoundError"),
        ("tasks.models.factory:no_such_factory", "a callable named 'no_such_factory'"),
        ("tasks.models.factory:torch", "a callable, not a module"),
        ("just-a-name", "PKG.MODULE:NAME"),
    ],
)
def test_bad_entry_points_are_one_line_errors(value, expected):
    with pytest.raises(InputError) as err:
        resolve_callable(value, "--model")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--model = {value!r}") and expected in message


def test_a_module_that_fails_at_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="RuntimeError: needs a GPU"):
        resolve_callable("broken_models:make", "--model")


def test_paths_are_not_entry_points(tmp_path):
    assert is_entry_point("pkg.mod:fn")
    assert not is_entry_point(str(tmp_path))
    assert not is_entry_point("data/table.csv")
    assert not is_entry_point("mnist1d")
