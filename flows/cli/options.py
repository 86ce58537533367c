"""A request model's fields as command-line flags, and back: the `run` parsers, `trigger`'s keys and its
in-process path are generated here from the model (thresholds/request.py), never listed by hand."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from thresholds.request import Naming, fields, parse

R = TypeVar("R", bound=BaseModel)


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per field: its `Option` flag, the field's description as help, its choices, int where it takes one;
    required where the field (or the command) requires it; the command's default, else the field's."""
    for f in fields(model):
        default = f.option.command_default if f.option.command_default is not None else f.info.default
        metavar = f.option.flag.lstrip("-").upper().replace("-", "_")
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.help, "required": f.required, "metavar": metavar}
        if not f.required:
            kwargs["default"] = default
        if f.choices is not None:
            kwargs.update(choices=f.choices, metavar=None)  # shown as {a,b,c}
        elif f.integer and not isinstance(default, str):
            kwargs["type"] = int
        parser.add_argument(f.option.flag, **kwargs)


def request_from(model: type[R], args: argparse.Namespace) -> R:
    """The request the parsed flags make (validated; an `InputError` names the flag)."""
    given = {f.name: getattr(args, f.name) for f in fields(model)}
    return parse(model, {k: v for k, v in given.items() if v is not None}, Naming.FLAG)


def argv_for(model: type[BaseModel], params: Mapping[str, object]) -> list[str]:
    """The flags that give `params` (field -> value) on the command line."""
    flags = {f.name: f.option.flag for f in fields(model)}
    return [x for key, value in params.items() for x in (flags[key], str(value))]
