"""Team setup on loopback: MLflow and Prefect servers on PostgreSQL, a process worker, `prefect deploy --all`
from prefect.yaml, and `energy-loop trigger --wait`, checked through MlflowClient against the server.

Both servers run with authentication on, as in the compose stack: MLflow's basic-auth app started by
the stack's own `infra/mlflow-server.sh`, Prefect with `PREFECT_SERVER_API_AUTH_STRING`; credentials
are generated per test session, none is stored in the repository."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require

pytestmark = [pytest.mark.integration, pytest.mark.servers]
BIN = Path(sysconfig.get_path("scripts"))  # beside the running interpreter: any venv, or none
PG = "postgres@127.0.0.1:5432"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers: past 5 s, which a Prefect worker (it winds down
    slowly) and a stack's teardown used to spend 20 s of waiting on, with nothing checked meanwhile."""
    for sig, wait_s in ((15, 5.0), (9, 5.0)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
    )


def _postgres_answers() -> bool:
    try:
        _psql("select 1")
    except subprocess.CalledProcessError:
        return False
    return True


def start_servers(tmp: Path) -> Iterator[dict[str, str]]:
    """The team stack: the environment of a client of both servers while they run. The `servers` fixture
    (tests/integration/conftest.py) starts it once for the tests that use it."""
    # The only tests of `trigger --wait`, `prefect deploy --all` and live authentication: under CI they must run.
    require(shutil.which("psql") is not None, "the PostgreSQL client psql (apt-get install postgresql-client)")
    require(
        _postgres_answers(),
        f"a PostgreSQL 15 server on {PG} with trust auth for user postgres (apt-get install postgresql)",
    )
    suffix = uuid.uuid4().hex[:8]
    dbs = {"mlflow": f"el_mlflow_{suffix}", "auth": f"el_auth_{suffix}", "prefect": f"el_prefect_{suffix}"}
    for db in dbs.values():
        _psql(f"create database {db}")
    mlflow_port, prefect_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{PG}/{dbs['prefect']}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "ENERGY_LOOP_ROOT": str(ROOT),
        # Authentication, generated for this session: the servers read the first set, clients the second.
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_DATABASE_URI": f"postgresql+psycopg2://{PG}/{dbs['auth']}",
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{PG}/{dbs['mlflow']}",
        "MLFLOW_ARTIFACTS_DESTINATION": (tmp / "artifacts").as_uri(),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(mlflow_port),
        "MLFLOW_BIN": str(BIN / "mlflow"),
        "PREFECT_SERVER_API_AUTH_STRING": f"admin:{secrets.token_urlsafe(16)}",
    }
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = (
        env["MLFLOW_AUTH_ADMIN_USERNAME"],
        env["MLFLOW_AUTH_ADMIN_PASSWORD"],
    )
    env["PREFECT_API_AUTH_STRING"] = env["PREFECT_SERVER_API_AUTH_STRING"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp / f"{name}.log"
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc, log

    try:
        mlflow_proc, mlflow_log = start("mlflow", ["sh", str(ROOT / "infra" / "mlflow-server.sh"), "--workers", "1"])
        prefect_proc, prefect_log = start(
            "prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
        )
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, mlflow_proc, mlflow_log)
        _wait_http(f"http://127.0.0.1:{prefect_port}/api/health", 120, prefect_proc, prefect_log)
        subprocess.run(
            [str(BIN / "prefect"), "work-pool", "create", "energy-loop", "--type", "process"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        deploy = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "energy-loop", "--type", "process"])
        yield env
    finally:
        for proc in reversed(procs):  # stop everything we started, even on failure
            _stop(proc)
        for db in dbs.values():
            _psql(f"drop database if exists {db} with (force)")


def _trigger(env: dict[str, str], scenario: str, model_name: str) -> subprocess.CompletedProcess[str]:
    """The CI command: start the nightly deployment with overrides and wait for the loop's verdict."""
    argv = [str(BIN / "energy-loop"), "trigger", "--deployment", "energy-loop/dev-cpu", "--wait"]
    argv += ["--param", f"scenario={scenario}", "--param", "dataset=digits", "--param", f"model_name={model_name}"]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _status_without(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_both_servers_refuse_requests_without_credentials(servers: dict[str, str]) -> None:
    mlflow_api = f"{servers['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status_without(mlflow_api) == 401
    assert _status_without(mlflow_api, ("admin", "wrong-password")) == 401
    assert (
        _status_without(mlflow_api, (servers["MLFLOW_TRACKING_USERNAME"], servers["MLFLOW_TRACKING_PASSWORD"])) == 200
    )
    prefect_api = f"{servers['PREFECT_API_URL']}/flows/filter"
    request = urllib.request.Request(
        prefect_api, data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    # The CLI without credentials: one line, exit 1, nothing registered.
    anonymous = {k: v for k, v in servers.items() if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    result = subprocess.run(
        [str(BIN / "energy-loop"), "status", "server-digits"],
        env=anonymous,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "401" in result.stderr and "not authenticated" in result.stderr, result.stderr[
        -2000:
    ]


def test_trigger_a_deployment_and_read_the_registry_from_the_server(
    servers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", servers["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", servers["MLFLOW_TRACKING_PASSWORD"])

    result = _trigger(servers, "tests/fixtures/quick.yaml", "server-digits")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Completed" in result.stdout and "PASSED:" in result.stdout
    client = MlflowClient(servers["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions("name='server-digits'")
    assert len(versions) >= 2
    champion = client.get_model_version_by_alias("server-digits", "champion")
    assert champion.tags["gates_passed"] == "true" and champion.tags["prefect.flow_run_id"]
    assert client.get_run(champion.run_id).info.status == "FINISHED"
    # The deployment carries the nightly schedule from prefect.yaml.
    listed = subprocess.run(
        [str(BIN / "prefect"), "deployment", "inspect", "energy-loop/dev-cpu"],
        env=servers,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "0 2 * * *" in listed.stdout


def test_serve_follows_the_champion_on_the_authenticated_postgresql_backed_server(
    servers: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the triggered loop above: its champion served from the team stack's MLflow (PostgreSQL, basic auth),
    behind a bearer token, its windows written back to the champion's run on that server, and judged against a
    production block it misses: one breach event in the Prefect server's event feed, the breach on the version,
    and the automation of prefect.yaml starting one retrain of that model measured at the batch size served."""
    import json

    import yaml
    from mlflow import MlflowClient

    from tests.integration.serve_client import start_serve, stop_serve
    from tests.integration.test_serving import _raw_rows

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", servers["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", servers["MLFLOW_TRACKING_PASSWORD"])
    client = MlflowClient(servers["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("server-digits", "champion")  # registered by the test above
    scenario = tmp_path / "production.yaml"
    production = {"max_energy_j_per_1k": 1e-9, "windows": 2, "min_rows": 1, "sigmas": 0, "on_breach": ["retrain"]}
    scenario.write_text(yaml.safe_dump({"name": "serve-production", "production": production}))
    env = {**os.environ, **servers, "ENERGY_LOOP_API_KEY": "t0ken-for-this-test"}
    started = time.time()
    server = start_serve(
        "server-digits@champion", env, ROOT, tmp_path, "--interval-s", "1", "--scenario", str(scenario)
    )
    token = {"Authorization": "Bearer t0ken-for-this-test"}
    try:
        raw, _ = _raw_rows(16)
        assert server.score(raw)[0] == 401  # no token: refused, not scored
        status, headers, body = server.score(raw, token)
        assert status == 200 and len(json.loads(body)["predictions"]) == 16 and headers["x-request-id"]
        health = json.loads(server.ask("/health")[2])
        assert (health["model"], health["version"], health["alias"]) == ("server-digits", champion.version, "champion")
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not events and time.monotonic() < deadline:
            assert server.score(raw, token)[0] == 200  # traffic in every window: each one misses the limit
            time.sleep(0.3)
            events = _prefect_events(servers, "energy-loop.production.breach", started)
    finally:
        code = stop_serve(server)
    log = server.log.read_text()
    assert code == 0 and "Traceback" not in log, log
    assert len(events) == 1, events  # one breach, however many windows missed after it
    payload = events[0]["payload"]
    assert payload["version"] == champion.version
    assert list(payload["batch_mix"]) == ["16"] and payload["batch_mix"]["16"] % 16 == 0  # rows of 16-row requests
    assert payload["misses"][0]["figure"] == "energy" and payload["misses"][0]["limit"] == 1e-9
    assert events[0]["resource"]["prefect.resource.id"] == "energy-loop.model.server-digits"
    tag = client.get_model_version("server-digits", champion.version).tags["production.last_breach"]
    assert json.loads(tag)["misses"][0]["figure"] == "energy"
    rows = client.get_metric_history(champion.run_id, "observed.rows")
    assert sum(m.value for m in rows) >= 32
    # The automation: one run of the retrain deployment, the breached model's scenario and data, at batch 16.
    deadline, runs = time.monotonic() + 420, []
    while time.monotonic() < deadline:
        runs = _prefect_api(servers, "/flow_runs/filter", {"deployments": {"name": {"any_": ["production-retrain"]}}})
        if runs and all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs):
            break
        time.sleep(3)
    assert len(runs) == 1, runs
    request = runs[0]["parameters"]["request"]
    assert (request["model_name"], request["serving_batch_sizes"]) == ("server-digits", [16]), request
    assert request["dataset"] == champion.tags["dataset"] and request["scenario"] == "tests/fixtures/quick.yaml"
    assert runs[0]["state"]["type"] == "COMPLETED", runs[0]["state"]
    (loop_run,) = client.search_runs(
        [champion_experiment(client, champion)], f"tags.`prefect.flow_run_id` = '{runs[0]['id']}'", max_results=1
    )
    assert loop_run.data.tags["measurement.batch_sizes"] == "16"
    assert request["production_breach"] == ["energy"] and loop_run.data.tags["production.retrain_for"] == "energy"


def champion_experiment(client: Any, version: Any) -> str:
    return str(client.get_run(version.run_id).info.experiment_id)


def _prefect_events(env: dict[str, str], name: str, since_s: float) -> list[dict[str, Any]]:
    """The events of this name in the Prefect server's event feed since `since_s`, through its API."""
    import datetime as dt

    since = dt.datetime.fromtimestamp(since_s - 5, dt.UTC).isoformat()
    found = _prefect_api(env, "/events/filter", {"filter": {"event": {"name": [name]}, "occurred": {"since": since}}})
    return list(found["events"])


def _prefect_api(env: dict[str, str], path: str, body: dict[str, Any]) -> Any:
    """A POST to the Prefect server's API, authenticated as the stack's clients are."""
    import json

    auth = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
    request = urllib.request.Request(
        env["PREFECT_API_URL"] + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_trigger_reports_a_loop_that_does_not_pass(servers: dict[str, str]) -> None:
    result = _trigger(servers, "tests/fixtures/quick-impossible.yaml", "server-impossible")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "BUDGET_EXHAUSTED:" in result.stdout
