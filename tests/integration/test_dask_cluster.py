"""A real Dask cluster on loopback: a `dask scheduler` and two `dask worker` processes, started for
real; the loop trains its rungs there through `--dask-address`. A worker killed mid-rung loses
nothing: its candidate is trained again on the other worker, logged and registered once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DASK = str(Path(sys.executable).parent / "dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(
        self, address: str, scheduler: subprocess.Popen[bytes], workers: dict[str, subprocess.Popen[bytes]]
    ) -> None:
        self.address, self.scheduler, self.workers = address, scheduler, workers


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Cluster]:
    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    address = f"tcp://127.0.0.1:{_free_port()}"
    # Workers report task runs to the same Prefect API as the flow; no nanny, so a killed worker stays dead.
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [DASK, *args], env=env, cwd=tmp_path, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT
        )

    port = address.rsplit(":", 1)[1]
    scheduler = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"])
    workers = {
        name: start(
            name,
            [
                "worker",
                address,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
        )
        for name in ("w1", "w2")
    }
    try:
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)
        yield Cluster(address, scheduler, workers)
    finally:
        for proc in [*workers.values(), scheduler]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*workers.values(), scheduler]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _kill_a_worker_mid_training(cluster: Cluster, killed: dict[str, object], stop: threading.Event) -> None:
    """Once both workers are busy with a rung, wait a moment and kill the one still training."""
    from distributed import Client

    with Client(cluster.address, timeout=60) as client:
        while not stop.is_set():
            busy = {w: keys for w, keys in client.processing().items() if keys}
            if len(busy) == 2:
                time.sleep(0.5)
                still = {w: keys for w, keys in client.processing().items() if keys}
                if not still:
                    continue
                worker, keys = next(iter(still.items()))
                name = client.scheduler_info()["workers"][worker]["name"]
                proc = cluster.workers[str(name)]
                killed.update(name=name, pid=proc.pid, keys=list(keys), at=time.time())
                proc.kill()
                return
            time.sleep(0.05)


def test_a_rung_trains_on_a_real_cluster_and_survives_a_killed_worker(
    dask_cluster: Cluster, mlflow_store: str, tmp_path: Path
) -> None:
    killed: dict[str, object] = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_worker_mid_training, args=(dask_cluster, killed, stop), daemon=True)
    killer.start()
    argv = [
        "run", "--scenario", str(FIXTURES / "quick-cluster.yaml"), "--dataset", "digits",
        "--model-name", "digits-cluster", "--dask-address", dask_cluster.address, "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    try:
        code = main(argv)
    finally:
        stop.set()
        killer.join(timeout=30)
    assert code == 0
    assert killed, "no rung ran on both workers at once"
    assert dask_cluster.workers[str(killed["name"])].poll() is not None  # that worker is gone for good
    survivor = next(p for n, p in dask_cluster.workers.items() if n != killed["name"])
    assert survivor.poll() is None

    client = MlflowClient(mlflow_store)
    loop = client.search_runs(
        client.get_experiment_by_name("energy-loop").experiment_id, "tags.`loop.state` = 'PASSED'"
    )
    assert len(loop) == 1
    assert loop[0].data.tags["parallel.width"] == "2"  # `auto` on a cluster: its two worker slots
    candidates = client.search_runs([loop[0].info.experiment_id], f"tags.mlflow.parentRunId = '{loop[0].info.run_id}'")
    indices = sorted(int(r.data.tags["candidate"]) for r in candidates)
    assert indices == list(range(len(indices))) and len(indices) >= 2  # every candidate logged, none twice
    versions = client.search_model_versions("name='digits-cluster'")
    assert sorted(int(v.tags["candidate"]) for v in versions) == indices  # registered once each
    # The killed worker was training and completed nothing: its candidate was trained again on the survivor.
    pids = {int(r.data.tags["detail.train_pid"]) for r in candidates}
    assert pids == {survivor.pid}
    for v in versions:
        if "train_host" in {k.removeprefix("detail.") for k in client.get_run(v.run_id).data.tags}:
            assert v.tags["train_energy_attribution"] == "machine-phase-split"  # the workers share this machine


def test_parallel_calibration_trains_real_rungs_through_the_loops_task_path_and_caches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny size: the probe rungs are the loop's own `train_candidate` task runs, in process and on
    the loop's Dask task runner, read under the meter, with the workers' start-up measured."""
    import tasks.energy_loop.calibrate_parallel

    # Other sessions' load on this machine is not this test's subject: without /proc/stat the table is cached.
    monkeypatch.setattr(tasks.energy_loop.calibrate_parallel, "machine_busy_cpu_s", lambda: None)
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    from tasks.data import datasets as data_mod
    from tasks.energy_loop.calibrate_parallel import calibrate_parallel
    from tasks.energy_loop.parallel import cores
    from tasks.energy_loop.stages import train_candidate
    from tasks.meters.simple import FixedPowerMeter, ReplayMeter
    from thresholds.energy.schema import load_scenario
    from thresholds.parallel import parallel_width

    scenario = load_scenario(FIXTURES / "quick.yaml")
    data_path = str(data_mod.prepare("digits", tmp_path / "data", seed=scenario.training.seed))
    meter = FixedPowerMeter(20.0)
    began = datetime.now(UTC)
    table = calibrate_parallel(
        meter, scenario, data_path, train_candidate, "fixed-power", tmp_path / "cache", repeats=2
    )
    n = cores()
    assert table.cores == n and table.meter == meter.source and table.idle_power_w == pytest.approx(20.0)
    assert (
        table.candidates_per_loop == scenario.budget.max_iterations
        and table.calibration_s > 0
        and table.busy_elsewhere_cores == 0
    )
    assert table.epochs_per_job == scenario.training.fine_tune_epochs  # the scenario's shortest real rung
    assert sorted(table.parallel) == sorted(table.serial) == sorted(table.startup_s) and (2 in table.parallel) == (
        n >= 2
    )
    for width, trial in table.parallel.items():
        assert (trial.workers, trial.threads_per_worker) == (width, max(1, n // width))
        assert table.serial[width].threads_per_worker == n  # serial: torch on every core
        for t in (trial, table.serial[width]):
            assert len(t.wall_s_runs) == len(t.energy_j_runs) == 2
            for wall_s, energy_j in zip(t.wall_s_runs, t.energy_j_runs, strict=True):
                # Read under the meter; the window also holds the timer's own start and stop (50 ms slack on a loaded
                # machine).
                assert wall_s > 0 and energy_j == pytest.approx(20.0 * wall_s, rel=0.05, abs=20.0 * 0.05)
        assert table.startup_s[width] > 0 and table.startup_j[width] == pytest.approx(
            20.0 * table.startup_s[width], rel=0.05, abs=20.0 * 0.05
        )
    # Every probe candidate was a run of the loop's task: one warm-up in process, then per width a warm-up
    # rung on the workers (in the start-up) and 2 x 2 measured rungs of `width`.
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=began)))
    trained = [r for r in runs if r.name.startswith("train-#") and r.state is not None and r.state.is_completed()]
    assert len(trained) == 1 + sum(w + 2 * 2 * w for w in table.parallel)
    # Cached per machine, meter and workload: a second call measures nothing (a replay meter would read 1 J).
    again = calibrate_parallel(
        ReplayMeter([1.0], source=meter.source), scenario, data_path, train_candidate, "fixed-power", tmp_path / "cache"
    )
    assert again == table
    choice = parallel_width(table, None, n)
    assert choice.width == 1 or (table.speedup(choice.width) or 0) > 1 and (table.energy_ratio(choice.width) or 2) < 1
