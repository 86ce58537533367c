"""Shared fixtures. Prefect's test harness starts once per session (~15 s) and only when needed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def run_loop_cli(tmp_path: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`energy-loop run --scenario dev-cpu ARGS` as a user starts it, in `tmp_path` with its own MLflow store and
    Prefect home: for the tests of what the command refuses before any run."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    argv = [sys.executable, "-m", "flows.cli", "run", "--scenario", "dev-cpu", *args]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout_s)


def in_ci() -> bool:
    """True under CI (`CI=true`, as GitHub Actions and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(available: bool, what_to_install: str) -> None:
    """A prerequisite of the calling test: skip on a developer's machine, fail under CI=true, where a
    skipped test would silently drop what it is the only test of. `what_to_install` says what is
    missing and how to get it, e.g. "psql (apt-get install postgresql-client)"."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI=true and this test needs {what_to_install}", pytrace=False)
    pytest.skip(f"needs {what_to_install}")


def pytest_configure(config: pytest.Config) -> None:
    # No network here: Prefect must not try to send analytics.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The parallel calibration is cached per machine (a Dask cluster start per width): once per test session, not in
    # ~/.cache.
    os.environ.setdefault("ENERGY_LOOP_CACHE_DIR", tempfile.mkdtemp(prefix="energy-loop-cache-"))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _stop_local_prefect_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A loop command called in this process (`main(["run", ...])`) starts a local Prefect server
    (flows/prefect_api.py) that stops only when the process exits; in a test session that is the end of
    the session, so every such server would idle on (its background services polling) through every later
    test. Stop the ones a test started once it is over."""
    from flows import prefect_api

    started: list[prefect_api.LocalApi] = []
    launch = prefect_api.LocalApi._launch

    def tracked(self: prefect_api.LocalApi) -> None:
        launch(self)
        started.append(self)

    monkeypatch.setattr(prefect_api.LocalApi, "_launch", tracked)
    yield
    for api in started:
        api.stop()


@pytest.fixture(autouse=True)
def _torch_threads_put_back() -> Iterator[None]:
    """Loading a served version in this process sets torch's threads to those it was measured at
    (tasks/serving/pyfunc_model.py); later tests train at the machine's own count again."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh embedded sqlite MLflow store in a temp folder; the test runs from that folder."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
