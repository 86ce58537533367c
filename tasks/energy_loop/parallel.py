"""Scale-out: how candidates of one rung share a machine when trained at once on Dask workers.

The workers themselves are `tasks/energy_loop/dask_stages.py`.
Honest energy on a shared machine: the flow's process reads the machine-level meter once over
the whole parallel phase, and that reading is split among the candidates that ran in it
(`tasks.meters.share`); inference energy is measured afterwards, serially, in the flow's
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
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.meters.base import Measurement
from tasks.meters.share import split_phase_energy
from thresholds.energy import keys
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


class Placement(BaseModel):
    """Where one candidate trains: on `threads` torch threads (None: torch's default); in a parallel phase when
    `phase_host` names the host whose flow reads the machine over the whole phase (None: serially, alone)."""

    model_config = ConfigDict(frozen=True)

    threads: int | None = None
    phase_host: str | None = None


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


def attribute_phase(
    produced: list[CandidateResult],
    history: list[CandidateResult],
    reading: Measurement,
    idle_power_w: float,
    host: str,
) -> list[CandidateResult]:
    """Replace the provisional CPU-second figures of the candidates trained on this host by their
    part of the machine-level `reading`; the parts sum to the reading."""
    here = [i for i, c in enumerate(produced) if c.tags.get(keys.TRAIN_HOST) == host and keys.TRAIN_CPU_S in c.tags]
    cpu_s = [float(produced[i].tags[keys.TRAIN_CPU_S]) for i in here]
    wall_s = [float(produced[i].tags.get(keys.TRAIN_WALL_S, "0")) for i in here]
    splits = split_phase_energy(reading.energy_j, reading.duration_s, idle_power_w, cpu_s, wall_s)
    out = list(produced)
    for i, part in zip(here, splits, strict=True):
        c = produced[i]
        tags = {**c.tags, **part.tags(reading.energy_j, reading.duration_s, idle_power_w, len(here))}
        own_cpu_s = c.spent_energy_j  # provisional: the CPU seconds of its own measured windows
        k = part.energy_j / own_cpu_s if own_cpu_s > 0 else 0.0
        update: dict[str, Any] = {
            "spent_energy_j": part.energy_j,
            "energy_source": reading.source,
            "estimated": True,
            "tags": tags,
        }
        if keys.EPOCH_ENERGY_J in c.series:
            update["series"] = {**c.series, keys.EPOCH_ENERGY_J: [e * k for e in c.series[keys.EPOCH_ENERGY_J]]}
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
