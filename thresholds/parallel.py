"""How many candidates of a rung train at once: a pure decision over what calibration measured.

`--parallel auto` (the default) trains a rung in parallel only at a width that saved both
wall time and energy on this machine, for this workload: calibration ran the same training
epochs serially (torch on every core) and on N worker processes (torch threads = cores / N
each), under the loop's meter. `--parallel N` forces N; `--parallel 1` is serial.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

AUTO = "auto"


class WidthTrial(BaseModel):
    """The same N training jobs at one width: N=1 serially in process, N>1 on N workers at once."""

    workers: int = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    wall_s: float = Field(ge=0)  # mean over the repeats
    energy_j: float = Field(ge=0)
    repeats: int = Field(0, ge=0)
    losses: int = Field(0, ge=0)  # paired repeats (serial, then parallel) where parallel was not both faster and cheaper


class ParallelCalibration(BaseModel):
    """One machine and workload: the serial reference and every width tried against it."""

    machine: str
    workload: str
    cores: int = Field(ge=1)
    meter: str
    idle_power_w: float = Field(ge=0)  # the constant part split equally among parallel candidates
    epochs_per_job: int = Field(ge=1)
    serial: dict[int, WidthTrial] = {}  # width -> the same N jobs one after another, in process
    parallel: dict[int, WidthTrial] = {}  # width -> N jobs at once on N workers

    def speedup(self, width: int) -> float | None:
        s, p = self.serial.get(width), self.parallel.get(width)
        return None if s is None or p is None or p.wall_s <= 0 else s.wall_s / p.wall_s

    def energy_ratio(self, width: int) -> float | None:
        s, p = self.serial.get(width), self.parallel.get(width)
        return None if s is None or p is None or s.energy_j <= 0 else p.energy_j / s.energy_j


class WidthChoice(BaseModel):
    width: int = Field(ge=1)
    threads_per_worker: int = Field(ge=1)
    why: str


def requested_width(value: int | str) -> int | None:
    """`auto` -> None (measure), else the forced width. Raises ValueError naming the value."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    try:
        width = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--parallel = {value!r}: expected auto or an integer from 1 to 64 (candidates trained at once)") from None
    if not 1 <= width <= 64:
        raise ValueError(f"--parallel = {value!r}: expected auto or an integer from 1 to 64 (candidates trained at once)")
    return width


def threads_per_worker(cores: int, width: int) -> int:
    """Torch threads each worker gets so that the workers together fill the cores, no more."""
    return max(1, cores // max(1, width))


def parallel_width(calibration: ParallelCalibration | None, requested: int | None, cores: int) -> WidthChoice:
    """The width to train rungs at: `requested` when forced, else the measured width that saved
    both wall time and energy, on average and in every paired repeat (the lowest energy among
    those; then the fastest), else serial."""
    if requested is not None:
        why = "serial (--parallel 1)" if requested == 1 else f"forced by --parallel {requested}"
        return WidthChoice(width=requested, threads_per_worker=threads_per_worker(cores, requested), why=why)
    if cores <= 1:
        return WidthChoice(width=1, threads_per_worker=1, why="serial: one core here")
    if calibration is None:
        return WidthChoice(width=1, threads_per_worker=cores, why="serial: no parallel calibration (calibration is off in this scenario)")
    saving: list[tuple[float, float, int]] = []
    tried: list[str] = []
    for width in sorted(calibration.parallel):
        speedup, energy = calibration.speedup(width), calibration.energy_ratio(width)
        if speedup is None or energy is None:
            continue
        trial = calibration.parallel[width]
        lost = f", lost {trial.losses} of {trial.repeats} paired repeats" if trial.losses else ""
        tried.append(f"{width} workers: {speedup:.2f}x faster, {energy:.2f}x the energy{lost}")
        if speedup > 1.0 and energy < 1.0 and calibration.parallel[width].losses == 0:
            saving.append((energy, -speedup, width))
    if not saving:
        measured = "; ".join(tried) if tried else "no width measured"
        return WidthChoice(width=1, threads_per_worker=cores, why=f"serial: no width saved both wall time and energy here ({measured})")
    energy, neg_speedup, width = min(saving)
    return WidthChoice(
        width=width,
        threads_per_worker=calibration.parallel[width].threads_per_worker,
        why=f"{width} workers: measured {-neg_speedup:.2f}x faster at {energy:.2f}x the energy of serial training",
    )
