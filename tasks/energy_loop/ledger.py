"""Where the loop's own energy and wall time went: calibration, training, inference measurement, orchestration.

A loop that spends more than its model will ever save is no gain: the README's mnist1d run spent 1,982 J to save
0.0026 J per 1k predictions. A meter of its own (the loop's meter kind, a separate instance, so its windows never
nest in a candidate's) reads the machine over three stretches in turn: the setup (idle power, batch sizes,
calibration, parallel width), the candidates (training and measurement) and the closing checks (full-split
confirmation, batch-size sweep). Training and measurement are the candidates' own windows; orchestration (the
engine, the policy, logging, loading and scoring models, the closing checks) is the rest of the wall time at the loop
meter's mean power (an upper estimate: it is lighter work than training). Where
training is attributed to its process's CPU share (`measurement.train_attribution`), so is the loop meter's reading:
on a shared machine, what other processes drew is not the loop's. (The servers the loop talks to, and Dask workers
in parallel mode, are other processes: their share is not in it.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tasks.energy_loop import keys
from tasks.meters.base import EnergyMeter, MeterError
from thresholds.energy.policy import CandidateResult

PARTS = ("calibration", "training", "measurement", "orchestration")


class Ledger:
    """The loop meter's readings per stretch: name -> (energy_j, wall_s). Without a meter (it failed to start),
    the stretches keep their wall time and read no energy."""

    def __init__(self, meter: EnergyMeter | None) -> None:
        self.meter = meter
        self.stretches: dict[str, tuple[float, float]] = {}

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.meter is not None:
            self.meter.close()

    @contextmanager
    def stretch(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if self.meter is None:
            yield
            self.stretches[name] = (0.0, time.perf_counter() - started)
            return
        with self.meter.window(f"loop {name}") as window:
            yield
        self.stretches[name] = (window.measurement.energy_j, window.measurement.duration_s)


def loop_energy(stretches: dict[str, tuple[float, float]], history: list[CandidateResult]) -> dict[str, float]:
    """`loop_energy_j`, `loop_wall_s` and their parts (`loop_energy_j_calibration`, ...): the setup stretch is
    calibration, the candidates' own training and measurement windows are theirs, and orchestration is the rest of
    the candidate and closing stretches' wall time at the loop meter's mean power over them. Not the rest of their
    energy: a candidate's measurement windows read the whole machine while the loop meter reads the process's share,
    so the difference is the attribution's, not the orchestration's (on the development machine, shared with other
    sessions, it read 0 J in one run and half the loop in another)."""
    setup_j, setup_s = stretches.get("setup", (0.0, 0.0))
    rest_j = sum(j for name, (j, _) in stretches.items() if name != "setup")
    rest_s = sum(s for name, (_, s) in stretches.items() if name != "setup")
    measure_s = sum(c.measure_s for c in history)
    train_s = sum(c.train_s for c in history)
    orchestration_s = max(rest_s - train_s - measure_s, 0.0)
    energy = {
        "calibration": setup_j,
        "training": sum(max(c.spent_energy_j - c.measure_energy_j, 0.0) for c in history),
        "measurement": sum(c.measure_energy_j for c in history),
        "orchestration": rest_j / rest_s * orchestration_s if rest_s > 0 else 0.0,
    }
    wall = {"calibration": setup_s, "training": train_s, "measurement": measure_s, "orchestration": orchestration_s}
    out = {keys.LOOP_ENERGY_J: sum(energy.values()), keys.LOOP_WALL_S: sum(wall.values())}
    out.update({f"{keys.LOOP_ENERGY_J_PREFIX}{p}": energy[p] for p in PARTS})
    out.update({f"{keys.LOOP_WALL_S_PREFIX}{p}": wall[p] for p in PARTS})
    return out


def table(figures: dict[str, float]) -> str:
    """The closing table's paragraph: energy and wall time per part, with shares."""
    total_j, total_s = figures[keys.LOOP_ENERGY_J], figures[keys.LOOP_WALL_S]
    parts = [(p, figures[keys.LOOP_ENERGY_J_PREFIX + p], figures[keys.LOOP_WALL_S_PREFIX + p]) for p in PARTS]
    rows = [f"| {p} | {j:.1f} | {_share(j, total_j)} | {s:.1f} | {_share(s, total_s)} |" for p, j, s in parts]
    return "\n".join(
        [
            "The loop's own cost:",
            "",
            "| part | energy J | share | wall s | share |",
            "|---|---|---|---|---|",
            *rows,
            f"| total | {total_j:.1f} | | {total_s:.1f} | |",
        ]
    )


def _share(part: float, total: float) -> str:
    return f"{part / total:.0%}" if total > 0 else "-"


def loop_meter(make: Callable[[], EnergyMeter]) -> EnergyMeter | None:
    """The loop's own meter from `make()`, or None where it cannot start (the loop runs unaccounted rather than
    not at all)."""
    try:
        return make()
    except (MeterError, OSError, RuntimeError):
        return None
