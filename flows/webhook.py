"""`energy-loop webhook serve|register` (parsers in flows/cli/registry.py): the receiver of MLflow's registry
webhooks that guards `champion`.

MLflow signs each delivery as its webhooks module does (Standard Webhooks): header
`X-MLflow-Signature: v1,<base64 HMAC-SHA256>` over `<X-MLflow-Delivery-Id>.<X-MLflow-Timestamp>.<body>`
with the secret given at registration. The receiver answers:
- 401 to a missing or bad signature, or a timestamp more than 5 minutes off (a replay), before acting;
- 413 to a body over 1 MiB, from Content-Length or while streaming, without reading it whole;
- 400 to a body that is not the JSON of an MLflow event; 200 to events it does not guard;
- 503 when MLflow cannot be read or written (MLflow retries 5xx deliveries with backoff).
An alias set on `champion` goes to `registry.webhook.guard_alias`; an ungated one also becomes the
Prefect event `energy-loop.champion.ungated` on the resource `energy-loop.model.<model name>`.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (`Request`, imported
# inside create_app to keep the CLI fast) at definition time.
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SECRET_ENV = "ENERGY_LOOP_WEBHOOK_SECRET"
MIN_SECRET_CHARS = 16
MAX_BODY_BYTES = 1024 * 1024
TIMESTAMP_TOLERANCE_S = 300
PATH = "/webhooks/mlflow"
WEBHOOK_NAME = "energy-loop-champion-guard"
UNGATED_EVENT = "energy-loop.champion.ungated"
# The header names of mlflow.webhooks.constants (mlflow 3.17), kept here so the receiver starts fast.
SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER = (
    "X-MLflow-Signature",
    "X-MLflow-Timestamp",
    "X-MLflow-Delivery-Id",
)

log = logging.getLogger("energy_loop.webhook")


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature header MLflow sends for this delivery: `v1,<base64 HMAC-SHA256>`."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_ok(secret: str, delivery_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Constant-time check of every `v1,...` signature in the header (space-separated, as Standard Webhooks allows)."""
    expected = sign(secret, delivery_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode()) for candidate in header.split() if candidate.startswith("v1,")
    )


def timestamp_fresh(timestamp: str, now_s: float, tolerance_s: float = TIMESTAMP_TOLERANCE_S) -> bool:
    return timestamp.isdigit() and abs(now_s - int(timestamp)) <= tolerance_s


class _TooLarge(Exception):
    pass


def alias_event(body: bytes) -> tuple[str, str, str] | None:
    """(model name, alias, version) of a `model_version_alias.created` event; None for other events.

    Raises ValueError when the body is not the JSON of an MLflow webhook event.
    """
    try:
        event = json.loads(body)
    except RecursionError:  # a deeply nested document: malformed for our purpose, never a crash
        raise ValueError("JSON nested too deeply") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("entity"), str)
        or not isinstance(event.get("action"), str)
    ):
        raise ValueError("expected an object with string fields entity, action and an object data")
    if (event["entity"], event["action"]) != ("model_version_alias", "created"):
        return None
    data = event.get("data")
    name, alias, version = (data.get(k) if isinstance(data, dict) else None for k in ("name", "alias", "version"))
    if not (
        isinstance(name, str)
        and name
        and isinstance(alias, str)
        and alias
        and isinstance(version, str)
        and version.isdigit()
    ):
        raise ValueError("expected data.name, data.alias and data.version (a version number) as strings")
    return name, alias, version


def emit_ungated(record: Any) -> None:
    """The Prefect event an automation notifies on (as `energy-loop.loop.*` in the README's Alerts)."""
    if not os.environ.get("PREFECT_API_URL"):
        return  # no server to tell; the tags on the version are the record
    from prefect.events import emit_event

    emit_event(
        event=UNGATED_EVENT,
        resource={
            "prefect.resource.id": f"energy-loop.model.{record.model_name}",
            "prefect.resource.name": record.model_name,
        },
        related=[
            {
                "prefect.resource.id": f"energy-loop.model.{record.model_name}.version.{record.version}",
                "prefect.resource.role": "model-version",
            }
        ],
        payload={
            "version": record.version,
            "action": record.guard.action,
            "reason": record.guard.reason,
            "restored_version": record.guard.restore_version if record.guard.action == "revert" else None,
            "promotion_mode": record.mode,
            "problems": record.problems,
            "at": record.at,
        },
    )


def create_app(
    secret: str, guard: Callable[[str, str, str], Any] | None = None, emit: Callable[[Any], None] = emit_ungated
) -> Any:
    """The FastAPI app: GET /health and POST /webhooks/mlflow."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    if guard is None:
        from registry.webhook import guard_alias

        guard = guard_alias
    act: Callable[[str, str, str], Any] = guard
    app = FastAPI(title="energy-loop webhook receiver", docs_url=None, redoc_url=None, openapi_url=None)
    seen: OrderedDict[str, None] = OrderedDict()  # recent delivery IDs: a redelivered or replayed event acts once
    inflight: dict[str, asyncio.Future[tuple[int, dict[str, Any]]]] = {}

    def answer(status: int, detail: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    async def read_bounded(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(PATH)
    async def receive(request: Request) -> JSONResponse:
        client = request.client.host if request.client else "?"
        delivery_id = request.headers.get(DELIVERY_ID_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not (delivery_id and timestamp and signature):
            log.warning("refused a delivery from %s: no signature headers (401)", client)
            return answer(401, f"missing {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} or {DELIVERY_ID_HEADER}")
        try:
            body = await read_bounded(request)
        except _TooLarge:
            log.warning("refused a delivery from %s: body over %d bytes (413)", client, MAX_BODY_BYTES)
            return answer(413, f"request body over {MAX_BODY_BYTES} bytes")
        except ClientDisconnect:
            return answer(400, "the client went away before sending the whole body")
        if not signature_ok(secret, delivery_id, timestamp, body, signature):
            log.warning("refused a delivery from %s: bad signature (401)", client)
            return answer(401, "bad signature")
        if not timestamp_fresh(timestamp, time.time()):
            log.warning(
                "refused delivery %s from %s: timestamp %s is more than %d s off (401)",
                delivery_id,
                client,
                timestamp,
                TIMESTAMP_TOLERANCE_S,
            )
            return answer(401, f"timestamp more than {TIMESTAMP_TOLERANCE_S} s off: replayed or clock skew")
        if delivery_id in seen:
            return answer(200, "duplicate delivery: already handled")
        try:
            event = alias_event(body)
        except ValueError as exc:
            return answer(400, f"malformed event: {exc}")
        if event is None:
            return answer(200, "ignored: not a model_version_alias.created event")
        if delivery_id in inflight:  # MLflow gave up waiting (30 s) and redelivered: answer as the first one will
            status, content = await asyncio.shield(inflight[delivery_id])
            return JSONResponse(content, status_code=status)
        inflight[delivery_id] = asyncio.get_running_loop().create_future()
        status, content = 503, {"detail": "the receiver failed; retry"}
        try:
            status, content = await run_in_threadpool(handle, delivery_id, *event)
        finally:
            inflight.pop(delivery_id).set_result((status, content))
        if status == 200:
            seen[delivery_id] = None
            while len(seen) > 10_000:
                seen.popitem(last=False)
        return JSONResponse(content, status_code=status)

    def handle(delivery_id: str, name: str, alias: str, version: str) -> tuple[int, dict[str, Any]]:
        """Guard the alias; (HTTP status, answer). 503 makes MLflow redeliver later."""
        from mlflow.exceptions import MlflowException

        from registry.core import ChampionLockTimeout

        try:
            record = act(name, alias, version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code):
                return 200, {"detail": f"ignored: {name} version {version} does not exist (deleted since?)"}
            log.error(
                "delivery %s: MLflow failed: %s (503, MLflow will retry)", delivery_id, str(exc).splitlines()[0][:300]
            )
            return 503, {"detail": "MLflow could not be read or written; retry"}
        except ChampionLockTimeout as exc:
            log.error("delivery %s: %s (503, MLflow will retry)", delivery_id, exc)
            return 503, {"detail": str(exc)}
        if record.guard.action not in ("ignore", "gated"):
            try:
                emit(record)
            except Exception as exc:  # an unreachable Prefect server must not undo what was done in MLflow
                log.error("could not emit %s: %s", UNGATED_EVENT, exc)
        if record.guard.action != "ignore":
            log.info("%s@%s -> version %s: %s: %s", name, alias, version, record.guard.action, record.guard.reason)
        return 200, {
            "detail": record.guard.reason,
            "action": record.guard.action,
            "restored_version": record.guard.restore_version,
        }

    return app


def read_secret() -> str:
    """The shared secret from the environment; ValueError naming the variable when it is unusable."""
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET_CHARS:
        shown = "<unset>" if SECRET_ENV not in os.environ else f"<{len(secret)} characters>"
        raise ValueError(
            f"{SECRET_ENV} = {shown}: expected a secret of at least {MIN_SECRET_CHARS} characters (the same for serve "
            "and register)"
        )
    return secret


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port = {port}: expected a port number from 1 to 65535")
    return port


def serve(secret: str, host: str, port: int) -> int:
    """Run the receiver until interrupted."""
    import uvicorn

    if not os.environ.get("PREFECT_API_URL"):
        log.warning(
            "PREFECT_API_URL is not set: ungated promotions are tagged in MLflow but no Prefect event is emitted"
        )
    else:
        import prefect.events  # noqa: F401  (imported now, not while MLflow waits on the first delivery)
    import registry.webhook  # noqa: F401  (mlflow too)

    log.info(
        "guarding champion: MLflow webhooks to http://%s:%d%s (tracking %s)",
        host,
        port,
        PATH,
        os.environ.get("MLFLOW_TRACKING_URI", "sqlite"),
    )
    uvicorn.run(create_app(secret), host=host, port=port, log_level="warning", access_log=False)
    return 0


def check_registration(url: str) -> None:
    """ValueError (bad input) when `url` or MLFLOW_TRACKING_URI cannot work, before any request is made."""
    from urllib.parse import urlparse

    from registry.store import tracking_uri

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"--url = {url!r}: expected http(s)://HOST[:PORT]{PATH}")
    if not tracking_uri().startswith(("http://", "https://")):
        raise ValueError(
            f"MLFLOW_TRACKING_URI = {tracking_uri()!r}: expected an MLflow server (http[s]://...): only a server "
            "delivers webhooks"
        )


def register(secret: str, url: str, name: str, test: bool) -> int:
    """Create or update the webhook on the MLflow server, then have MLflow send it a signed test event."""
    from registry.webhook import ALIAS_EVENT, register_webhook, test_webhook

    webhook_id, created = register_webhook(url, secret, name)
    print(f"webhook {name} ({webhook_id}) {'created' if created else 'updated'}: {ALIAS_EVENT} -> {url}")
    if not test:
        return 0
    delivered, detail = test_webhook(webhook_id)
    if not delivered:
        print(
            f"energy-loop: test delivery to {url} failed: {detail}. The MLflow server must reach it: for http or a "
            "private/loopback address it needs MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and "
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true",
            file=sys.stderr,
        )
        return 1
    print(f"test delivery: {detail}")
    return 0
