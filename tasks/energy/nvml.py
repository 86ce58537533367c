"""NVIDIA GPUs through NVML's total-energy counter (millijoules since driver load)."""

from __future__ import annotations

from typing import Any

from tasks.energy.base import EnergyMeter
from tasks.errors import MeterError


def gpu_count() -> int:
    """Number of NVML devices, 0 when NVML or a driver is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0
    finally:
        pynvml.nvmlShutdown()


class NvmlMeter(EnergyMeter):
    """Sums the energy counter delta of every visible GPU: a hardware reading, not an estimate."""

    source = "nvml"
    estimated = False

    def __init__(self) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            pynvml.nvmlShutdown()
            raise MeterError("NVML found no GPU: expected at least one device for the nvml meter")
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._names = [str(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        self._start_mj: list[int] = []

    def _read_mj(self) -> list[int]:
        return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]

    def _begin(self, label: str) -> None:
        self._start_mj = self._read_mj()

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        end_mj = self._read_mj()
        deltas = [e - s for s, e in zip(self._start_mj, end_mj, strict=True)]
        if any(d < 0 for d in deltas):
            raise MeterError(f"NVML energy counter went backwards: deltas_mj={deltas}")
        return sum(deltas) / 1000.0, {"gpus": ", ".join(self._names)}

    def close(self) -> None:
        self._nvml.nvmlShutdown()
