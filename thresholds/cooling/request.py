"""`CoolingRequest`: every option of one cooling-loop run, checked field by field (see thresholds/request.py).

    cooling_loop(CoolingRequest(scenario="cooling-room", days=2))   # flows/cooling.py; a dict works too

The period's range is the scenario's to check (`evaluation.months`, `evaluation.days`): the overrides are
validated with the scenario as a whole (tasks/cooling/inputs.py), so they are named as the scenario names them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thresholds.cooling.schema import CoolingScenario
from thresholds.core import MeterName
from thresholds.request import Option

ENVIRONMENTS: tuple[str, ...] = get_args(CoolingScenario.model_fields["env"].annotation)  # the scenario's one list


class CoolingRequest(BaseModel):
    """The options of one cooling-loop run. Built once by each entry point and passed whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TITLE: ClassVar[str] = "cooling loop"
    FLOW_NAME: ClassVar[str] = "cooling-loop"  # the Prefect flow that takes it (`trigger --deployment FLOW/NAME`)

    scenario: Annotated[
        str,
        Field(description="cooling-room, cooling-seed, or a path to a thresholds YAML file"),
        Option("--scenario", required=True),
    ] = "cooling-room"
    env: Annotated[
        str | None, Field(description="environment (default: the scenario's)"), Option("--env", choices=ENVIRONMENTS)
    ] = None
    months: Annotated[
        int | None,
        Field(description="evaluation period in 30-day months (default: the scenario's)"),
        Option("--months", expected="an integer"),
    ] = None
    days: Annotated[
        int | None, Field(description="evaluation period in days (short runs)"), Option("--days", expected="an integer")
    ] = None
    meter: Annotated[
        MeterName | None, Field(description="energy meter (default: the scenario's)"), Option("--meter")
    ] = None
    work_root: Annotated[
        str, Field(description="folder for agents and plots (default .energy-loop)"), Option("--work-dir")
    ] = ".energy-loop"

    @field_validator("env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and value not in ENVIRONMENTS:
            raise ValueError(f"one of {', '.join(ENVIRONMENTS)}")
        return value
