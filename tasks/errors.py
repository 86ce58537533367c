"""Errors with one-line messages that name the field, the value and what was expected."""

from __future__ import annotations


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


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the candidate is rejected, the loop goes on."""

    partial_energy_j: float = 0.0  # energy spent before the divergence, when a meter was on


class MeterError(RuntimeError):
    """An energy meter failed or returned a value that cannot be energy."""


class RungNotApplicable(RuntimeError):
    """A rung cannot produce a candidate here (e.g. no architecture fits the search's energy cap)."""

    partial_energy_j: float = 0.0
