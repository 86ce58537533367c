"""A client of `energy-loop serve` for the integration tests: the server as a subprocess on a free loopback port,
asked over HTTP as a client would, stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int, proc: subprocess.Popen[str], log: Path) -> None:
        self.url, self.proc, self.log = f"http://127.0.0.1:{port}", proc, log

    def ask(
        self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
        except urllib.error.HTTPError as refused:
            return refused.code, {k.lower(): v for k, v in refused.headers.items()}, refused.read()

    def score(self, frame: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}).encode()
        return self.ask("/invocations", body, headers)


def start_serve(reference: str, env: dict[str, str], cwd: Path, tmp_path: Path, *extra: str) -> Server:
    """`energy-loop serve REFERENCE` as a subprocess on a free loopback port, once it answers /ping."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    argv = [sys.executable, "-m", "flows.cli", "serve", reference, "--port", str(port), "--idle-window-s", "0.5"]
    argv += extra
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    server = Server(port, proc, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if server.ask("/ping")[0] == 200:
                return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    raise TimeoutError(log.read_text())


def stop_serve(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=60)
