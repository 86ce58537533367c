"""Serving subprocesses on loopback and the client threads that ask them, for benchmarks/serving.py.

`Server` starts a command that listens on a free port and waits for `/ping`; `Client` is one keep-alive
connection (http.client); `Load` runs client threads until stopped and counts the failed requests; `Bodies` are
the requests' bodies (rows of a built-in dataset as JSON or Parquet) and their labels.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON_TYPE = "application/json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One serving subprocess on loopback, in its own process group (stopped with SIGTERM)."""

    def __init__(self, label: str, argv: list[str], folder: Path, env: dict[str, str]) -> None:
        self.label, self.port = label, free_port()
        self.log = folder / f"{label}-{self.port}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port)], cwd=folder, env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(180.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, limit_s: float) -> None:
        deadline, probe = time.monotonic() + limit_s, Client(self.port)
        while self.proc.poll() is None:
            try:
                if probe.call("GET", "/ping")[0] == 200:
                    probe.close()
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                log = self.log.read_text()[-2000:]
                raise TimeoutError(f"{self.label} did not answer /ping in {limit_s:g} s: {log}")
            time.sleep(0.3)
        raise RuntimeError(f"{self.label} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")

    def rss_kib(self) -> int | None:
        """The server process's resident memory (VmRSS), KiB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def health(self) -> dict[str, Any]:
        client = Client(self.port)
        try:
            return dict(json.loads(client.call("GET", "/health")[2]))
        finally:
            client.close()

    def stop(self) -> int | None:
        """SIGTERM to its process group (mlflow models serve runs its workers as children); its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)


class Client:
    """One keep-alive connection to one server. A request on a reused connection that the server had closed is
    sent again once on a new one (counted in `resent`); any other error or a non-200 answer is a failed request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None
        self.resent = 0

    def call(
        self, method: str, path: str, body: bytes | None = None, content_type: str = JSON_TYPE
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                    self.conn.connect()
                    # http.client sends the headers and the body in two writes: without this, Nagle's algorithm
                    # and the delayed ACK hold the body ~40 ms, and every server would look equally slow.
                    self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.conn.request(method, path, body, {"Content-Type": content_type} if body is not None else {})
                answer = self.conn.getresponse()
                data = answer.read()
                return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a connection in a broken state takes no further request: a new one next time
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if not (stale and reused) or attempt:
                    raise
                self.resent += 1
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Load:
    """Client threads sending requests until stopped; failures counted (kept to the first few, for the report)."""

    def __init__(self, threads: int, work: Callable[[int], tuple[int, bytes]]) -> None:
        self.ok, self.failed, self.errors = 0, 0, []  # type: tuple[int, int, list[str]]
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(work, i), daemon=True) for i in range(threads)]

    def _run(self, work: Callable[[int], tuple[int, bytes]], index: int) -> None:
        while not self._stop.is_set():
            try:
                status, body = work(index)
                error = None if status == 200 else f"{status}: {body[:200]!r}"
            except Exception as exc:  # a failed request is the figure, never the end of the thread
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if error is None:
                    self.ok += 1
                else:
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(error)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, median, q3


class Bodies:
    """Request bodies of the raw dataset's rows (every column but the target), JSON and Parquet, and their labels."""

    def __init__(self, dataset: str) -> None:
        from mlflow.pyfunc import scoring_server

        from tasks.data import datasets as data_mod

        frame, target, _ = data_mod._builtin_frame(dataset, None, 0)
        self.features, self.labels = frame.drop(columns=[target]), frame[target].astype(str)
        self.parquet_type = scoring_server.CONTENT_TYPE_PARQUET
        self._cache: dict[tuple[int, str], bytes] = {}

    def rows(self, batch: int) -> Any:
        import pandas as pd

        repeats = -(-batch // len(self.features))
        return pd.concat([self.features] * repeats, ignore_index=True).head(batch)

    def json(self, batch: int) -> bytes:
        if (batch, "json") not in self._cache:
            split = json.loads(self.rows(batch).to_json(orient="split", index=False))
            self._cache[batch, "json"] = json.dumps({"dataframe_split": split}).encode()
        return self._cache[batch, "json"]

    def parquet(self, batch: int) -> bytes:
        if (batch, "parquet") not in self._cache:
            out = io.BytesIO()
            self.rows(batch).to_parquet(out, index=False)
            self._cache[batch, "parquet"] = out.getvalue()
        return self._cache[batch, "parquet"]

    def labels_for(self, batch: int) -> list[str]:
        repeats = -(-batch // len(self.labels))
        return (list(self.labels) * repeats)[:batch]
