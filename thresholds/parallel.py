"""How many candidates of a rung train at once: a pure decision over what calibration measured.

Calibration (`tasks/energy_loop/calibrate_parallel.py`) trained the same rung of N candidates, through the
loop's own Prefect task path, serially in process (torch on every core) and on N Dask worker
processes (torch threads = cores / N each), under the loop's machine-level meter, and timed the
workers' start-up and shutdown. A loop starts its workers once and trains at most
`candidates_per_loop` candidates on them, N a rung: each parallel rung carries N /
`candidates_per_loop` of that start-up.

`parallel_width` trains rungs in parallel only from a calibration the machine ran alone (other
processes kept at most a quarter of the cores busy), at a width that saved both wall time and
energy beyond the noise: for each, the mean saving exceeds `sigmas` combined standard errors and
`min_gain_pct` of serial, and every parallel run (with its start-up share) beat every serial
one. Otherwise serial: it never picks a setting that measured slower or costlier than serial.
`--parallel N` forces N; `--parallel 1` is serial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, Field

from thresholds.errors import InputError

AUTO = "auto"
SHARED_MACHINE_CORES_SHARE = 0.25  # above this share of the cores busy elsewhere, a calibration is not a fair measure


class WidthTrial(BaseModel):
    """Repeated runs of the same rung of N candidates: serially in process, or on N workers at once."""

    workers: int = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    wall_s_runs: list[float] = []  # one per repeat: the rung's wall seconds
    energy_j_runs: list[float] = []  # one per repeat: the machine-level reading over the rung

    @property
    def wall_s(self) -> float:
        return _mean(self.wall_s_runs)

    @property
    def energy_j(self) -> float:
        return _mean(self.energy_j_runs)


class ParallelCalibration(BaseModel):
    """One machine and workload: per width, the serial rung, the parallel rung and the workers' start-up."""

    machine: str
    workload: str
    cores: int = Field(ge=1)
    meter: str
    idle_power_w: float = Field(
        ge=0
    )  # the constant part of a phase reading, split by each candidate's time on its worker
    epochs_per_job: int = Field(ge=1)  # epochs each calibration candidate trained
    candidates_per_loop: int = Field(ge=1)  # the loop's budget.max_iterations: what the start-up is spread over
    serial: dict[int, WidthTrial] = {}  # width -> the rung of `width` candidates, one after another in process
    parallel: dict[int, WidthTrial] = {}  # width -> the same rung on `width` workers at once
    startup_s: dict[
        int, float
    ] = {}  # width -> starting (workers up, stack imported, data loaded) + closing the workers
    startup_j: dict[int, float] = {}
    calibration_s: float = 0.0  # what measuring this table took
    busy_elsewhere_cores: float = 0.0  # mean cores other processes kept busy during the serial runs

    def shared_machine(self) -> bool:
        """Whether other processes kept more than a quarter of the cores busy while this was measured."""
        return self.busy_elsewhere_cores > SHARED_MACHINE_CORES_SHARE * self.cores

    def startup_share(self, width: int) -> float:
        """The fraction of the workers' start-up one parallel rung of `width` carries."""
        return min(1.0, width / self.candidates_per_loop)

    def parallel_runs(self, width: int) -> tuple[list[float], list[float]]:
        """(wall s, J) of each parallel run with its share of the start-up added."""
        trial, share = self.parallel[width], self.startup_share(width)
        return (
            [w + share * self.startup_s.get(width, 0.0) for w in trial.wall_s_runs],
            [e + share * self.startup_j.get(width, 0.0) for e in trial.energy_j_runs],
        )

    def speedup(self, width: int) -> float | None:
        """Serial wall time / parallel wall time (start-up share included)."""
        if width not in self.serial or width not in self.parallel:
            return None
        p = _mean(self.parallel_runs(width)[0])
        return self.serial[width].wall_s / p if p > 0 else None

    def energy_ratio(self, width: int) -> float | None:
        """Parallel machine energy (start-up share included) / serial machine energy."""
        if width not in self.serial or width not in self.parallel:
            return None
        s = self.serial[width].energy_j
        return _mean(self.parallel_runs(width)[1]) / s if s > 0 else None


class WidthChoice(BaseModel):
    width: int = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    why: str


def requested_width(value: int | str) -> int | None:
    """`auto` -> None (measure), else the forced width. Raises InputError naming the value."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    bad = InputError("--parallel", value, "auto or an integer from 1 to 64 (candidates trained at once)")
    try:
        width = int(value)
    except (TypeError, ValueError):
        raise bad from None
    if not 1 <= width <= 64:
        raise bad
    return width


def threads_per_worker(cores: int, width: int) -> int:
    """Torch threads each worker gets so that the workers together fill the cores, no more."""
    return max(1, cores // max(1, width))


def saving_beyond_noise(
    serial: Sequence[float], parallel: Sequence[float], sigmas: float, min_gain_pct: float
) -> str | None:
    """None when `parallel` saved on `serial` beyond the noise, else why not (a short phrase).

    Beyond the noise: every parallel run below every serial run, and the mean saving above both
    `sigmas` combined standard errors and `min_gain_pct` % of the serial mean."""
    if len(serial) < 2 or len(parallel) < 2:
        return "fewer than 2 runs a side: the noise is unknown"
    saved = _mean(serial) - _mean(parallel)
    noise = sigmas * math.hypot(_sem(serial), _sem(parallel))
    if saved <= 0:
        return "more than serial"
    if max(parallel) >= min(serial):
        return "not below serial in every run"
    if saved <= noise:
        return f"saved {saved / _mean(serial):.1%}, within {sigmas:g} combined standard errors: noise"
    if saved < min_gain_pct / 100 * _mean(serial):
        return f"saved {saved / _mean(serial):.1%} < {min_gain_pct:g} %"
    return None


def parallel_width(
    calibration: ParallelCalibration | None,
    requested: int | None,
    cores: int,
    sigmas: float = 2.0,
    min_gain_pct: float = 0.0,
) -> WidthChoice:
    """The width to train rungs at: `requested` when forced, else the measured width that saved
    both wall time and energy beyond the noise (the lowest energy among those, then the
    fastest), else serial with torch on every core."""
    if requested is not None:
        why = "serial (--parallel 1)" if requested == 1 else f"forced by --parallel {requested}"
        return WidthChoice(width=requested, threads_per_worker=threads_per_worker(cores, requested), why=why)
    if cores <= 1:
        return WidthChoice(width=1, threads_per_worker=1, why="serial: one core here")
    if calibration is None:
        return WidthChoice(
            width=1,
            threads_per_worker=cores,
            why="serial: no parallel calibration (calibration is off in this scenario)",
        )
    if calibration.shared_machine():
        why = (
            f"serial: other processes kept {calibration.busy_elsewhere_cores:.2f} of {calibration.cores} cores busy "
            "while calibrating: not a fair measure"
        )
        return WidthChoice(width=1, threads_per_worker=cores, why=why)
    saving: list[tuple[float, float, int]] = []
    tried: list[str] = []
    for width in sorted(set(calibration.parallel) & set(calibration.serial)):
        speedup, energy = calibration.speedup(width), calibration.energy_ratio(width)
        if speedup is None or energy is None:
            tried.append(f"{width} workers: no time or energy reading")
            continue
        wall_runs, energy_runs = calibration.parallel_runs(width)
        serial = calibration.serial[width]
        time_no = saving_beyond_noise(serial.wall_s_runs, wall_runs, sigmas, min_gain_pct)
        energy_no = saving_beyond_noise(serial.energy_j_runs, energy_runs, sigmas, min_gain_pct)
        verdict = (
            "; ".join(f"{what} {no}" for what, no in (("time", time_no), ("energy", energy_no)) if no) or "saved both"
        )
        tried.append(f"{width} workers: {speedup:.2f}x faster, {energy:.2f}x the energy ({verdict})")
        if time_no is None and energy_no is None:
            saving.append((energy, -speedup, width))
    if not saving:
        measured = "; ".join(tried) if tried else "no width measured"
        return WidthChoice(
            width=1,
            threads_per_worker=cores,
            why=f"serial: no width saved both wall time and energy beyond the noise here ({measured})",
        )
    energy, neg_speedup, width = min(saving)
    return WidthChoice(
        width=width,
        threads_per_worker=calibration.parallel[width].threads_per_worker,
        why=f"{width} workers: measured {-neg_speedup:.2f}x faster at {energy:.2f}x the energy of serial training, "
        "start-up included",
    )


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _sem(xs: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt n)."""
    n = len(xs)
    if n < 2:
        return math.inf
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)
