"""The checks of a cooling-loop request that need more than its fields: the scenario with the overrides, the meter.

The request itself is checked where it is built (`thresholds/cooling/request.py`); this runs for both
entries: the CLI (before the flow starts, so an error is its only line) and the flow's first task
(deployment and scheduled runs, Python callers). A problem is one `InputError` line.
Light at import (thresholds and the meter names only): the CLI says a bad value without loading torch.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel

from tasks.meters.select import resolve_meter_name
from thresholds.cooling.request import CoolingRequest
from thresholds.cooling.schema import CoolingScenario, load, path_of, settings_for


class CheckedInputs(BaseModel):
    """What the flow runs on once every input passed: the request, the scenario with its overrides, the meter."""

    request: CoolingRequest
    settings: CoolingScenario
    meter: str


def check_request(request: CoolingRequest) -> CheckedInputs:
    """The scenario (a bundled name or a file) with the request's overrides, validated as a whole, and the meter
    (`auto` resolved to this machine's). Raises InputError."""
    settings = settings_for(request.scenario, request.env, request.months, request.days)
    meter = resolve_meter_name(request.meter or settings.measurement.meter)
    return CheckedInputs(request=request, settings=settings, meter=meter)


def check_on_client(request: CoolingRequest, given: Collection[str]) -> None:
    """`trigger`: a scenario it was given that this checkout has, with the overrides. Raises InputError."""
    if "scenario" in given and path_of(request.scenario).is_file():
        load(request.scenario)
        settings_for(request.scenario, request.env, request.months, request.days)
