"""Scale-out: candidates of one iteration trained at once on Dask workers (prefect-dask).

Design for honest energy on a shared CPU: training runs in parallel, each worker attributes
to itself only its process's CPU share of the machine-level reading (`ProcessShareMeter`),
and inference energy is measured afterwards, serially, in the flow's process with the
workers idle, exactly as in a serial loop.

A local cluster by default (one single-threaded worker process per candidate slot, so
workers do not oversubscribe the cores); the address of an existing cluster when given (its
workers need the project installed and `PREFECT_API_URL` pointing at the same Prefect API).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def _api_url() -> str | None:
    """The Prefect API this flow talks to, so local workers report to it instead of each
    starting its own ephemeral server (~10 s apiece)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url) if client.api_url else None


QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.profile.interval": "1s",
    "distributed.worker.profile.cycle": "10s",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


@contextmanager
def candidate_runner(parallel: int, address: str | None = None) -> Iterator[Any | None]:
    """A started DaskTaskRunner when `parallel` > 1 (or an address is given), else None (in process)."""
    if parallel <= 1 and not address:
        yield None
        return
    from prefect_dask import DaskTaskRunner

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    previous = os.environ.get("PREFECT_API_URL")
    if not address and not previous:
        url = _api_url()
        if url:
            os.environ["PREFECT_API_URL"] = url
    import dask

    try:
        if address:
            runner = DaskTaskRunner(address=address)
        else:
            # One single-threaded process per slot: torch's intra-op threads would oversubscribe the cores.
            runner = DaskTaskRunner(cluster_kwargs={"n_workers": parallel, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
        # Idle Dask costs CPU (a 10 ms statistical profiler and 20 ms ticks per worker: ~5 % of this 2-core
        # machine, measured with psutil), which a machine-level meter would add to the serial inference windows.
        with dask.config.set(QUIET_DASK), runner:
            if not address:
                # Start the workers and import the training stack now, so the first batch does not pay for it.
                runner.client.run(_warm_worker)
            yield runner
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _warm_worker() -> int:
    import tasks.stages  # noqa: F401  (torch, the models and the meters)

    return os.getpid()


def run_all(runner: Any | None, task: Callable[..., Any], calls: Sequence[dict[str, Any]]) -> list[Any]:
    """Call a Prefect task once per parameter set: on the runner at once, or one after another."""
    if runner is None:
        return [task(**params) for params in calls]
    futures = [runner.submit(task, parameters=params) for params in calls]
    return [future.result() for future in futures]
