"""Bad input as one line that names the field, the value and what was expected: the error and its one formatter."""

from __future__ import annotations

import typing
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

INVALID_INPUT = (
    "InvalidInput"  # the name of the Failed state a loop's flow run ends in on bad input (its message: the line)
)


class InputError(ValueError):
    """Bad user input (scenario, dataset, CLI argument). CLIs exit 2 on it."""

    def __init__(self, field: str, value: object, expected: str, where: str = "") -> None:
        self.field = field
        self.value = value
        self.expected = expected
        prefix = f"{where}: " if where else ""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{prefix}{field} = {shown}: expected {expected}")
        self.where = where

    def __reduce__(self) -> tuple[type[InputError], tuple[str, object, str, str]]:
        # Rebuilt from its fields, so it survives pickling (a flow run's result, a Dask worker's answer).
        return (InputError, (self.field, self.value, self.expected, self.where))


def _describe(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """The unit/range description of the field at `loc`, if the schema has one."""
    current: type[BaseModel] | None = model
    description = ""
    for part in loc:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return ""  # a field inside a list or a union member: no description of its own
        info = current.model_fields[part]
        description = info.description or ""
        # A section that may be left out (`Production | None`) is described by its own fields too.
        members = [info.annotation, *typing.get_args(info.annotation)]
        current = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
    return description


def input_error(model: type[BaseModel], exc: ValidationError, where: str, example: str = "") -> InputError:
    """The first validation error as one line: field, value, what was expected (with its unit)."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or "document"
    unit = _describe(model, loc)
    msg = err["msg"] or "a valid value"
    for prefix in ("Input should be ", "Value error, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "missing":
        msg = "a value (this field is required)"
    elif err["type"] == "extra_forbidden":
        msg = f"no such key (check spelling; see {example})" if example else "no such key (check spelling)"
    expected = f"{msg} ({unit})" if unit else msg
    value = err.get("input") if err["type"] != "missing" else None
    return InputError(field, value, expected, where)


def validated(model: type[M], raw: object, where: str, example: str = "") -> M:
    """Validate `raw` into `model`; raise the one-line `InputError`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise input_error(model, exc, where, example) from None
