"""What every command shares: exit codes, the one-line error, the loop's error path, and stopping on a signal.

Stopping: Ctrl-C raises KeyboardInterrupt in the main thread, and so does SIGTERM here (`Stopped`), so one
clean-up runs for both: the loop's `aborting` marks its MLflow run KILLED and nothing is registered, and
`main` says so in one line and exits 128 + the signal (130, 143), with no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flows.prefect_api import LoopServices, api_settings
from thresholds.errors import InputError

EXIT_PASSED, EXIT_NOT_PASSED, EXIT_BAD_INPUT = 0, 1, 2
SIGNALS: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


def bad_input(prog: str, exc: Exception) -> int:
    """Bad input: one line naming the field, the value and what was expected; exit 2."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT


def verbose_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--verbose",
        action="store_true",
        help="also show every log line (Prefect's engine, MLflow, CodeCarbon, training epochs) and the traceback "
        "behind an error",
    )


def show_scenario(prog: str, load: Callable[[], Any]) -> int:
    """Validate a scenario and print it as JSON, or say in one line what is wrong with it."""
    try:
        scenario = load()
    except InputError as exc:
        return bad_input(prog, exc)
    print(scenario.model_dump_json(indent=2))
    return 0


def run_loop(prog: str, services: LoopServices, loop: Callable[[], Any]) -> int:
    """Run a pipeline's flow once its Prefect API and tracking store are ready (flows/prefect_api.py):
    the one error path of every loop command. Its table and verdict, or one line."""
    from mlflow.exceptions import MlflowException

    from flows import console

    started = time.perf_counter()
    try:
        url = services.ready()
    except RuntimeError as exc:
        print(f"{prog}: FAILED: {exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    try:
        try:
            with api_settings(url):
                outcome = loop()
        finally:
            console.end_line()
    except InputError as exc:
        return bad_input(prog, exc)
    except OSError as exc:
        # Disk full or an unwritable artifact location: the loop ended FAILED before registering anything.
        print(
            f"{prog}: FAILED: could not write {getattr(exc, 'filename', None) or 'an artifact'}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    except MlflowException as exc:
        # Tracking unreachable past the retry budget: the loop ends FAILED, nothing registered, no alias moved;
        # the next loop closes its run as orphaned.
        first = str(exc).splitlines()[0][:300]
        print(
            f"{prog}: FAILED: the tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite')} failed past "
            f"the retry budget: {first}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
    return print_outcome(outcome, started)


def print_outcome(outcome: Any, started: float) -> int:
    """A finished loop's table and verdict (energy or cooling loop); its exit code."""
    print()
    print(outcome.table_md)
    print()
    print(f"{outcome.state}: {outcome.reason}")
    print(outcome.champion_reason)
    print(
        f"model {outcome.model_name}, versions {outcome.versions}, MLflow run {outcome.loop_run_id}, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return EXIT_PASSED if outcome.state == "PASSED" else EXIT_NOT_PASSED


# ---- stopping ---------------------------------------------------------------------------------------------------


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread where Ctrl-C raises KeyboardInterrupt, so the same clean-up runs."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Inside: SIGTERM raises `Stopped` (SIGINT raises KeyboardInterrupt, as always). Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _: object) -> None:
        raise Stopped(signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, SIGTERM (`Stopped`), or Prefect's own SIGTERM bridge (`TerminationSignal`) inside a flow run."""
    external = getattr(sys.modules.get("prefect.exceptions"), "ExternalSignal", None)
    return isinstance(exc, KeyboardInterrupt) or (external is not None and isinstance(exc, external))


def interrupt_signal(exc: BaseException) -> int:
    """The signal behind an interrupt: SIGTERM for `Stopped` or Prefect's bridge, else SIGINT."""
    for link in _chain(exc):
        if isinstance(link, Stopped):
            return link.signum
        if isinstance(getattr(link, "signal", None), int) and is_interrupt(link):
            return int(link.signal)  # type: ignore[attr-defined]
    return signal.SIGINT


def loop_run_of(exc: BaseException) -> str | None:
    """The loop run an interrupt stopped (`tasks.common.stages.aborting` marks the exception), if one was open."""
    return next((str(link.loop_run_id) for link in _chain(exc) if hasattr(link, "loop_run_id")), None)


def interrupted(prog: str, exc: BaseException, what: str) -> int:
    """An interrupt in one line, no traceback; exit 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    signum = interrupt_signal(exc)
    print(f"{prog}: interrupted ({SIGNALS.get(signum, f'signal {signum}')}): {what}", file=sys.stderr)
    return 128 + signum


def stopped_loop(exc: BaseException) -> str:
    """What an interrupted loop command left behind, for its one line."""
    run = loop_run_of(exc)
    if run is None:
        return "stopped before a loop run was opened; nothing recorded"
    return f"loop run {run} marked KILLED in MLflow; nothing registered"
