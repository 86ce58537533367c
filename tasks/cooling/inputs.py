"""Every input of the cooling loop checked before anything is trained, logged or registered.

One function for both entries: the CLI (before the flow starts, so an error is its only line) and the
flow's first task (deployment and scheduled runs, Python callers). A problem is one `InputError` line.
Light at import (thresholds and the meter names only): the CLI says a bad value without loading torch.
"""

from __future__ import annotations

from pydantic import BaseModel

from tasks.meters.select import resolve_meter_name
from thresholds.cooling.schema import CoolingScenario, settings_for


class CheckedInputs(BaseModel):
    """What the flow runs on once every input passed: the scenario with its overrides, the resolved meter."""

    settings: CoolingScenario
    meter: str


def check_arguments(
    scenario: str, env: str | None = None, months: int | None = None, days: int | None = None, meter: str | None = None
) -> CheckedInputs:
    """The scenario (a bundled name or a file) with the overrides, validated as a whole, and the meter
    (`auto` resolved to this machine's). Raises InputError."""
    settings = settings_for(scenario, env, months, days)
    return CheckedInputs(settings=settings, meter=resolve_meter_name(meter or settings.measurement.meter))
