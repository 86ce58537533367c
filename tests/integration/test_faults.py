"""Faults injected for real: a loop process SIGKILLed mid-training is found and closed by the next loop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry.core import promote, reap_orphans
from tests.conftest import FIXTURES, require
from tests.integration.test_servers import BIN

pytestmark = pytest.mark.integration


def test_sigkill_mid_loop_leaves_nothing_registered_and_is_reaped(mlflow_store: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    argv = [
        str(BIN / "energy-loop"),
        "run",
        "--scenario",
        str(FIXTURES / "killable.yaml"),
        "--dataset",
        "digits",
        "--model-name",
        "killed",
    ]
    log = tmp_path / "loop.log"
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    client = MlflowClient(mlflow_store)
    try:
        deadline = time.monotonic() + 180
        loop_run = None
        while time.monotonic() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("energy-loop")
            if exp is not None:
                runs = client.search_runs([exp.experiment_id])
                loops = [r for r in runs if "loop.pid" in r.data.tags]
                done = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
                if loops and done:  # the baseline is logged; the recipe is training now
                    loop_run = loops[0]
                    break
            time.sleep(0.5)
        assert loop_run is not None, log.read_text()[-3000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the loop and its ephemeral Prefect server
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    assert client.get_run(loop_run.info.run_id).info.status == "RUNNING"  # nobody closed it
    assert client.search_model_versions("name='killed'") == []  # versions are only registered when a loop closes

    reaped = reap_orphans(loop_run.info.experiment_id)  # what the next loop does first
    assert reaped == [loop_run.info.run_id]
    closed = client.get_run(loop_run.info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags["loop.reason"].startswith("orphaned: process")
    children = client.search_runs(
        [loop_run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{loop_run.info.run_id}'"
    )
    assert children and all(c.info.status in ("FINISHED", "FAILED") for c in children)
    assert reap_orphans(loop_run.info.experiment_id) == []  # idempotent


def test_a_version_from_a_loop_that_did_not_finish_cannot_be_promoted(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    exp = client.create_experiment("faults")
    loop = client.create_run(exp)
    client.set_terminated(loop.info.run_id, status="FAILED")
    candidate = client.create_run(exp, tags={"mlflow.parentRunId": loop.info.run_id})
    client.set_terminated(candidate.info.run_id, status="FINISHED")
    client.create_registered_model("half")
    version = client.create_model_version(
        "half",
        source=f"runs:/{candidate.info.run_id}/model",
        run_id=candidate.info.run_id,
        tags={"gates_passed": "true", "loop_run_id": loop.info.run_id},
    )
    with pytest.raises(Exception, match="the loop that registered it is FAILED"):
        promote("half", str(version.version))


def test_tracking_server_killed_mid_loop_then_restarted(tmp_path: Path) -> None:
    from tests.integration.test_servers import _free_port, _stop, _wait_http

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server_argv = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", (tmp_path / "artifacts").as_uri(),
    ]  # fmt: skip
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }

    def start_server(name: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        server = subprocess.Popen(
            server_argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        _wait_http(f"{uri}/health", 120, server, log)
        return server

    server = start_server("server-1")
    loop_log = tmp_path / "loop.log"
    argv = [
        str(BIN / "energy-loop"),
        "run",
        "--scenario",
        str(FIXTURES / "killable.yaml"),
        "--dataset",
        "digits",
        "--model-name",
        "outage",
    ]
    loop = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=loop_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    client = MlflowClient(uri)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and loop.poll() is None:
            exp = client.get_experiment_by_name("energy-loop")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if any("mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED" for r in runs):
                break
            time.sleep(0.5)
        _stop(server)  # the tracking server goes away while the loop trains its next candidate
        code = loop.wait(timeout=240)
    finally:
        _stop(loop)
    output = loop_log.read_text()
    assert code == 1, output[-3000:]
    assert "FAILED: the tracking server" in output and "Traceback" not in output.split("energy-loop: FAILED")[-1]

    server = start_server("server-2")
    try:
        rerun = subprocess.run(
            [str(BIN / "energy-loop"), "run", "--scenario", str(FIXTURES / "quick.yaml"), "--dataset", "digits",
             "--model-name", "outage"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
        exp = client.get_experiment_by_name("energy-loop")
        loops = [r for r in client.search_runs([exp.experiment_id]) if "loop.pid" in r.data.tags]
        assert sorted(r.info.status for r in loops) == [
            "FAILED",
            "FINISHED",
        ]  # the interrupted loop was closed as orphaned
        versions = client.search_model_versions("name='outage'")
        finished_loop = next(r for r in loops if r.info.status == "FINISHED").info.run_id
        assert versions and all(
            v.tags["loop_run_id"] == finished_loop for v in versions
        )  # nothing from the interrupted loop
        assert all(client.get_run(v.run_id).info.status == "FINISHED" for v in versions)
        champion = client.get_model_version_by_alias("outage", "champion")
        assert champion.tags["gates_passed"] == "true"
    finally:
        _stop(server)


def _tiny_tmpfs(where: Path, size_kb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


# Each fault names its own error: a full disk is ENOSPC, a file where the folder should be is ENOTDIR.
EXPECTED_ERROR = {"disk-full": "No space left on device", "unwritable": "Not a directory"}


@pytest.mark.parametrize("fault", ["disk-full", "unwritable"])
def test_disk_full_or_unwritable_artifact_store_registers_nothing(
    fault: str, mlflow_store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The embedded store keeps artifacts in ./mlartifacts: make it a 96 KiB filesystem, or a plain file."""
    import contextlib
    import io

    from flows.cli import main

    artifacts = tmp_path / "mlartifacts"
    if fault == "disk-full":
        mounted = _tiny_tmpfs(artifacts, 96)
        require(
            mounted,
            "root and util-linux's mount, to mount a 96 KiB tmpfs "
            "(run the tests as root, or in a container with CAP_SYS_ADMIN)",
        )
    else:
        artifacts.write_text("a file where the artifact folder should be")  # writes fail even as root
    request.getfixturevalue("prefect_harness")
    try:
        # Not capsys: Prefect's console log handler keeps the stream it first saw, and capsys closes its stream.
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            code = main(
                [
                    "run",
                    "--scenario",
                    str(FIXTURES / "quick.yaml"),
                    "--dataset",
                    "digits",
                    "--model-name",
                    f"full-{fault}",
                ]
            )
    finally:
        if fault == "disk-full":
            subprocess.run(["umount", str(artifacts)], capture_output=True)
    err = stderr.getvalue().strip().splitlines()
    assert code == 1
    assert err and err[-1].startswith("energy-loop: FAILED: could not write"), err[-3:]
    assert EXPECTED_ERROR[fault] in err[-1], err[-3:]
    other = next(e for f, e in EXPECTED_ERROR.items() if f != fault)
    assert other not in err[-1], err[-3:]
    client = MlflowClient(mlflow_store)
    assert client.search_model_versions(f"name='full-{fault}'") == []  # no half-logged model registered
    loops = client.search_runs(
        [client.get_experiment_by_name("energy-loop").experiment_id], filter_string="tags.`loop.pid` != ''"
    )
    assert loops and all(r.info.status == "FAILED" for r in loops)
