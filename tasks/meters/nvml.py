"""NVIDIA GPUs through NVML.

The total-energy counter (millijoules since driver load, Volta and newer) is read at both
ends of a window. GPUs without it are sampled for power (`nvmlDeviceGetPowerUsage`, mW) on a
background thread and integrated with the trapezoid rule. Temperature, power limit and
utilisation at the end of the window go into the details for the record.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tasks.meters.base import EnergyMeter, MeterError

SAMPLE_INTERVAL_S = 0.05


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


def trapezoid_j(samples: list[tuple[float, float]]) -> float:
    """Integrate (time_s, power_w) samples to joules."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False))


class NvmlMeter(EnergyMeter):
    """Sum over every visible GPU: counter deltas where supported (a reading), else sampled power."""

    source = "nvml"
    estimated = False

    def __init__(self, sample_interval_s: float = SAMPLE_INTERVAL_S) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            pynvml.nvmlShutdown()
            raise MeterError("NVML found no GPU: expected at least one device for the nvml meter")
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._names = [str(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        self._has_counter = [self._counter_supported(h) for h in self._handles]
        self._interval_s = sample_interval_s
        self._start_mj: list[int] = []
        self._samples: list[list[tuple[float, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _counter_supported(self, handle: Any) -> bool:
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self._nvml.NVMLError:
            return False

    def _sample(self) -> None:
        while True:
            now = time.perf_counter()
            for i, handle in enumerate(self._handles):
                if not self._has_counter[i]:
                    self._samples[i].append((now, self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))
            if self._stop.wait(self._interval_s):
                return

    def _begin(self, label: str) -> None:
        self._start_mj = [
            int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) if c else 0
            for h, c in zip(self._handles, self._has_counter, strict=True)
        ]
        self._samples = [[] for _ in self._handles]
        if not all(self._has_counter):
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="nvml-power-sampler", daemon=True)
            self._thread.start()

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            now = time.perf_counter()
            for i, handle in enumerate(self._handles):
                if not self._has_counter[i]:
                    self._samples[i].append((now, self._nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))
        total_j = 0.0
        for i, handle in enumerate(self._handles):
            if self._has_counter[i]:
                delta_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) - self._start_mj[i]
                if delta_mj < 0:
                    raise MeterError(f"NVML energy counter of GPU {i} went backwards by {-delta_mj} mJ")
                total_j += delta_mj / 1000.0
            else:
                total_j += trapezoid_j(self._samples[i])
        details = {
            "gpus": ", ".join(self._names),
            "method": "+".join("counter" if c else "power-sampling" for c in self._has_counter),
        }
        details.update(self._record())
        return total_j, details

    def _record(self) -> dict[str, str]:
        """Temperature, power limit and utilisation of each GPU; best effort, never fails a window."""
        out: dict[str, str] = {}
        nv = self._nvml
        for i, handle in enumerate(self._handles):
            for key, read in (
                ("temperature_c", lambda h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                ("power_limit_w", lambda h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
                ("utilization_pct", lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu),
            ):
                try:
                    out[f"gpu{i}_{key}"] = str(read(handle))
                except Exception:
                    continue
        return out

    def close(self) -> None:
        self._nvml.nvmlShutdown()
