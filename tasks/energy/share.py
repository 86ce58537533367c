"""Energy of one process on a shared machine: a machine-level reading times the process's CPU share.

When candidates train in parallel, every machine-level meter (CodeCarbon's load × TDP, RAPL
packages, a fixed power) sees all of them at once; summing their windows would count the
machine several times. `ProcessShareMeter` attributes to the window

    energy_j = machine_energy_j × own_cpu_s / machine_busy_cpu_s

where `own_cpu_s` is this process's CPU time (all its threads) during the window and
`machine_busy_cpu_s` the whole machine's non-idle CPU time from `/proc/stat`. Idle and
uncore power are thereby split in proportion to CPU use: an attribution, never a reading,
so the figures stay labelled `estimated`. Inference energy is never measured this way: the
loop measures it serially, alone on the machine.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from pathlib import Path

from tasks.energy.base import EnergyMeter, Window

_PROC_STAT = Path("/proc/stat")


def machine_busy_cpu_s(stat: Path = _PROC_STAT) -> float | None:
    """Non-idle CPU seconds of the whole machine since boot, or None where unreadable."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user.
    busy = sum(ticks[:8]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def cpu_share(own_cpu_s: float, machine_busy_s: float) -> float:
    """This process's share of the machine's busy CPU time, clipped to [0, 1]."""
    if machine_busy_s <= 0:
        return 1.0
    return min(1.0, max(0.0, own_cpu_s / machine_busy_s))


class ProcessShareMeter(EnergyMeter):
    """Wraps a machine-level meter and keeps only this process's share of each window."""

    attribution = "process-cpu-share"
    estimated = True

    def __init__(self, inner: EnergyMeter) -> None:
        self.inner = inner
        self.source = inner.source
        self._own0 = 0.0
        self._busy0: float | None = None
        self._window: AbstractContextManager[Window] | None = None
        self._handle: Window | None = None

    def _begin(self, label: str) -> None:
        self._window = self.inner.window(label)
        self._handle = self._window.__enter__()
        self._own0, self._busy0 = time.process_time(), machine_busy_cpu_s()

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        own_s = time.process_time() - self._own0
        busy1 = machine_busy_cpu_s()
        assert self._window is not None and self._handle is not None, "window ended before it began"
        self._window.__exit__(None, None, None)
        measured = self._handle.measurement
        if self._busy0 is None or busy1 is None:
            return measured.energy_j, {**measured.details, "attribution": "unavailable: no /proc/stat, whole machine counted"}
        share = cpu_share(own_s, busy1 - self._busy0)
        details = {**measured.details, "attribution": self.attribution, "cpu_share": f"{share:.3f}", "machine_energy_j": f"{measured.energy_j:.4f}"}
        return measured.energy_j * share, details

    def close(self) -> None:
        self.inner.close()
