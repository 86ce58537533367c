"""Resolve a user's `PKG.MODULE:NAME` entry point (a model factory, a dataset function, a hook).

The module is imported from the working directory first, then from installed packages. Every
failure is a one-line `InputError` naming the field, the value and what was expected.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from thresholds.errors import InputError


def first_line(exc: BaseException) -> str:
    """A user's exception as `Type: first line of its message`, for a one-line error."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def is_entry_point(value: str) -> bool:
    """`PKG.MODULE:NAME` (a colon, no path separator): how a user's own code is named."""
    module, sep, name = value.partition(":")
    return (
        bool(sep)
        and bool(module)
        and bool(name)
        and "/" not in value
        and "\\" not in value
        and not os.path.exists(value)
    )


def resolve_callable(value: str, field: str) -> Callable[..., Any]:
    """The callable that `PKG.MODULE:NAME` names; `field` is the CLI flag or scenario key, for the error."""
    module_name, sep, attr = value.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(field, value, "PKG.MODULE:NAME (a module path, a colon, a callable's name)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # a user's own module beside where they run the command
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing at import: one line either way
        raise InputError(field, value, f"an importable module ({type(exc).__name__}: {exc})") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InputError(field, value, f"a callable named {attr!r} in module {module_name!r}")
    if not callable(target):
        raise InputError(field, value, f"a callable, not a {type(target).__name__}")
    return target
