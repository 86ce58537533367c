"""When a loop command may start its Prefect server and tracking store before the inputs are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.prefect_api import nothing_to_create


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_DATABASE_CONNECTION_URL", raising=False)
    return tmp_path


def _prefect_db(root: Path) -> None:
    (root / "prefect-home").mkdir()
    (root / "prefect-home" / "prefect.db").write_bytes(b"SQLite format 3\x00")  # not empty: its tables exist


def test_only_existing_stores_allow_an_early_start(homes: Path) -> None:
    sqlite = f"sqlite:///{homes / 'mlflow.db'}"
    assert not nothing_to_create(sqlite)  # neither exists
    _prefect_db(homes)
    assert not nothing_to_create(sqlite)  # the tracking database would be created
    (homes / "mlflow.db").write_bytes(b"")
    assert not nothing_to_create(sqlite)  # an empty file: opening it would create the tables
    (homes / "mlflow.db").write_bytes(b"SQLite format 3\x00")
    assert nothing_to_create(sqlite)
    assert nothing_to_create("http://127.0.0.1:5000")  # a tracking server: opening it writes nothing here


def test_a_tracking_database_server_waits_for_the_inputs(homes: Path) -> None:
    _prefect_db(homes)
    # Opening an SQL server's store may create its tables, so it is opened only once the inputs passed.
    assert not nothing_to_create("postgresql://127.0.0.1:5432/mlflow")


def test_a_configured_prefect_api_needs_no_local_database(homes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not nothing_to_create("http://127.0.0.1:5000")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert nothing_to_create("http://127.0.0.1:5000")


def test_a_prefect_database_elsewhere_is_not_guessed(homes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prefect_db(homes)
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://127.0.0.1:5432/prefect")
    assert not nothing_to_create("http://127.0.0.1:5000")


def test_the_local_server_has_its_own_session_and_stops_when_its_command_is_killed(homes: Path) -> None:
    """Out of the command's process group (a terminal's Ctrl-C is the command's to handle, and it still needs the
    server to mark its runs), yet gone once the command is, however it went: SIGKILL included."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    code = "from flows.prefect_api import LocalApi; api = LocalApi(); print(api.process.pid, flush=True); api.ready()\n"
    code += "import time; time.sleep(120)"
    command = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert command.stdout is not None
        server = psutil.Process(int(command.stdout.readline()))
        assert os.getsid(server.pid) != os.getsid(command.pid)
        os.kill(command.pid, signal.SIGKILL)
        command.wait()
        server.wait(timeout=30)  # psutil.TimeoutExpired if it outlived its command
    finally:
        if command.poll() is None:
            command.kill()
