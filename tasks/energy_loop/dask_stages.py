"""The Dask workers that train a rung's candidates at once (prefect-dask), started and fed as Prefect task runs.

A local cluster by default (`width` worker processes, torch threads = cores / width each); the address of an
existing cluster when given. How the machine's reading is split among the candidates is `tasks/energy_loop/parallel.py`.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tasks.energy_loop.parallel import (
    QUIET_DASK,
    Placement,
    ScaleOut,
    attribute_phase,
    cores,
    local_cluster_kwargs,
    quiet_dask_logs,
)
from tasks.meters.base import EnergyMeter
from thresholds.energy.policy import CandidateResult


def _api_url() -> str | None:
    """The Prefect API this flow talks to, so local workers report to it instead of each
    starting its own ephemeral server (~10 s apiece)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url) if client.api_url else None


@contextmanager
def candidate_runner(width: int, address: str | None = None, task: Any = None) -> Iterator[Any | None]:
    """A started DaskTaskRunner when `width` > 1 (or an address is given), else None (in process). Local workers import
    the module of `task` (the Prefect task they will run) as they start, so the first rung does not pay for it."""
    if width <= 1 and not address:
        yield None
        return
    from prefect_dask import DaskTaskRunner

    quiet_dask_logs()
    previous = os.environ.get("PREFECT_API_URL")
    if not address and not previous:
        url = _api_url()
        if url:
            os.environ["PREFECT_API_URL"] = url
    import dask

    try:
        runner = (
            DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(width))
        )
        # Idle Dask costs CPU (a 10 ms statistical profiler and 20 ms ticks per worker: ~5 % of this 2-core
        # machine, measured with psutil), which a machine-level meter would add to the serial inference windows.
        with dask.config.set(QUIET_DASK), runner:
            if not address:
                # Start the workers and import the training stack now, so the first rung does not pay for it.
                runner.client.run(warm_worker, task.fn.__module__ if task is not None else __name__)
            yield runner
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def warm_worker(module: str) -> int:
    """Import a task's module on a worker (torch, the models and the meters) before its first task arrives."""
    importlib.import_module(module)
    return os.getpid()


def run_all(runner: Any | None, task: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[Any]:
    """Call a Prefect task once per parameter set: on the runner at once, or one after another.

    A worker that dies mid-task loses that candidate only: the Dask scheduler runs it again on
    another worker (`distributed.scheduler.allowed-failures`), and the flow keeps one result
    per candidate, so nothing is logged or registered twice."""
    if runner is None:
        return [task(**params) for params in calls]
    futures = [runner.submit(task, parameters=params) for params in calls]
    return [future.result() for future in futures]


def train_rung(
    runner: Any | None,
    task: Callable[..., CandidateResult],
    calls: Sequence[dict[str, Any]],
    history: list[CandidateResult],
    meter: EnergyMeter,
    scale: ScaleOut,
) -> list[CandidateResult]:
    """Train one rung's candidates; on a cluster, attribute the phase's machine reading among them."""
    if runner is None or (len(calls) == 1 and scale.address is None):
        # In process, one candidate at a time: torch on every core (a worker gets cores / width).
        return [task(**params, placement=Placement(threads=cores())) for params in calls]
    host = socket.gethostname()
    where = Placement(threads=scale.threads_per_worker, phase_host=host)
    on_cluster = [{**params, "placement": where} for params in calls]
    with meter.window(f"parallel training phase of {len(calls)}") as phase:
        produced = run_all(runner, task, on_cluster)
    return attribute_phase(produced, history, phase.measurement, scale.idle_power_w, host)
