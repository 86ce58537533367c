"""The team stack of test_servers.py (MLflow and Prefect servers on PostgreSQL, with authentication, and a
process worker), started once for every test that uses it: test_servers.py and test_retrain_workflow.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
