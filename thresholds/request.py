"""A loop's options as one validated object, whichever way the run starts.

Each pipeline has a request model: `thresholds/energy/request.py` (`LoopRequest`) and
`thresholds/cooling/request.py` (`CoolingRequest`). A field is one option: its type, range, choices and
format are checked by the model; its description is the help text; its `Option` metadata says how it
appears on the command line. Every entry point builds the request once and passes it whole:

    the CLI's `run`           one flag per field (`Option.flag`), parsed into the request
    `trigger --param K=V`     K one of the fields, merged onto the deployment's own `request`
    a deployment, a schedule  `parameters: {request: {scenario: ..., dataset: ...}}`
    a Python caller           `energy_loop(LoopRequest(scenario="dev-cpu", dataset="digits"))`

`parse` turns whatever arrived into the request, or into one `InputError` line that names the field as
the person typed it: the flag at the command line (`--image-size`), the key elsewhere (`image_size`).
The checks that need the data or the user's code stay in `tasks/*/inputs.py` and take the request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from thresholds.errors import InputError

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Option:
    """How a request field appears on the command line, and what a bad value is told."""

    flag: str  # "--image-size"
    expected: str = ""  # what a value of the wrong type or range should have been (default: from the type)
    command_default: Any = None  # the command's default where it differs from the field's (None: the field's)
    choices: tuple[str, ...] | None = None  # where the field's type is not a Literal of them
    required: bool = False  # the command requires it even though the field has a default


class Naming(Enum):
    """How an error names a field: as typed at the command line, or as a parameter key."""

    FLAG = "flag"
    KEY = "key"


@dataclass(frozen=True)
class RequestField:
    """One field of a request model, as the entry points read it."""

    name: str
    info: FieldInfo
    option: Option

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The values the field allows: its `Option.choices`, or those of its Literal type; else None."""
        if self.option.choices is not None:
            return self.option.choices
        kind = self.info.annotation
        if get_origin(kind) is not Literal:  # `Literal[...] | None` too; not `int | Literal["auto"]`
            others = [k for k in get_args(kind) if k is not type(None)]
            kind = others[0] if len(others) == 1 else kind
        return tuple(str(v) for v in get_args(kind)) if get_origin(kind) is Literal else None

    @property
    def integer(self) -> bool:
        """Whether the field takes an integer (a command-line or `K=V` value is converted to one)."""
        kinds = get_args(self.info.annotation) or (self.info.annotation,)
        return int in kinds

    @property
    def required(self) -> bool:
        """Whether the command line must give it."""
        return self.info.is_required() or self.option.required

    @property
    def help(self) -> str:
        return self.info.description or ""

    def name_as(self, naming: Naming) -> str:
        return self.option.flag if naming is Naming.FLAG else self.name


def fields(model: type[BaseModel]) -> Iterator[RequestField]:
    """The model's fields in order, each with its `Option` (every request field has one)."""
    for name, info in model.model_fields.items():
        option = next((m for m in info.metadata if isinstance(m, Option)), None)
        if option is None:
            raise TypeError(f"{model.__name__}.{name} has no Option metadata")
        yield RequestField(name, info, option)


def field(model: type[BaseModel], name: str) -> RequestField:
    return next(f for f in fields(model) if f.name == name)


def from_text(model: type[BaseModel], key: str, text: str) -> object:
    """A `K=V` value as the field takes it: digits become an integer where the field takes one."""
    digits = text.removeprefix("-")
    return int(text) if field(model, key).integer and digits.isdigit() else text


def _expected(model: type[BaseModel], error: Any, naming: Naming) -> tuple[str, object, str]:
    """(field name as typed, value, what was expected) for one pydantic error of a request model."""
    loc = error["loc"]
    name = str(loc[0]) if loc else "request"
    value = error.get("input") if error["type"] != "missing" else None
    known = {f.name: f for f in fields(model)}
    if error["type"] == "extra_forbidden" or name not in known:
        shown = ", ".join(f.name_as(naming) for f in known.values())
        return name, value, f"one of the {getattr(model, 'TITLE', 'request')}'s options: {shown}"
    f = known[name]
    typed = f.name_as(naming)
    if error["type"] == "missing":
        return typed, None, "a value (this option is required)"
    if error["type"] == "value_error":  # a field validator said it
        return typed, value, str(error["msg"]).removeprefix("Value error, ")
    if f.choices is not None:
        return typed, value, f"one of {', '.join(f.choices)}"
    if f.option.expected:
        return typed, value, f.option.expected
    return typed, value, str(error["msg"]).removeprefix("Input should be ")


def parse(model: type[R], raw: object, naming: Naming = Naming.KEY) -> R:
    """The request, from a request, a mapping of its options (a deployment's parameters, a JSON body) or
    keyword values; or one `InputError` naming the first bad field as the person typed it."""
    if isinstance(raw, model):
        return raw
    title = getattr(model, "TITLE", "request")
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        names = ", ".join(f.name for f in fields(model))
        raise InputError("request", raw, f"a mapping of the {title}'s options ({names})")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(*_expected(model, exc.errors()[0], naming)) from None


def check_given(model: type[BaseModel], given: Mapping[str, object], naming: Naming = Naming.KEY) -> None:
    """The given fields alone, the others left to come from elsewhere (a deployment's own request): an
    `InputError` for the first bad one."""
    try:
        model.model_validate(dict(given))
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] != "missing":
                raise InputError(*_expected(model, error, naming)) from None
