"""Guarded promotion for real: an MLflow server on PostgreSQL (basic auth on, started by the stack's own
`infra/mlflow-server.sh`) delivers its signed alias webhooks to `energy-loop webhook serve` on loopback,
registered with `energy-loop webhook register`; a Prefect test server receives the receiver's events.

Versions are created through MlflowClient the way the loop registers them (a finished run, tags
`gates_passed`, `promotion_mode`). To put an event in front of the receiver that MLflow did not send, a
second client writes to the PostgreSQL store directly: only the server delivers webhooks."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require
from tests.integration.test_servers import BIN, PG, _free_port, _postgres_answers, _psql, _stop, _wait_http

pytestmark = [pytest.mark.integration, pytest.mark.servers]
# "Visible within seconds": each MLflow request pays a password check (basic auth); on the 2-core development
# machine shared by several test runs one delivery took up to ~30 s, so the bound is generous.
WAIT_S = 60.0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[dict[str, str]]:
    """MLflow server + receiver + registered webhook; yields the environment of a client of both."""
    from prefect.settings import PREFECT_API_URL

    require(shutil.which("psql") is not None, "the PostgreSQL client psql (apt-get install postgresql-client)")
    require(
        _postgres_answers(),
        f"a PostgreSQL 15 server on {PG} with trust auth for user postgres (apt-get install postgresql)",
    )
    tmp = tmp_path_factory.mktemp("guard")
    suffix = uuid.uuid4().hex[:8]
    dbs = {"mlflow": f"el_hook_mlflow_{suffix}", "auth": f"el_hook_auth_{suffix}"}
    for db in dbs.values():
        _psql(f"create database {db}")
    mlflow_port, receiver_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_DATABASE_URI": f"postgresql+psycopg2://{PG}/{dbs['auth']}",
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{PG}/{dbs['mlflow']}",
        "MLFLOW_ARTIFACTS_DESTINATION": (tmp / "artifacts").as_uri(),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(mlflow_port),
        "MLFLOW_BIN": str(BIN / "mlflow"),
        # The server's side of webhooks, as in the compose stack: a Fernet key shared by its workers
        # (else each worker encrypts secrets with its own random key), and a receiver on loopback over http.
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "ENERGY_LOOP_WEBHOOK_SECRET": secrets.token_urlsafe(32),
    }
    env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = (
        env["MLFLOW_AUTH_ADMIN_USERNAME"],
        env["MLFLOW_AUTH_ADMIN_PASSWORD"],
    )
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
        receiver, receiver_log = start(
            "receiver", [str(BIN / "energy-loop"), "webhook", "serve", "--port", str(receiver_port)]
        )
        _wait_http(f"http://127.0.0.1:{receiver_port}/health", 120, receiver, receiver_log)
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health", 120, mlflow_proc, mlflow_log)
        url = f"http://127.0.0.1:{receiver_port}/webhooks/mlflow"
        registered = subprocess.run(
            [str(BIN / "energy-loop"), "webhook", "register", "--url", url],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert "created" in registered.stdout and "test delivery: HTTP 200" in registered.stdout, registered.stdout
        yield {
            **env,
            "RECEIVER_URL": url,
            "RECEIVER_LOG": str(receiver_log),
            "STORE_URI": env["MLFLOW_BACKEND_STORE_URI"],
        }
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for db in dbs.values():
            _psql(f"drop database if exists {db} with (force)")


@pytest.fixture
def server(guarded: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """An MlflowClient of the server (webhooks are delivered), credentials in this process's environment."""
    from mlflow import MlflowClient

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, guarded[key])
    return MlflowClient(guarded["MLFLOW_TRACKING_URI"])


def make_model(client: Any, gated_mode: str = "warn") -> tuple[str, str]:
    """A registered model whose gated version 1 is champion (through `promote`, as a person would); (name, "1")."""
    from registry.core import promote

    name = f"guard-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    add_version(client, name, gates_passed=True, mode=gated_mode)
    promote(name, "1", user="test")
    return name, "1"


def add_version(client: Any, name: str, gates_passed: bool, mode: str) -> str:
    """A version registered the way the loop does: a finished run, recorded gates and the scenario's promotion mode."""
    exp = client.get_experiment_by_name("guard") or client.get_experiment(client.create_experiment("guard"))
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id, status="FINISHED")
    tags = {
        "gates_passed": str(gates_passed).lower(),
        "promotion_mode": mode,
        "verdict": "PASS" if gates_passed else "miss: accuracy 0.41 < 0.9",
    }
    return str(
        client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
        ).version
    )


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.25)


def champion(client: Any, name: str) -> str | None:
    from registry.core import champion_version

    current = champion_version(client, name)
    return None if current is None else str(current.version)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S * 2) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def signed(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers exactly as MLflow's own delivery code signs them."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    from flows.webhook import sign

    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()) if timestamp is None else timestamp)
    try:
        signature = _generate_hmac_signature(secret, delivery_id, stamp, body.decode())
    except UnicodeDecodeError:  # a body MLflow would never send; ours signs bytes the same way
        signature = sign(secret, delivery_id, stamp, body)
    return {"X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": stamp, "X-MLflow-Signature": signature}


def alias_body(name: str, version: str, alias: str = "champion") -> bytes:
    event = {"entity": "model_version_alias", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00"}
    return json.dumps({**event, "data": {"name": name, "alias": alias, "version": version}}).encode()


def guard_tags(client: Any, name: str, version: str) -> dict[str, str]:
    return {k: v for k, v in client.get_model_version(name, version).tags.items() if k.startswith("ungated_champion.")}


def model_record(client: Any, name: str) -> dict[str, str]:
    """The registered model's tags once the receiver wrote its last one (`ungated_champion.version`), else {}."""
    tags = dict(client.get_registered_model(name).tags)
    return tags if "ungated_champion.version" in tags else {}


def recorded(client: Any, name: str, version: str) -> dict[str, str]:
    """The receiver's tags on the version once all are written (one request each), else {}."""
    tags = guard_tags(client, name, version)
    return tags if {f"ungated_champion.{k}" for k in ("at", "action", "reason", "promotion_mode")} <= set(tags) else {}


def test_enforce_moves_champion_back_to_the_last_gated_version(server: Any) -> None:
    name, gated = make_model(server, gated_mode="enforce")
    wait_for(
        lambda: server.get_registered_model(name).tags.get("last_gated_champion") == gated,
        "promote records the gated champion",
    )
    ungated = add_version(server, name, gates_passed=False, mode="enforce")
    server.set_registered_model_alias(name, "champion", ungated)  # what the UI's alias editor calls
    wait_for(lambda: champion(server, name) == gated, "champion moved back to the gated version")
    tags = wait_for(
        lambda: recorded(server, name, ungated), "the reverted version is tagged"
    )  # written right after the move
    assert tags["ungated_champion.action"] == "revert" and tags["ungated_champion.promotion_mode"] == "enforce"
    assert (
        f"moved back to version {gated}" in tags["ungated_champion.reason"]
        and "accuracy 0.41" in tags["ungated_champion.reason"]
    )
    assert (
        abs(
            time.time()
            - time.mktime(time.strptime(tags["ungated_champion.at"][:19], "%Y-%m-%dT%H:%M:%S"))
            + time.timezone
        )
        < 120
    )
    model_tags = wait_for(lambda: model_record(server, name), "the registered model is tagged")
    assert model_tags["ungated_champion.version"] == ungated and model_tags["ungated_champion.action"] == "revert"
    assert model_tags["last_gated_champion"] == gated


def test_warn_tags_the_version_and_leaves_the_alias(server: Any, guarded: dict[str, str]) -> None:
    name, _ = make_model(server)
    ungated = add_version(server, name, gates_passed=False, mode="warn")
    server.set_registered_model_alias(name, "champion", ungated)
    tags = wait_for(lambda: recorded(server, name, ungated), "the ungated promotion is tagged")
    assert tags["ungated_champion.action"] == "warn" and "left in place" in tags["ungated_champion.reason"]
    time.sleep(2)  # and nothing moves it afterwards
    assert champion(server, name) == ungated
    assert (
        wait_for(lambda: model_record(server, name), "the registered model is tagged")["ungated_champion.version"]
        == ungated
    )
    events = wait_for(lambda: prefect_events(name), "the Prefect event energy-loop.champion.ungated")
    assert events[0]["payload"]["version"] == ungated and events[0]["payload"]["action"] == "warn"


def test_a_gated_promotion_is_left_alone(server: Any) -> None:
    name, _ = make_model(server, gated_mode="enforce")
    better = add_version(server, name, gates_passed=True, mode="enforce")
    server.set_registered_model_alias(name, "champion", better)
    # The receiver records it as the champion to come back to (set through the plain client: promote did not).
    wait_for(
        lambda: server.get_registered_model(name).tags.get("last_gated_champion") == better,
        "the gated champion is recorded",
    )
    assert champion(server, name) == better and guard_tags(server, name, better) == {}
    assert not any(k.startswith("ungated_champion.") for k in server.get_registered_model(name).tags)


def test_enforce_without_an_earlier_gated_champion_removes_the_alias(server: Any) -> None:
    name = f"guard-{uuid.uuid4().hex[:8]}"
    server.create_registered_model(name)
    ungated = add_version(server, name, gates_passed=False, mode="enforce")
    server.set_registered_model_alias(name, "champion", ungated)
    wait_for(lambda: champion(server, name) is None, "the alias removed")
    assert (
        wait_for(lambda: recorded(server, name, ungated), "the version tagged")["ungated_champion.action"] == "remove"
    )


def test_bad_or_missing_signatures_get_401_and_change_nothing(server: Any, guarded: dict[str, str]) -> None:
    from mlflow import MlflowClient

    name, gated = make_model(server, gated_mode="enforce")
    ungated = add_version(server, name, gates_passed=False, mode="enforce")
    # Straight into the store: no webhook is delivered, the receiver has not been told.
    MlflowClient(tracking_uri=guarded["STORE_URI"], registry_uri=guarded["STORE_URI"]).set_registered_model_alias(
        name, "champion", ungated
    )
    assert champion(server, name) == ungated
    url, secret, body = guarded["RECEIVER_URL"], guarded["ENERGY_LOOP_WEBHOOK_SECRET"], alias_body(name, ungated)
    good = signed(secret, body)
    assert post(url, body, {})[0] == 401
    assert post(url, body, {**good, "X-MLflow-Signature": "v1," + base64.b64encode(b"x" * 32).decode()})[0] == 401
    assert post(url, body, signed("another-secret-of-some-length", body))[0] == 401
    assert post(url, alias_body(name, gated), good)[0] == 401  # a valid signature of another body
    assert post(url, body, signed(secret, body, timestamp=int(time.time()) - 3600))[0] == 401  # replayed an hour later
    time.sleep(1)
    assert champion(server, name) == ungated and guard_tags(server, name, ungated) == {}
    # The same event, signed right: the receiver acts.
    status, answer = post(url, body, good)
    assert status == 200 and answer["action"] == "revert" and answer["restored_version"] == gated, answer
    assert champion(server, name) == gated
    assert post(url, body, good) == (200, {"detail": "duplicate delivery: already handled"})


def raw_post(url: str, head: dict[str, str], body: bytes) -> int:
    """Send headers and as much of `body` as the receiver takes, then read its status line."""
    import socket
    from urllib.parse import urlparse

    target = urlparse(url)
    with socket.create_connection((target.hostname, target.port), timeout=30) as conn:
        lines = [
            f"POST {target.path} HTTP/1.1",
            f"Host: {target.netloc}",
            "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in head.items()),
        ]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            conn.sendall(body)
        except OSError:
            pass  # the receiver answered and closed before taking it all: the answer is already on its way
        return int(conn.makefile("rb").readline().split()[1])


def test_oversized_and_malformed_bodies_are_refused_and_the_receiver_lives_on(guarded: dict[str, str]) -> None:
    url, secret = guarded["RECEIVER_URL"], guarded["ENERGY_LOOP_WEBHOOK_SECRET"]
    declared = {**signed(secret, b"{}"), "Content-Length": str(64 * 1024 * 1024)}
    assert raw_post(url, declared, b"{" * 65536) == 413  # 64 MiB announced, 64 KiB sent: refused without reading it
    chunk = b"y" * 65536
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    )  # 1.25 MiB, no length given
    assert raw_post(url, {**signed(secret, b"{}"), "Transfer-Encoding": "chunked"}, chunked) == 413
    for broken in (b"{not json", b"\xff\xfe", b"[" * 100_000, b'{"entity": 1}', b"[]", alias_body("m", "x")):
        status, answer = post(url, broken, signed(secret, broken))
        assert status == 400, (broken[:40], answer)
    status, answer = post(
        url, alias_body("m", "1", alias="staging"), signed(secret, alias_body("m", "1", alias="staging"))
    )
    assert status == 200 and answer["action"] == "ignore"
    with urllib.request.urlopen(url.replace("/webhooks/mlflow", "/health"), timeout=10) as response:
        assert response.status == 200
    assert "Traceback" not in Path(guarded["RECEIVER_LOG"]).read_text()


def prefect_events(model_name: str) -> list[dict[str, Any]]:
    """Events `energy-loop.champion.ungated` about this model, read back from the Prefect server."""
    from prefect.settings import PREFECT_API_URL

    query = {
        "filter": {
            "event": {"name": ["energy-loop.champion.ungated"]},
            "resource": {"id": [f"energy-loop.model.{model_name}"]},
        },
        "limit": 10,
    }
    request = urllib.request.Request(
        f"{PREFECT_API_URL.value()}/events/filter",
        data=json.dumps(query).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["events"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.browser
def test_a_person_moves_champion_in_the_mlflow_ui_and_the_guard_moves_it_back(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Headless Chromium edits the alias on the version page, as a person would; the page then shows the guard's
    work."""
    require(CHROMIUM is not None, "Debian's chromium (apt-get install chromium; .ci/run installs it)")
    require(
        CHROMEDRIVER is not None,
        "chromedriver from Debian's chromium-driver (apt-get install chromium-driver; .ci/run installs it)",
    )
    # Only once the browser is known to be there: the servers take a while to start.
    server, guarded = request.getfixturevalue("server"), request.getfixturevalue("guarded")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    name, gated = make_model(server, gated_mode="enforce")
    ungated = add_version(server, name, gates_passed=False, mode="enforce")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # Without the background-networking flags Chromium keeps dialling out, which this network refuses.
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             "--window-size=1400,1800"]  # fmt: skip
    for flag in [*flags, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    shots = Path(os.environ.get("BROWSER_SCREENSHOT_DIR", tmp_path))
    try:
        # The server has basic auth on: the browser sends the admin's credentials with every request.
        login = base64.b64encode(
            f"{guarded['MLFLOW_TRACKING_USERNAME']}:{guarded['MLFLOW_TRACKING_PASSWORD']}".encode()
        ).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {login}"}})
        page = f"{guarded['MLFLOW_TRACKING_URI']}/#/models/{name}/versions/{ungated}"
        driver.get(page)
        wait = WebDriverWait(driver, 120)
        wait.until(
            ready.element_to_be_clickable(
                (By.XPATH, "//span[text()='Aliases']/following::button[normalize-space()='Add'][1]")
            )
        ).click()
        dialog = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
        field = dialog.find_element(By.CSS_SELECTOR, "input")
        field.send_keys("champion")
        field.send_keys(Keys.ENTER)
        wait.until(
            ready.element_to_be_clickable(
                (By.CSS_SELECTOR, "[data-component-id='mlflow.edit-aliases-modal.save-button']")
            )
        ).click()
        wait.until(ready.invisibility_of_element_located((By.CSS_SELECTOR, "[role=dialog]")))
        saved_at = time.monotonic()
        driver.save_screenshot(str(shots / "alias-set-in-ui.png"))

        def page_shows_the_guard() -> bool:
            driver.get(
                f"{guarded['MLFLOW_TRACKING_URI']}/#/models/{name}/versions/{gated}"
            )  # a fresh read of the registry
            driver.refresh()
            try:
                WebDriverWait(driver, 20).until(
                    ready.presence_of_element_located((By.XPATH, "//span[text()='Aliases']"))
                )
            except Exception:
                return False
            return "champion" in driver.find_element(By.TAG_NAME, "body").text

        # The UI really set the alias (the server saw it), then the receiver moved it back: visible on the gated
        # version's page.
        wait_for(
            lambda: recorded(server, name, ungated).get("ungated_champion.action") == "revert",
            "the UI's alias reached the receiver",
        )
        wait_for(page_shows_the_guard, "the champion alias back on the gated version's page")
        print(
            f"champion back on version {gated} in the UI {time.monotonic() - saved_at:.1f} s after the alias was saved"
        )
        driver.get(page)
        driver.refresh()
        wait.until(ready.presence_of_element_located((By.XPATH, "//*[contains(text(), 'ungated_champion.reason')]")))
        body = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(shots / "ungated-version-after-guard.png"))
    finally:
        driver.quit()
    for visible in (
        "ungated_champion.action",
        "revert",
        "ungated_champion.reason",
        f"moved back to version {gated}",
        "ungated_champion.at",
    ):
        assert visible in body, f"{visible!r} is not on the ungated version's page"
    assert champion(server, name) == gated
