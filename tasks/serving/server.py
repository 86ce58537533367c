"""`energy-loop serve`: a registered version behind HTTP, a drop-in for `mlflow models serve`, that measures itself.

The routes and answers of MLflow's scoring server (`/invocations` with its JSON, CSV and Parquet inputs and
answers, `/ping`, `/health`, `/version`), parsed and answered by MLflow's own functions so the answers are the
same; plus `/metrics` (Prometheus), `/feedback` (labels for earlier answers) and `/refresh` (check the alias now).
Every answer carries its request id in the `X-Request-Id` header.

The version is loaded only through its MLflow pyfunc. A server that follows an alias checks it every `poll_s`
seconds (or on `/refresh`, which the registry webhook receiver can call); when it moved, the new version is loaded
beside the old, must answer its own input example, and is then swapped in: a request holds the version it started
with, so requests in flight finish on the old one. A version that fails to load or to answer leaves the old one
serving, and `/health` says why.

Everything MLflow's registry does for the server (resolve, load, log the windows) comes in as callables
(`Registry`), so this module holds the serving and the threads, and `flows/cli/serve.py` the wiring.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tasks.meters.base import EnergyMeter, Window
from tasks.serving.feedback import Feedback
from tasks.serving.telemetry import EnergyReading, Exposition, Traffic, WindowFigures, close_window
from tasks.serving.watch import Watch

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "X-Request-Id"


@dataclass(frozen=True)
class Served:
    """One loaded version: what answers a request that starts while it is current."""

    version: str
    pyfunc: Any
    run_id: str

    @property
    def scorer(self) -> Any:
        return self.pyfunc.unwrap_python_model().scorer


class Registry(NamedTuple):
    """What the server asks the model registry: the version a reference names now, that version loaded, and
    where a window's figures go (the version's run, as metrics over time)."""

    resolve: Callable[[], tuple[str, str]]  # (version, run id) the reference names now
    load: Callable[[str], Any]  # the pyfunc of a version
    log_window: Callable[[str, WindowFigures], None]  # (run id, figures)


class Settings(NamedTuple):
    """How the server runs: the reference it serves (`NAME@ALIAS` follows the alias), how often it reports and
    checks the alias, the bearer token (None: open), the largest body, where labelled rows go."""

    reference: str
    alias: str | None
    interval_s: float = 30.0
    poll_s: float = 10.0
    api_key: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    feedback_dir: Path | None = None
    workers: int = 1  # requests scored at once (threads of this one process)
    telemetry: bool = True  # off: no windows, counters or request ids (what the measurement costs, benchmarked)


def check_answers(served: Served) -> None:
    """A version answers its own input example, or raises."""
    example = served.scorer.example()
    answer = served.pyfunc.predict(example)
    if len(answer) != len(example):
        raise RuntimeError(f"version {served.version} answered {len(answer)} rows for {len(example)}")


@dataclass
class EnergyWindows:
    """The open meter window over the traffic. With `idle_power_w`, a window of a process-share meter counts the
    process's share of the machine's energy above that idle draw (the loop's own windows count above idle too)."""

    meter: EnergyMeter
    idle_power_w: float = 0.0
    _open: tuple[AbstractContextManager[Window], Window] | None = None

    def start(self) -> None:
        manager = self.meter.window("serving")
        self._open = (manager, manager.__enter__())

    def read(self) -> EnergyReading | None:
        """Close the window, read it, open the next one."""
        if self._open is None:
            return None
        manager, handle = self._open
        self._open = None
        try:
            manager.__exit__(None, None, None)
            m = handle.measurement
        except Exception as exc:  # a meter that failed costs a window's energy figure, never the serving
            log.warning("energy window not read: %s", exc)
            return None
        attribution = m.details.get("attribution", "")
        if not self.idle_power_w or "machine_energy_j" not in m.details:
            return EnergyReading(m.energy_j, m.duration_s, m.source, m.estimated, attribution)
        above_idle_j = max(float(m.details["machine_energy_j"]) - self.idle_power_w * m.duration_s, 0.0)
        energy_j = above_idle_j * float(m.details.get("cpu_share", 1.0))
        return EnergyReading(energy_j, m.duration_s, m.source, m.estimated, attribution, self.idle_power_w)


@dataclass
class ServerState:
    """The server's moving parts: the version being served, the window's traffic, the feedback, the threads."""

    settings: Settings
    registry: Registry
    served: Served
    energy: EnergyWindows
    feedback: Feedback
    exposition: Exposition
    watch: Watch | None = None  # the scenario's production block, judged on every window
    traffic: Traffic = field(default_factory=Traffic)
    last_swap_error: str | None = None
    last_window: WindowFigures | None = None
    _failed_version: str | None = None
    _history: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    _stop: threading.Event = field(default_factory=threading.Event)
    _poke: threading.Event = field(default_factory=threading.Event)
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)
    _report_lock: threading.Lock = field(default_factory=threading.Lock)  # one window closed at a time
    _threads: list[threading.Thread] = field(default_factory=list)
    started_s: float = field(default_factory=time.time)

    def follow(self) -> None:
        """Swap in the version the alias names now, if it moved (one check)."""
        if self.settings.alias is None:
            return
        with self._swap_lock:
            version, run_id = self.registry.resolve()
            if version == self.served.version or version == self._failed_version:
                return
            try:
                candidate = Served(version, self.registry.load(version), run_id)
                check_answers(candidate)
            except Exception as exc:
                self._failed_version = version
                self.last_swap_error = f"version {version}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                log.warning("kept version %s serving: %s", self.served.version, self.last_swap_error)
                return
            with self._report_lock:
                if self.settings.telemetry:
                    self._report()  # the window so far is the old version's: logged on its run, not the new one's
                    self._history.clear()  # the standard error is over one version's windows
                old, self.served = self.served, candidate  # one assignment: a request holds the version it started
            self.last_swap_error, self._failed_version = None, None
            self.exposition.served(version)
            log.info("serving version %s (was %s), alias %s", version, old.version, self.settings.alias)

    def report(self) -> WindowFigures:
        """Close the reporting window: figures exposed, logged on the version's run, a new window open."""
        with self._report_lock:
            return self._report()

    def _report(self) -> WindowFigures:
        served = self.served
        traffic = self.traffic.take()
        reading = self.energy.read()
        self.energy.start()
        figures = close_window(traffic, reading, self._history, self.feedback.take_quality())
        self.last_window = figures
        self.exposition.window(figures)
        try:
            self.registry.log_window(served.run_id, figures)
        except Exception as exc:  # the tracking server away: the window stays in /metrics, serving goes on
            log.warning("window not logged to MLflow: %s", str(exc).splitlines()[0][:300] if str(exc) else exc)
        if self.watch is not None:
            self.watch.window(self.model, served.version, figures)
        return figures

    @property
    def model(self) -> str:
        return self.settings.reference.split("@")[0].rsplit("/", 1)[0]

    def run_background(self) -> list[threading.Thread]:
        """The reporting and alias-following threads (stopped by `stop`)."""

        def every(seconds: float, work: Callable[[], object], wake: threading.Event | None = None) -> None:
            while not self._stop.is_set():
                (wake or self._stop).wait(seconds)
                if self._stop.is_set():
                    return
                if wake is not None:
                    wake.clear()
                try:
                    work()
                except Exception as exc:
                    log.warning("%s failed: %s", getattr(work, "__name__", "work"), exc)

        threads = []
        if self.settings.telemetry:
            self.energy.start()
            threads.append(threading.Thread(target=every, args=(self.settings.interval_s, self.report), daemon=True))
        if self.settings.alias is not None:
            threads.append(
                threading.Thread(target=every, args=(self.settings.poll_s, self.follow, self._poke), daemon=True)
            )
        for thread in threads:
            thread.start()
        self._threads = threads
        return threads

    def poke(self) -> None:
        self._poke.set()

    def stop(self) -> WindowFigures | None:
        """Stop the threads and write the last window (None without telemetry)."""
        self._stop.set()
        self._poke.set()
        for thread in self._threads:  # a window being closed or a swap under way finishes first
            thread.join(timeout=60)
        return self.report() if self.settings.telemetry else None

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.last_swap_error is None else "degraded",
            "model": self.model,
            "version": self.served.version,
            "alias": self.settings.alias,
            "since_s": round(time.time() - self.started_s, 1),
            "last_swap_error": self.last_swap_error,
        }


def _parse(body: bytes, content_type: str, served: Served) -> Any:
    """The request's rows as MLflow's scoring server reads them (JSON, CSV or Parquet)."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server as mlflow_serving

    mime = content_type.split(";")[0].strip()
    schema = served.pyfunc.metadata.get_input_schema()
    if mime == mlflow_serving.CONTENT_TYPE_JSON:
        return mlflow_serving._parse_json_data(body, served.pyfunc.metadata, schema).data
    if mime == mlflow_serving.CONTENT_TYPE_CSV:
        return mlflow_serving.parse_csv_input(StringIO(body.decode("utf-8")), schema)
    if mime == mlflow_serving.CONTENT_TYPE_PARQUET:
        return mlflow_serving.parse_parquet_input(BytesIO(body))
    raise MlflowException.invalid_parameter_value(
        f"content type {content_type!r}: expected one of {', '.join(mlflow_serving.CONTENT_TYPES)}"
    )


def score(state: ServerState, body: bytes, content_type: str) -> tuple[int, str, str | None]:
    """One `/invocations` request: (status, body, request id). Counted in the window: rows and latency, or an
    error. A frame that breaks the signature is a 400 naming what broke, as MLflow answers it."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server as mlflow_serving

    served = state.served  # the version this request started with, whatever swaps meanwhile
    telemetry = state.settings.telemetry
    started = time.perf_counter()
    try:
        data = _parse(body, content_type, served)
        predictions = served.pyfunc.predict(data)
    except Exception as exc:
        if telemetry:
            state.traffic.failed()
            state.exposition.failed("bad_input" if isinstance(exc, MlflowException) else "error")
        if isinstance(exc, MlflowException):
            return exc.get_http_status_code(), exc.serialize_as_json(), None
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        return 400, MlflowException.invalid_parameter_value(first).serialize_as_json(), None
    out = StringIO()
    mlflow_serving.predictions_to_json(predictions, out)
    if not telemetry:
        return 200, out.getvalue(), None
    latency_s = time.perf_counter() - started
    rows = len(predictions)
    state.traffic.answered(rows, latency_s)
    state.exposition.answered(rows, latency_s)
    column = "prediction" if "prediction" in getattr(predictions, "columns", ()) else None
    answers = predictions[column].tolist() if column else list(predictions)
    request_id = state.feedback.answered(data if hasattr(data, "columns") else None, answers)
    return 200, out.getvalue(), request_id


def create_app(state: ServerState) -> Any:
    """The FastAPI app of one serving process."""
    from mlflow.version import VERSION

    from tasks.common.errors import InputError

    app = FastAPI(title="energy-loop serve", docs_url=None, redoc_url=None, openapi_url=None)
    key = state.settings.api_key
    # Scoring runs on its own pool, `workers` wide: the event loop keeps accepting while a batch is scored, and
    # no more predictions run at once than asked for (each at the torch threads the version was measured at).
    scoring = ThreadPoolExecutor(state.settings.workers, thread_name_prefix="score")

    def refused(request: Request) -> Response | None:
        if key is None:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[len("Bearer ") :].encode(), key.encode()):
            return None
        state.exposition.failed("unauthorized")
        return JSONResponse({"error_code": "UNAUTHENTICATED", "message": "a bearer token is required"}, 401)

    async def body_of(request: Request) -> bytes | Response:
        declared = request.headers.get("content-length", "")
        limit = state.settings.max_body_bytes
        # A declared size over the limit is refused before the body is read; an undeclared one once it is.
        body = None if declared.isdigit() and int(declared) > limit else await request.body()
        if body is None or len(body) > limit:
            state.exposition.failed("too_large")
            return JSONResponse({"error_code": "REQUEST_TOO_LARGE", "message": f"body over {limit} bytes"}, 413)
        return body

    @app.get("/ping")
    async def ping() -> Response:
        return Response("\n", 200, media_type="application/json")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(state.health())

    @app.get("/version")
    async def version() -> Response:
        return Response(VERSION, 200, media_type="application/json")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        return Response(state.exposition.text(), 200, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        status, content, request_id = await asyncio.get_running_loop().run_in_executor(
            scoring, score, state, body, request.headers.get("content-type", "application/json")
        )
        headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
        return Response(content, status, headers=headers, media_type="application/json")

    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        try:
            import json

            payload = json.loads(body or b"null")
            items = payload.get("feedback", [payload]) if isinstance(payload, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise InputError("body", payload, 'a JSON object {"request_id": ..., "labels": [...]} or '
                                 '{"feedback": [such objects]}')  # fmt: skip
            labelled = state.feedback.label([(i.get("request_id"), i.get("labels")) for i in items])
        except (ValueError, InputError) as exc:
            state.exposition.failed("bad_feedback")
            return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE", "message": str(exc)}, 400)
        return JSONResponse({"labelled_rows": labelled})

    @app.post("/refresh")
    async def refresh(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        await asyncio.to_thread(state.follow)
        return JSONResponse(state.health())

    return app
