"""Measure once per machine and workload whether training a rung's candidates at once pays here.

The probe is a real rung through the loop's own path: `train_task` (the loop's Prefect task
`tasks.energy_loop.stages.train_candidate`) trains N baseline candidates of the scenario's recipe (its model
on the prepared data, its batch size, its meter's training windows, saved like any candidate),
for `epochs_per_job` epochs each: the scenario's `fine_tune_epochs` (its shortest real rung, so
the fixed per-candidate costs weigh at least as much as in the loop). For each width N (2, 4,
8, ... up to the cores), under one machine-level window each:

- serially, `tasks.energy_loop.parallel.train_rung` with no runner, torch threads = every core (what a
  serial loop does); half of the repeats before the workers start, half after they stop;
- on the loop's `candidate_runner(N)` (prefect-dask, N worker processes, torch threads =
  cores / N each), through the same `train_rung`; the workers' start-up (processes, imports,
  the data loaded on each, a first one-epoch rung: what the loop's first parallel rung pays
  once) and shutdown are measured on their own.

Other processes' CPU time during the serial runs is recorded too (`/proc/stat` minus this
process): under contention a serial candidate's torch threads stall each other, which would make
parallel look better than it is on the machine alone.

`thresholds.parallel.parallel_width` decides from that table. It is cached by machine, meter,
workload and cores, like the rung calibration, in a folder of the machine
(`ENERGY_LOOP_CACHE_DIR`, else ~/.cache/energy-loop): it costs one worker start per width. A
machine that other processes keep busy (during the idle window, or a serial run) stops the
calibration there: serial for this loop, nothing cached, measured again by a later loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tasks.data.datasets import load_cached
from tasks.energy_loop.calibrate import _machine
from tasks.energy_loop.dask_stages import candidate_runner, train_rung
from tasks.energy_loop.parallel import ScaleOut, cores
from tasks.meters.base import EnergyMeter
from tasks.meters.share import machine_busy_cpu_s
from tasks.meters.simple import NullMeter
from tasks.models.evaluate import measure_idle_power_w
from thresholds.energy.policy import CandidateResult, Step, StepKind
from thresholds.energy.schema import Scenario
from thresholds.parallel import ParallelCalibration, WidthTrial, threads_per_worker

CACHE_VERSION = "prefect-path-v2"  # bump when what is measured changes: older tables are not read


def machine_cache_dir() -> Path:
    return Path(
        os.environ.get("ENERGY_LOOP_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "energy-loop"
    )


def widths_to_try(n_cores: int, limit: int = 8) -> list[int]:
    """2, 4, 8, ... up to the cores (and the cores themselves when not a power of two)."""
    out = [2**k for k in range(1, int(math.log2(max(2, n_cores))) + 1) if 2**k <= min(n_cores, limit)]
    if n_cores <= limit and n_cores not in out and n_cores > 1:
        out.append(n_cores)
    return out


def _workload(scenario: Scenario, data_path: str) -> str:
    data = load_cached(data_path)
    t = scenario.training
    return (
        f"{Path(data_path).name} ({len(data.x_train)} train samples) | {scenario.model.kind} "
        f"{list(scenario.model.hidden)} | batch {t.batch_size}"
    )


def calibrate_parallel(
    meter: EnergyMeter,
    scenario: Scenario,
    data_path: str,
    train_task: Callable[..., CandidateResult],
    meter_name: str,
    cache_dir: Path | None = None,
    repeats: int = 4,
) -> ParallelCalibration:
    """This machine's parallel table for this workload, measured now or read from the cache.

    `meter` reads the machine over each rung (a meter of its own: the candidates' training
    windows use the loop's shared `meter_name` meter inside). `repeats` per side and width, >= 2."""
    n_cores = cores()
    workload = _workload(scenario, data_path)
    machine = _machine()
    key = hashlib.sha256(
        f"{CACHE_VERSION}|{machine}|{meter.source}|{workload}|{n_cores}|{scenario.budget.max_iterations}".encode()
    ).hexdigest()[:16]
    cache_dir = cache_dir or machine_cache_dir()
    path = cache_dir / f"parallel-calibration-{key}.json"
    if path.exists():
        return ParallelCalibration.model_validate_json(path.read_text())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parallel-calibration-") as work:
        probe = _Probe(scenario, data_path, train_task, meter_name, work, n_cores)
        epochs = min(scenario.training.fine_tune_epochs, scenario.training.max_epochs)
        busy0, own0, idle_t0 = machine_busy_cpu_s(), time.process_time(), time.perf_counter()
        idle_power_w = measure_idle_power_w(meter, scenario.measurement.idle_window_s)
        probe.note_elsewhere(busy0, time.process_time() - own0, time.perf_counter() - idle_t0)
        table = ParallelCalibration(
            machine=machine,
            workload=workload,
            cores=n_cores,
            meter=meter.source,
            idle_power_w=idle_power_w,
            epochs_per_job=epochs,
            candidates_per_loop=scenario.budget.max_iterations,
        )
        if not probe.shared(table):  # a busy machine: serial, without training a single probe
            probe.rung(None, 1, 1)  # warm-up in process, not measured
            for width in widths_to_try(n_cores):
                serial, measured = probe.measure(meter, width, epochs, max(2, repeats), table)
                table.serial[width] = serial
                if measured is None:  # the machine turned busy: stop here
                    break
                table.parallel[width], table.startup_s[width], table.startup_j[width] = measured
        table.busy_elsewhere_cores = probe.mean_elsewhere()
    table.calibration_s = time.perf_counter() - started
    if table.shared_machine():
        return table  # not cached: a later loop on a quiet machine measures again
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.model_dump(mode="json"), indent=2))
    os.replace(tmp, path)  # never a half-written cache
    return table


def _load_data(data_path: str) -> int:
    """Load the prepared data into a worker's cache (returns its size, not the tensors)."""
    return len(load_cached(data_path).x_train)


class _Probe:
    """Rungs of baseline candidates trained through the loop's task, serially or on workers."""

    def __init__(
        self,
        scenario: Scenario,
        data_path: str,
        train_task: Callable[..., CandidateResult],
        meter_name: str,
        work: str,
        n_cores: int,
    ) -> None:
        self.scenario, self.data_path, self.train_task, self.meter_name = scenario, data_path, train_task, meter_name
        self.work, self.n_cores, self.runs = Path(work), n_cores, 0
        self.elsewhere_cores: list[float] = []  # per serial run: cores kept busy by other processes

    def calls(self, width: int, epochs: int) -> list[dict[str, Any]]:
        training = self.scenario.training.model_copy(update={"max_epochs": epochs, "patience": epochs})
        scenario = self.scenario.model_copy(update={"training": training})
        self.runs += 1
        work_dir = str(self.work / f"run-{self.runs}")
        return [
            dict(
                scenario=scenario,
                step=Step(kind=StepKind.BASELINE),
                history=[],
                index=i,
                data_path=self.data_path,
                work_dir=work_dir,
                meter=self.meter_name,
            )
            for i in range(width)
        ]

    def rung(self, runner: Any | None, width: int, epochs: int) -> None:
        scale = ScaleOut(
            width=width if runner else 1,
            threads_per_worker=threads_per_worker(self.n_cores, width if runner else 1),
            why="calibration",
        )
        produced = train_rung(runner, self.train_task, self.calls(width, epochs), [], NullMeter(), scale)
        rejected = [c.rejected_reason for c in produced if c.rejected_reason]
        if rejected:
            raise RuntimeError(f"parallel calibration: a probe candidate was rejected: {rejected[0]}")

    def note_elsewhere(self, busy0: float | None, own_cpu_s: float, wall_s: float) -> None:
        """Record the cores other processes kept busy in a window where this process used `own_cpu_s`."""
        busy1 = machine_busy_cpu_s()
        if busy0 is not None and busy1 is not None and wall_s > 0:
            self.elsewhere_cores.append(max(0.0, busy1 - busy0 - own_cpu_s) / wall_s)

    def mean_elsewhere(self) -> float:
        return sum(self.elsewhere_cores) / len(self.elsewhere_cores) if self.elsewhere_cores else 0.0

    def shared(self, table: ParallelCalibration) -> bool:
        return table.model_copy(update={"busy_elsewhere_cores": self.mean_elsewhere()}).shared_machine()

    def measure(
        self, meter: EnergyMeter, width: int, epochs: int, repeats: int, table: ParallelCalibration
    ) -> tuple[WidthTrial, tuple[WidthTrial, float, float] | None]:
        """The serial trial, and the parallel trial with the start-up (s, J); None when the machine turned busy."""
        serial = WidthTrial(workers=1, threads_per_worker=self.n_cores)
        parallel = WidthTrial(workers=width, threads_per_worker=threads_per_worker(self.n_cores, width))

        def timed(into: WidthTrial, runner: Any | None, label: str) -> None:
            busy0, own0 = machine_busy_cpu_s(), time.process_time()
            with meter.window(label) as window:
                t0 = time.perf_counter()
                self.rung(runner, width, epochs)
                wall_s = time.perf_counter() - t0
            into.wall_s_runs.append(wall_s)
            into.energy_j_runs.append(window.measurement.energy_j)
            if runner is None:  # in process: everything else the machine did in that window was other processes' work
                self.note_elsewhere(busy0, time.process_time() - own0, wall_s)

        for r in range((repeats + 1) // 2):  # serial before the workers exist ...
            timed(serial, None, f"parallel calibration {width}: serial {r}")
            if self.shared(table):
                return serial, None
        with ExitStack() as workers:
            with meter.window(f"parallel calibration {width}: workers start") as start:
                t0 = time.perf_counter()
                runner = workers.enter_context(candidate_runner(width, task=self.train_task))
                assert runner is not None, "a width of 2 or more always starts workers"
                runner.client.run(_load_data, self.data_path)  # what the first rung would load on each worker
                self.rung(
                    runner, width, 1
                )  # and the first task run on each worker (Prefect's own start): once per loop
                start_s = time.perf_counter() - t0
            for r in range(repeats):
                timed(parallel, runner, f"parallel calibration {width}: workers {r}")
            with meter.window(f"parallel calibration {width}: workers stop") as stop:
                t0 = time.perf_counter()
                workers.close()
                stop_s = time.perf_counter() - t0
        for r in range(repeats // 2):  # ... and after they stopped: drift between the two cancels
            timed(serial, None, f"parallel calibration {width}: serial {r + (repeats + 1) // 2}")
        return serial, (parallel, start_s + stop_s, start.measurement.energy_j + stop.measurement.energy_j)
