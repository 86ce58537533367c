"""What several integration tests share, started once: the team stack of test_servers.py (MLflow and Prefect
servers on PostgreSQL, with authentication, and a process worker) for test_servers.py and
test_retrain_workflow.py, and one passing quick loop for the tests that read what it left."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.integration.test_servers import start_servers


class _Stack:
    """The running stack, or none: started by the `servers` fixture, stopped after the last test that needs it."""

    def __init__(self) -> None:
        self._running: Iterator[dict[str, str]] | None = None

    def start(self, tmp: Path) -> dict[str, str]:
        self._running = start_servers(tmp)
        return next(self._running)

    @property
    def running(self) -> bool:
        return self._running is not None

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.close()  # start_servers' `finally`: every process stopped, the databases dropped


STACK = _Stack()


@pytest.fixture(scope="package")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a client of the team stack (test_servers.start_servers), started once."""
    try:
        yield STACK.start(tmp_path_factory.mktemp("servers"))
    finally:
        STACK.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the stack as soon as no later test needs it, not at the end of the package: it idles on otherwise
    (a Prefect server's background services, a worker polling), on the CPUs the later tests measure on."""
    if not STACK.running:
        return
    items = item.session.items
    later = items[items.index(item) + 1 :]
    if not any("servers" in other.fixturenames for other in later):
        STACK.stop()


@dataclass(frozen=True)
class QuickLoop:
    """A finished quick.yaml loop on digits: its folder (the loop's working directory, with `.energy-loop/`),
    its embedded MLflow store and its outcome."""

    folder: Path
    store: str
    outcome: Any
    model_name: str = "digits-quick"


@pytest.fixture(scope="session")
def _quick_loop_once(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> QuickLoop:
    from flows.energy_loop import energy_loop
    from thresholds.energy.request import LoopRequest

    folder = tmp_path_factory.mktemp("quick-loop")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:  # as the `mlflow_store` fixture sets a test up
        env.chdir(folder)
        env.setenv("MLFLOW_TRACKING_URI", store)
        outcome = energy_loop(
            LoopRequest(scenario=str(FIXTURES / "quick.yaml"), dataset="digits", model_name=QuickLoop.model_name)
        )
    return QuickLoop(folder, store, outcome)


@pytest.fixture
def quick_loop(_quick_loop_once: QuickLoop, monkeypatch: pytest.MonkeyPatch) -> QuickLoop:
    """One passing loop (quick.yaml on digits, real Prefect and a real embedded MLflow store), run once per
    session for the tests that check what such a loop leaves: the registry (test_loop.py), the champion
    served and scored (test_serving.py), the version page (test_browser.py). The test runs from the loop's
    folder with its store as MLFLOW_TRACKING_URI, like a test with the `mlflow_store` fixture."""
    import mlflow

    monkeypatch.chdir(_quick_loop_once.folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _quick_loop_once.store)
    mlflow.set_tracking_uri(
        _quick_loop_once.store
    )  # MLflow's global URI, as the loop leaves it set (registry.core) after running
    return _quick_loop_once
