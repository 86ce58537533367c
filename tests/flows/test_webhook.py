"""The webhook receiver's HTTP contract, with signatures made by MLflow's own delivery code, and the
`energy-loop webhook` bad-input lines. Its MLflow side: tests/registry/test_webhook.py and, through a
real server, tests/integration/test_webhook.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow.webhooks.delivery import _generate_hmac_signature

from flows import webhook
from flows.cli import main
from thresholds.promotion import guard_champion

SECRET = "unit-test-secret-0123456789"
PROBLEMS = ["its recorded gates did not pass (miss: accuracy)"]


def test_our_signature_is_mlflows() -> None:
    body = b'{"entity": "model_version_alias"}'
    assert webhook.sign(SECRET, "d1", "1700000000", body) == _generate_hmac_signature(
        SECRET, "d1", "1700000000", body.decode()
    )


class Recorder:
    """Stands in for registry.webhook.guard_alias in this HTTP-only test (the real one needs MLflow)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.emitted: list[Any] = []

    def guard(self, name: str, alias: str, version: str) -> Any:
        from registry.webhook import GuardRecord

        self.calls.append((name, alias, version))
        return GuardRecord(name, version, guard_champion(alias, version, PROBLEMS, "warn", None, False))


@pytest.fixture
def app() -> Iterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    with TestClient(webhook.create_app(SECRET, guard=recorder.guard, emit=recorder.emitted.append)) as client:
        yield client, recorder


def _headers(body: bytes, secret: str = SECRET, stamp: float | None = None) -> dict[str, str]:
    """Signed by MLflow's own code (by ours, shown equal above, for a body that is not UTF-8)."""
    delivery, ts = str(uuid.uuid4()), str(int(time.time() if stamp is None else stamp))
    try:
        signature = _generate_hmac_signature(secret, delivery, ts, body.decode())
    except UnicodeDecodeError:
        signature = webhook.sign(secret, delivery, ts, body)
    return {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": ts, "X-MLflow-Signature": signature}


def _event(alias: str = "champion", version: str = "5") -> bytes:
    return json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": "m", "alias": alias, "version": version},
        }
    ).encode()


def test_signed_alias_event_is_guarded_and_announced_once(app: tuple[TestClient, Recorder]) -> None:
    client, recorder = app
    body = _event()
    headers = _headers(body)
    response = client.post(webhook.PATH, content=body, headers=headers)
    assert response.status_code == 200 and response.json()["action"] == "warn"
    assert recorder.calls == [("m", "champion", "5")] and len(recorder.emitted) == 1
    assert client.post(webhook.PATH, content=body, headers=headers).json()["detail"].startswith("duplicate")
    assert len(recorder.calls) == 1


def test_unsigned_badly_signed_and_stale_deliveries_get_401_and_reach_nothing(app: tuple[TestClient, Recorder]) -> None:
    client, recorder = app
    body = _event()
    good = _headers(body)
    for headers in (
        {},
        {k: v for k, v in good.items() if k != "X-MLflow-Signature"},
        {**good, "X-MLflow-Signature": "v1,AAAA"},
        _headers(body, secret="not-the-secret-at-all"),
        {**good, "X-MLflow-Delivery-Id": "other"},  # the ID is part of what is signed
        _headers(body, stamp=time.time() - 3600),
    ):
        assert client.post(webhook.PATH, content=body, headers=headers).status_code == 401
    assert (
        client.post(webhook.PATH, content=_event(version="6"), headers=good).status_code == 401
    )  # signature of another body
    assert recorder.calls == [] and recorder.emitted == []


def test_oversized_bodies_get_413_declared_or_streamed(app: tuple[TestClient, Recorder]) -> None:
    client, recorder = app
    big = b"x" * (webhook.MAX_BODY_BYTES + 1)
    assert client.post(webhook.PATH, content=big, headers=_headers(big)).status_code == 413

    def stream() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536

    assert client.post(webhook.PATH, content=stream(), headers=_headers(b"")).status_code == 413
    assert recorder.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b"{oops",
        b"\xff\xfe\x00",
        b"[" * 50_000,
        b"[]",
        b'{"entity": 1, "action": "created"}',
        _event(version="x"),
        _event(alias=""),
    ],
    ids=["syntax", "not-utf8", "deep", "array", "types", "version", "empty-alias"],
)
def test_malformed_json_gets_400(app: tuple[TestClient, Recorder], body: bytes) -> None:
    client, recorder = app
    response = client.post(webhook.PATH, content=body, headers=_headers(body))
    assert response.status_code == 400 and "malformed event" in response.json()["detail"]
    assert recorder.calls == []


def test_other_events_are_acknowledged_and_ignored(app: tuple[TestClient, Recorder]) -> None:
    client, recorder = app
    body = json.dumps({"entity": "model_version", "action": "created", "data": {}}).encode()
    assert client.post(webhook.PATH, content=body, headers=_headers(body)).json()["detail"].startswith("ignored")
    assert client.get("/health").json() == {"status": "ok"} and recorder.calls == []


def test_cli_refuses_a_missing_secret_and_a_bad_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(webhook.SECRET_ENV, raising=False)
    assert main(["webhook", "serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ENERGY_LOOP_WEBHOOK_SECRET = <unset>" in err
    monkeypatch.setenv(webhook.SECRET_ENV, "short")
    assert main(["webhook", "register", "--url", "http://127.0.0.1:8765/webhooks/mlflow"]) == 2
    assert "<5 characters>" in capsys.readouterr().err
    monkeypatch.setenv(webhook.SECRET_ENV, SECRET)
    assert main(["webhook", "register", "--url", "ftp://x"]) == 2
    assert "--url = 'ftp://x'" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert main(["webhook", "register", "--url", "http://127.0.0.1:8765/webhooks/mlflow"]) == 2
    assert "only a server delivers webhooks" in capsys.readouterr().err
    assert main(["webhook", "serve", "--port", "70000"]) == 2
