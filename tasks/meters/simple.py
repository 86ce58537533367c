"""Meters that need no hardware: null, fixed power and replay. For tests and bare machines."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from tasks.meters.base import EnergyMeter


class NullMeter(EnergyMeter):
    """Reads nothing: every window costs 0 J. Energy gates cannot be judged with it."""

    source = "null"
    estimated = True

    def _begin(self, label: str) -> None:
        pass

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        return 0.0, {}


class FixedPowerMeter(EnergyMeter):
    """Energy = an assumed constant power × wall time. Deterministic in shape; an estimate."""

    estimated = True

    def __init__(self, power_w: float = 10.0) -> None:
        if not power_w > 0:
            raise ValueError(f"power_w = {power_w!r}: expected a positive number of watts")
        self.power_w = power_w
        self.source = f"fixed-power:{power_w:g}W"

    def _begin(self, label: str) -> None:
        pass

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        return self.power_w * duration_s, {"assumed_power_w": f"{self.power_w:g}"}


class ReplayMeter(EnergyMeter):
    """Returns recorded energies in order, one per window (cycling), for repeatable tests."""

    def __init__(self, energies_j: Sequence[float], source: str = "replay", estimated: bool = False) -> None:
        if not energies_j:
            raise ValueError("energies_j is empty: expected at least one recorded energy in joules")
        self._energies_j = list(energies_j)
        self._next = 0
        self.source = source
        self.estimated = estimated

    def _begin(self, label: str) -> None:
        pass

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        value = self._energies_j[self._next % len(self._energies_j)]
        self._next += 1
        return value, {}

    @classmethod
    def from_csv(cls, path: Path, source: str | None = None, estimated: bool = False) -> ReplayMeter:
        """Replay a recorded trace: rows of `timestamp_s,energy_j` (a cumulative counter).

        Window k gets the energy between rows k and k+1, so a trace recorded at window
        boundaries replays exactly.
        """
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if len(rows) < 2 or not {"timestamp_s", "energy_j"} <= set(rows[0]):
            raise ValueError(f"trace {path}: expected a header timestamp_s,energy_j and at least 2 rows")
        stamps = [float(r["timestamp_s"]) for r in rows]
        energies = [float(r["energy_j"]) for r in rows]
        for i in range(1, len(rows)):
            if stamps[i] <= stamps[i - 1]:
                raise ValueError(f"trace {path}: row {i + 1} timestamp_s = {stamps[i]}: expected increasing timestamps")
        deltas = [b - a for a, b in zip(energies, energies[1:], strict=False)]
        return cls(deltas, source=source or f"replay:{path.name}", estimated=estimated)
