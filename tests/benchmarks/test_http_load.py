"""The serving benchmark's clients (benchmarks/_http_load.py) against a tiny HTTP server in this process: a request
on a keep-alive connection the server closed is sent again once and counted, a failed answer is counted as failed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks._http_load import Client, Load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status = 500 if self.path == "/fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        # /drop answers, then closes the connection without saying so (an idle keep-alive connection timed out)
        self.close_connection = self.path == "/drop"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_request_on_a_connection_the_server_closed_is_sent_again_once_and_counted(port: int) -> None:
    client = Client(port)
    assert client.call("POST", "/drop", b"{}")[::2] == (200, b"ok")
    assert client.call("POST", "/ok", b"{}")[0] == 200
    assert client.resent == 1
    assert client.call("POST", "/fail", b"{}")[0] == 500  # an answer, not an exception: the caller judges it
    assert client.resent == 1
    client.close()


def test_load_counts_answers_and_failures_from_every_thread(port: int) -> None:
    clients = [Client(port) for _ in range(3)]
    sent = [0, 0, 0]

    def work(i: int) -> tuple[int, bytes]:
        sent[i] += 1
        status, _, body = clients[i].call("POST", "/fail" if sent[i] % 2 else "/ok", b"{}")
        return status, body

    with Load(3, work) as load:
        while sum(sent) < 30:
            threading.Event().wait(0.01)
    assert load.ok + load.failed == sum(sent)
    assert load.failed >= 15 and load.ok >= 12  # one in two failed, per thread
    assert load.errors and load.errors[0].startswith("500: ")
    for c in clients:
        c.close()
