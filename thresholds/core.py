"""What every pipeline's thresholds share: strict sections, the meter names, YAML reading, the
loop's final states and checks, and the noise-aware comparison every decision uses.

Pure code over plain data: nothing here imports another top-level package (thresholds is the
bottom layer: flows -> tasks -> registry -> thresholds).
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict

from thresholds.errors import InputError

MAX_SCENARIO_BYTES = 256 * 1024
MeterName = Literal["auto", "codecarbon", "nvml", "rapl", "fixed-power", "null"]
METER_NAMES: tuple[str, ...] = get_args(MeterName)  # the one list: schemas, CLI choices and `make_meter` read it


class Section(BaseModel):
    """A scenario section: unknown keys and NaN/inf are errors; immutable."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class StrictSection(Section):
    """A section whose values are not coerced either ("3" is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class FinalState(StrEnum):
    PASSED = "PASSED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    FAILED = "FAILED"


class Final(BaseModel):
    """The state a loop ends in, why, the candidate it chose (PASSED only) and the target shown unreachable (FAILED)."""

    state: FinalState
    reason: str
    chosen: int | None = None
    unreachable: str | None = None  # the target (gate check name) no step left can reach


class Check(BaseModel):
    """One gate judged on one candidate."""

    name: str
    ok: bool
    detail: str


def significantly_less(a: float, a_err: float, b: float, b_err: float, sigmas: float = 2.0) -> bool:
    """True when `a` is below `b` by more than `sigmas` combined standard errors."""
    return a + sigmas * math.hypot(a_err, b_err) < b


def read_yaml(p: Path, max_bytes: int = MAX_SCENARIO_BYTES) -> object:
    """A small UTF-8 YAML file, parsed; every way it can be unreadable is one `InputError` line."""
    if p.stat().st_size > max_bytes:
        raise InputError("scenario size", p.stat().st_size, f"at most {max_bytes} bytes", str(p))
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("encoding", p.name, "a UTF-8 text file", str(p)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = f"line {mark.line + 1}" if mark else "document"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(position, problem, "valid YAML", str(p)) from None
