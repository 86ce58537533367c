"""The meter interface and the measurement record every energy figure carries."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class MeterError(RuntimeError):
    """An energy meter failed or returned a value that cannot be energy."""


@dataclass(frozen=True)
class Measurement:
    """Energy of one measured window, with its provenance."""

    energy_j: float
    duration_s: float
    source: str
    estimated: bool
    label: str = ""
    details: dict[str, str] = field(default_factory=dict)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


class Window:
    """Handle of an open measurement window; `measurement` is set when the window closes."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._measurement: Measurement | None = None

    @property
    def measurement(self) -> Measurement:
        if self._measurement is None:
            raise RuntimeError(f"window {self.label!r} is still open")
        return self._measurement


class EnergyMeter(ABC):
    """One interface for every energy source. Subclasses read a counter or estimate."""

    source: str = "abstract"
    estimated: bool = True

    @abstractmethod
    def _begin(self, label: str) -> None:
        """Start reading for a window."""

    @abstractmethod
    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        """Stop reading; return (energy_j, details)."""

    def close(self) -> None:
        """Release hardware handles or background samplers."""
        return None

    @contextmanager
    def window(self, label: str) -> Iterator[Window]:
        """Measure the enclosed block. On an exception inside the block the energy spent so far
        is still recorded on the handle before the exception propagates."""
        handle = Window(label)
        self._begin(label)
        start = time.perf_counter()
        try:
            yield handle
        finally:
            duration_s = time.perf_counter() - start
            energy_j, details = self._end(duration_s)
            valid = math.isfinite(energy_j) and energy_j >= 0
            if valid:
                handle._measurement = Measurement(
                    energy_j=float(energy_j),
                    duration_s=duration_s,
                    source=self.source,
                    estimated=self.estimated,
                    label=label,
                    details=details,
                )
        # Reached only when the block succeeded: reject values that cannot be energy.
        if not valid:
            raise MeterError(
                f"meter {self.source} returned energy_j={energy_j!r} for window {label!r}: expected a "
                "finite number >= 0"
            )
