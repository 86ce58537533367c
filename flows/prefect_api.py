"""The Prefect API a loop command's flow talks to: the one configured, or a local server started early.

With no API configured (no `PREFECT_API_URL` in the environment, a profile or a settings file),
Prefect's first flow call imports its whole server in this process (seconds), then starts it as a
subprocess and waits for it (more seconds), while nothing else happens. `start_local_api` starts the
same subprocess (uvicorn on loopback with Prefect's app factory, in its ephemeral mode, no UI)
without importing the server here, so it boots while the command does other work; `api_settings`
then points the flow at it like at any configured server, and the server stops when the command exits.

`LoopServices` is that start sequence as every loop command runs it (the CLI's `run` and `cooling run`,
`benchmarks/loop.py`): the server and the tracking store start together, and earlier, before the inputs
are checked, when starting them creates nothing (`nothing_to_create`: both stores exist already), so
their boot also overlaps the data check.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
STARTUP_TIMEOUT_S = 60.0
PORT_IN_USE_EXIT = 3  # uvicorn's exit status when its port was taken between our check and its bind
# `python -m uvicorn ARGS`, stopped (SIGTERM: uvicorn's graceful shutdown) once the command that started it is gone,
# however it went (a SIGKILL included): out of the command's process group, nothing else would stop it.
SERVE_WHILE_PARENT_LIVES = """
import os, signal, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = "uvicorn"
from uvicorn.main import main
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalApi:
    """A Prefect server subprocess on a loopback port, for this command only."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._launch()
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        self.port = _free_port()
        # What Prefect's own ephemeral server runs (prefect.server.api.server.SubprocessASGIServer), so both
        # behave alike; Prefect is not imported here (a second), the server reads its settings as it starts.
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        spec = importlib.util.find_spec("prefect")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("Prefect is not installed")
        package_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
        app = ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port)]
        uvicorn = ["--app-dir", package_dir, *app, "--log-level", "error", "--lifespan", "on"]
        # Its own session: a terminal's Ctrl-C (SIGINT to the foreground group) or a SIGTERM sent to the command's
        # group is the command's to handle, and the command still needs the server to mark its runs on the way out.
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_WHILE_PARENT_LIVES, str(os.getpid()), *uvicorn],
            env=env,
            start_new_session=True,
        )
        log.info(
            "Prefect API: starting a local server for this command on %s (no PREFECT_API_URL configured)", self.url
        )

    def ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        """The API's URL once its health check answers; RuntimeError when it does not in `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            status = self.process.poll()
            if status == PORT_IN_USE_EXIT:
                self._launch()
            elif status is not None:
                raise RuntimeError(f"the local Prefect server exited with status {status} before it answered")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the local Prefect server on {self.url} did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def start_local_api() -> LocalApi | None:
    """A local server starting in the background, or None when the environment configures an API (used as it is).
    A profile or settings file may configure one too: `configured_elsewhere` says so, once Prefect is imported."""
    return None if os.environ.get("PREFECT_API_URL") else LocalApi()


def configured_elsewhere() -> bool:
    """Whether a Prefect profile or settings file (or a test harness) configures the API: then that one is used.
    Importing Prefect's settings takes about a second, so this runs once the server is already booting."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextmanager
def api_settings(url: str | None) -> Iterator[None]:
    """Inside: Prefect (and every process started meanwhile, through the environment) uses the API at `url`
    (a `LocalApi.ready()`); None: the configured one."""
    if url is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def _holds_data(database: Path) -> bool:
    """An SQLite file that exists and is not empty: opening it creates no tables (an empty file would get them)."""
    return database.is_file() and database.stat().st_size > 0


def nothing_to_create(tracking_uri: str) -> bool:
    """Whether starting the local Prefect server and opening the tracking store writes nothing new: Prefect's
    database (`$PREFECT_HOME/prefect.db`, or an API configured in the environment) and an SQLite tracking file
    exist, or the tracking store is a server. Then they may start before the inputs are checked."""
    configured_api = bool(os.environ.get("PREFECT_API_URL"))
    if not configured_api and os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return False  # the server would open a database we cannot see from here
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    prefect_ready = configured_api or _holds_data(home / "prefect.db")
    if tracking_uri.startswith(("http://", "https://")):
        return prefect_ready
    if tracking_uri.startswith("sqlite:///"):
        return prefect_ready and _holds_data(Path(tracking_uri.removeprefix("sqlite:///")))
    return False  # an SQL server's store may create its tables when opened: only once the inputs passed


class LoopServices:
    """The Prefect API (a local server unless one is configured) and the tracking store, booting in the background."""

    def __init__(self) -> None:
        from registry.store import open_store_in_background

        self.api = start_local_api()
        self._store_opened: Callable[[], None] = open_store_in_background()

    @classmethod
    def start_early(cls) -> LoopServices | None:
        """Started now when that creates nothing (see `nothing_to_create`), else None: start them once the inputs
        passed."""
        from registry.store import tracking_uri

        return cls() if nothing_to_create(tracking_uri()) else None

    def ready(self) -> str | None:
        """Wait for both; the local API's URL for `api_settings` (None: the configured one). RuntimeError when
        the local server does not answer."""
        if self.api is not None and configured_elsewhere():
            self.api.stop()
            self.api = None
        self._store_opened()
        return None if self.api is None else self.api.ready()

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
