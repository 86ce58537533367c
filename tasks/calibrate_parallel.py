"""Measure once per machine and workload whether training candidates at once pays here.

The probe is the loop's own workload: the scenario's model on the prepared training split, at
the scenario's batch size, for enough epochs that one job lasts about `job_s`. For each width
N (2, 4, 8, ... up to the cores), the same N jobs run

- serially, one after another in this process, torch on every core (what a serial loop does);
- at once, on a local Dask cluster of N worker processes with torch threads = cores / N each
  (what `--parallel N` does),

alternating, `repeats` times, each batch inside one window of the loop's meter; parallel must
win every (serial, parallel) pair, not only the mean. The idle power
the meter reads is measured too: the constant part a parallel phase splits equally. The table
is cached by machine, meter, workload and cores, like the rung calibration, but in a folder
of the machine rather than of one work dir (`ENERGY_LOOP_CACHE_DIR`, else ~/.cache/energy-loop):
it costs a Dask cluster start per width, tens of seconds on a busy machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from tasks import models
from tasks.calibrate import _machine
from tasks.data import load_cached
from tasks.energy.base import EnergyMeter
from tasks.evaluate import measure_idle_power_w
from tasks.parallel import QUIET_DASK, cores, local_cluster_kwargs, quiet_dask_logs, warm_worker
from tasks.train import TrainConfig, fit
from thresholds.energy.schema import Scenario
from thresholds.parallel import ParallelCalibration, WidthTrial, threads_per_worker


def machine_cache_dir() -> Path:
    return Path(os.environ.get("ENERGY_LOOP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "energy-loop")


def widths_to_try(n_cores: int, limit: int = 8) -> list[int]:
    """2, 4, 8, ... up to the cores (and the cores themselves when not a power of two)."""
    out = [2**k for k in range(1, int(math.log2(max(2, n_cores))) + 1) if 2**k <= min(n_cores, limit)]
    if n_cores <= limit and n_cores not in out and n_cores > 1:
        out.append(n_cores)
    return out


def train_job(data_path: str, spec_json: str, batch_size: int, epochs: int, threads: int, seed: int) -> float:
    """Train a fresh model for `epochs` epochs (no early stopping, no meter); its wall seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = load_cached(data_path)
        torch.manual_seed(seed)
        model = models.build(models.ModelSpec.model_validate_json(spec_json))
        started = time.perf_counter()
        fit(model, data, TrainConfig(max_epochs=epochs, patience=epochs, batch_size=batch_size, early_stopping=False, seed=seed), label="calibration")
        return time.perf_counter() - started
    finally:
        torch.set_num_threads(before)


def _workload(scenario: Scenario, data_path: str) -> tuple[str, str]:
    data = load_cached(data_path)
    spec = models.ModelSpec(kind=scenario.model.kind, in_features=data.n_features, out_features=data.out_features, hidden=list(scenario.model.hidden))
    described = f"{Path(data_path).name} ({len(data.x_train)} train samples) | {spec.kind} {spec.hidden} | batch {scenario.training.batch_size}"
    return spec.model_dump_json(), described


def calibrate_parallel(
    meter: EnergyMeter, scenario: Scenario, data_path: str, cache_dir: Path | None = None, job_s: float = 0.3, repeats: int = 3
) -> ParallelCalibration:
    """This machine's parallel table for this workload, measured now or read from the cache."""
    n_cores = cores()
    spec_json, workload = _workload(scenario, data_path)
    machine = _machine()
    key = hashlib.sha256(f"{machine}|{meter.source}|{workload}|{n_cores}".encode()).hexdigest()[:16]
    cache_dir = cache_dir or machine_cache_dir()
    path = cache_dir / f"parallel-calibration-{key}.json"
    if path.exists():
        return ParallelCalibration.model_validate_json(path.read_text())
    batch, seed = scenario.training.batch_size, scenario.training.seed
    one_epoch_s = min(train_job(data_path, spec_json, batch, 1, n_cores, seed) for _ in range(2))  # the first warms up
    epochs = max(1, min(200, math.ceil(job_s / max(one_epoch_s, 1e-4))))
    table = ParallelCalibration(
        machine=machine,
        workload=workload,
        cores=n_cores,
        meter=meter.source,
        idle_power_w=measure_idle_power_w(meter, scenario.measurement.idle_window_s),
        epochs_per_job=epochs,
    )
    for width in widths_to_try(n_cores):
        threads = threads_per_worker(n_cores, width)
        serial, parallel = _measure_width(meter, width, threads, repeats, (data_path, spec_json, batch, epochs, n_cores, seed))
        table.serial[width] = serial
        table.parallel[width] = parallel
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table.model_dump(mode="json"), indent=2))
    os.replace(tmp, path)  # never a half-written cache
    return table


def _measure_width(meter: EnergyMeter, width: int, threads: int, repeats: int, job: tuple[Any, ...]) -> tuple[WidthTrial, WidthTrial]:
    import dask
    from distributed import Client, LocalCluster

    data_path, spec_json, batch, epochs, n_cores, seed = job
    quiet_dask_logs()
    serial_s, serial_j, par_s, par_j = [], [], [], []
    with dask.config.set(QUIET_DASK), LocalCluster(**local_cluster_kwargs(width)) as cluster, Client(cluster) as client:
        client.run(warm_worker)
        # Warm-up round, not measured: imports, allocator, thread pools.
        client.gather([client.submit(train_job, data_path, spec_json, batch, 1, threads, seed, pure=False) for _ in range(width)])
        for r in range(repeats):
            with meter.window(f"parallel calibration {width} serial {r}") as window:
                started = time.perf_counter()
                for _ in range(width):
                    train_job(data_path, spec_json, batch, epochs, n_cores, seed)
                serial_s.append(time.perf_counter() - started)
            serial_j.append(window.measurement.energy_j)
            with meter.window(f"parallel calibration {width} workers {r}") as window:
                started = time.perf_counter()
                futures = [client.submit(train_job, data_path, spec_json, batch, epochs, threads, seed, pure=False) for _ in range(width)]
                client.gather(futures)
                par_s.append(time.perf_counter() - started)
            par_j.append(window.measurement.energy_j)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # One disturbed window must not decide: parallel has to win every pair, not only on average.
    losses = sum(not (p_s < s_s and p_j < s_j) for s_s, s_j, p_s, p_j in zip(serial_s, serial_j, par_s, par_j, strict=True))
    return (
        WidthTrial(workers=1, threads_per_worker=n_cores, wall_s=mean(serial_s), energy_j=mean(serial_j), repeats=repeats),
        WidthTrial(workers=width, threads_per_worker=threads, wall_s=mean(par_s), energy_j=mean(par_j), repeats=repeats, losses=losses),
    )
