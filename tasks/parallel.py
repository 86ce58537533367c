"""Scale-out: candidates of one rung trained at once on Dask workers (prefect-dask).

Honest energy on a shared machine: the flow's process reads the machine-level meter once over
the whole parallel phase, and that reading is split among the candidates that ran in it
(`tasks.energy.share`); inference energy is measured afterwards, serially, in the flow's
process with the workers idle, exactly as in a serial loop.

A local cluster by default (`width` worker processes, torch threads = cores / width each, so
the workers fill the cores without oversubscribing them); the address of an existing cluster
when given (its workers need the project installed and `PREFECT_API_URL` pointing at the same
Prefect API). A rung of one candidate trains in process on a local cluster: it has nothing to
run beside.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tasks.energy.base import EnergyMeter, Measurement
from tasks.energy.share import split_phase_energy
from thresholds.energy.policy import CandidateResult
from thresholds.parallel import WidthChoice

log = logging.getLogger(__name__)

QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.profile.interval": "1s",
    "distributed.worker.profile.cycle": "10s",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


class ScaleOut(WidthChoice):
    """How this loop trains its rungs: the width chosen, why, and what the phase split needs."""

    idle_power_w: float = 0.0
    address: str | None = None


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_cluster_kwargs(width: int) -> dict[str, Any]:
    """One single-threaded Dask process per slot: torch's own threads (set per task) use the cores."""
    return {"n_workers": width, "threads_per_worker": 1, "processes": True, "dashboard_address": None}


def quiet_dask_logs() -> None:
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _api_url() -> str | None:
    """The Prefect API this flow talks to, so local workers report to it instead of each
    starting its own ephemeral server (~10 s apiece)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url) if client.api_url else None


@contextmanager
def candidate_runner(width: int, address: str | None = None) -> Iterator[Any | None]:
    """A started DaskTaskRunner when `width` > 1 (or an address is given), else None (in process)."""
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
        runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(width))
        # Idle Dask costs CPU (a 10 ms statistical profiler and 20 ms ticks per worker: ~5 % of this 2-core
        # machine, measured with psutil), which a machine-level meter would add to the serial inference windows.
        with dask.config.set(QUIET_DASK), runner:
            if not address:
                # Start the workers and import the training stack now, so the first rung does not pay for it.
                runner.client.run(warm_worker)
            yield runner
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def warm_worker() -> int:
    import tasks.stages  # noqa: F401  (torch, the models and the meters)

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
        return [task(**{**params, "threads": cores()}) for params in calls]
    host = socket.gethostname()
    on_cluster = [{**params, "phase_host": host, "threads": scale.threads_per_worker} for params in calls]
    with meter.window(f"parallel training phase of {len(calls)}") as phase:
        produced = run_all(runner, task, on_cluster)
    return attribute_phase(produced, history, phase.measurement, scale.idle_power_w, host)


def attribute_phase(
    produced: list[CandidateResult], history: list[CandidateResult], reading: Measurement, idle_power_w: float, host: str
) -> list[CandidateResult]:
    """Replace the provisional CPU-second figures of the candidates trained on this host by their
    part of the machine-level `reading`; the parts sum to the reading."""
    here = [i for i, c in enumerate(produced) if c.tags.get("train_host") == host and "train_cpu_s" in c.tags]
    cpu_s = [float(produced[i].tags["train_cpu_s"]) for i in here]
    wall_s = [float(produced[i].tags.get("train_wall_s", "0")) for i in here]
    splits = split_phase_energy(reading.energy_j, reading.duration_s, idle_power_w, cpu_s, wall_s)
    out = list(produced)
    for i, part in zip(here, splits, strict=True):
        c = produced[i]
        tags = {**c.tags, **part.tags(reading.energy_j, reading.duration_s, idle_power_w, len(here))}
        own_cpu_s = c.spent_energy_j  # provisional: the CPU seconds of its own measured windows
        k = part.energy_j / own_cpu_s if own_cpu_s > 0 else 0.0
        update: dict[str, Any] = {"spent_energy_j": part.energy_j, "energy_source": reading.source, "estimated": True, "tags": tags}
        if "epoch_energy_j" in c.series:
            update["series"] = {**c.series, "epoch_energy_j": [e * k for e in c.series["epoch_energy_j"]]}
        if c.train_energy_j is not None:
            # Lineage = inherited joules + this step's own figure (provisional units cancel out here).
            inherited_j = c.train_energy_j - own_cpu_s
            parent = history[c.step.parent] if c.step.parent is not None and inherited_j > 0 else None
            inherited_sem_j = parent.train_energy_sem_j if parent is not None else 0.0
            own_sem_j = math.sqrt(max(0.0, c.train_energy_sem_j**2 - inherited_sem_j**2)) * k
            update["train_energy_j"] = inherited_j + part.energy_j
            update["train_energy_sem_j"] = math.hypot(inherited_sem_j, own_sem_j)
        out[i] = c.model_copy(update=update)
    return out


def cluster_shape(address: str) -> tuple[int, int]:
    """(worker slots, torch threads per worker) of an existing Dask cluster: every worker thread
    is a slot, and the workers sharing a host share its cores."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        slots = max(1, sum(client.nthreads().values()))
        host_cores = client.run(cores)  # worker address -> cores of its machine
        hosts: dict[str, list[int]] = {}
        for worker, n in host_cores.items():
            hosts.setdefault(worker.rsplit(":", 1)[0], []).append(n)
        threads = min(max(1, cs[0] // len(cs)) for cs in hosts.values()) if hosts else 1
    return slots, threads
