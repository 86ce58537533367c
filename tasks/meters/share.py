"""Energy of candidates trained at once on one machine: the phase's machine-level reading, split.

When candidates train in parallel, every machine-level meter (CodeCarbon's load × TDP, RAPL
packages, a fixed power) sees all of them at once, plus the Dask scheduler, the workers' own
threads and the idle draw of the machine. One window around the whole phase reads it once;
`split_phase_energy` then gives candidate i

    energy_j[i] = busy_j × cpu_s[i] / Σ cpu_s  +  constant_j × wall_s[i] / Σ wall_s

where `constant_j = min(reading, idle_power_w × phase_s)` is what the machine draws doing
nothing (RAM, uncore, idle cores: the constant part of a load × TDP model, all of a fixed
power) and `busy_j` the rest. The constant part is split by the time each candidate held its
worker (its seconds / everyone's seconds), not equally per candidate: equal parts only when
they ran side by side throughout; a recipe that stopped early does not pay for the baseline
that kept the machine on after it (with equal parts, early stopping could never show a training
saving next to its baseline). The parts sum to the
reading by construction, so a parallel loop can no longer report cheaper training than the
machine spent. An attribution, never a reading: the figures stay labelled `estimated` and
their version carries how it was made.

A serial loop on a machine that other processes share keeps only its own part of each window
(`ProcessShareMeter`): `energy_j = machine_energy_j × own_cpu_s / machine_busy_cpu_s`, with the
machine's non-idle CPU time read from `/proc/stat`.

During the phase each worker times its training windows (epochs) in CPU and wall seconds
(`CpuTimeMeter`): the shares come from the training itself, as a serial loop counts only its
training windows, while the rest of the phase (task start, data loading, saving) is still in
the reading and so split in the same proportions. The per-epoch figures keep their shape
(epoch-to-epoch spread, curve) and are rescaled to joules once the share is known.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tasks.meters.base import EnergyMeter, Window
from thresholds.energy import keys

_PROC_STAT = Path("/proc/stat")

ATTRIBUTION = "machine-phase-split"


class CpuTimeMeter(EnergyMeter):
    """Provisional windows in CPU seconds of this process (all its threads), not joules.

    Used only inside a parallel phase; `tasks.energy_loop.parallel` rescales every figure it produced to
    the candidate's share of the machine-level reading before anything is logged."""

    estimated = True
    provisional_unit = "cpu_s"

    def __init__(self, source: str) -> None:
        self.source = source
        self._cpu0 = 0.0
        self.cpu_s = 0.0  # totals over every window: the candidate's share of the phase
        self.wall_s = 0.0

    def _begin(self, label: str) -> None:
        self._cpu0 = time.process_time()

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        cpu_s = time.process_time() - self._cpu0
        self.cpu_s += cpu_s
        self.wall_s += duration_s
        return cpu_s, {"provisional_unit": self.provisional_unit}


@dataclass(frozen=True)
class PhaseSplit:
    """One candidate's part of a phase reading, and how it was computed."""

    energy_j: float
    busy_j: float  # its CPU share of the busy part
    constant_j: float  # its time share of the idle / constant part
    cpu_share: float
    time_share: float

    def tags(self, machine_energy_j: float, phase_s: float, idle_power_w: float, candidates: int) -> dict[str, str]:
        return {
            keys.TRAIN_ENERGY_ATTRIBUTION: ATTRIBUTION,
            keys.TRAIN_ENERGY_ATTRIBUTION_RULE: "busy energy by CPU share + idle power x phase time by share "
            "of worker time",
            keys.TRAIN_ENERGY_ATTRIBUTION_MACHINE_ENERGY_J: f"{machine_energy_j:.4f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_PHASE_S: f"{phase_s:.3f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_IDLE_POWER_W: f"{idle_power_w:.3f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_CANDIDATES: str(candidates),
            keys.TRAIN_ENERGY_ATTRIBUTION_CPU_SHARE: f"{self.cpu_share:.4f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_TIME_SHARE: f"{self.time_share:.4f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_BUSY_J: f"{self.busy_j:.4f}",
            keys.TRAIN_ENERGY_ATTRIBUTION_CONSTANT_J: f"{self.constant_j:.4f}",
        }


def split_phase_energy(
    machine_energy_j: float, phase_s: float, idle_power_w: float, cpu_s: Sequence[float], wall_s: Sequence[float]
) -> list[PhaseSplit]:
    """Split one machine-level reading among the candidates that ran in the phase.

    Every joule of the reading goes to some candidate: the parts sum to `machine_energy_j`.
    Without CPU (or wall) time on record, that part is split equally."""
    n = len(cpu_s)
    if n == 0:
        return []
    if len(wall_s) != n:
        raise ValueError(
            f"split_phase_energy: {n} CPU times but {len(wall_s)} wall times: expected one of each per candidate"
        )
    if machine_energy_j < 0 or phase_s < 0 or idle_power_w < 0 or any(t < 0 for t in (*cpu_s, *wall_s)):
        raise ValueError(
            f"split_phase_energy({machine_energy_j}, {phase_s}, {idle_power_w}, {list(cpu_s)}, {list(wall_s)}): "
            "expected non-negative figures"
        )
    constant_j = min(machine_energy_j, idle_power_w * phase_s)
    busy_j = machine_energy_j - constant_j
    cpu, held = _shares(cpu_s), _shares(wall_s)
    return [
        PhaseSplit(
            energy_j=busy_j * c + constant_j * t,
            busy_j=busy_j * c,
            constant_j=constant_j * t,
            cpu_share=c,
            time_share=t,
        )
        for c, t in zip(cpu, held, strict=True)
    ]


def _shares(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values] if total > 0 else [1.0 / len(values)] * len(values)


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
    """Wraps a machine-level meter and keeps only this process's CPU share of each window (serial loops)."""

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
            return measured.energy_j, {
                **measured.details,
                "attribution": "unavailable: no /proc/stat, whole machine counted",
            }
        share = cpu_share(own_s, busy1 - self._busy0)
        details = {
            **measured.details,
            "attribution": self.attribution,
            "cpu_share": f"{share:.6f}",
            "machine_energy_j": f"{measured.energy_j:.6f}",
        }
        return measured.energy_j * share, details

    def close(self) -> None:
        self.inner.close()
