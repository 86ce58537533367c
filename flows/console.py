"""The terminal during a loop command: what a person needs, not the orchestrator's INFO lines.

Shown: the progress lines (`tasks/common/progress.py`: one per candidate or attempt, on stdout beside the table and
the verdict), and the warnings and errors of this project's own code (stderr, one line each). Not
shown: Prefect's engine lines (server banner, "Finished in state ..."), MLflow's store set-up,
CodeCarbon, torch and every other library's INFO and warnings. They are not lost: Prefect's run
loggers keep sending to Prefect's logs (their API handler is theirs, not this one), and `--verbose`
shows every record on stderr, timestamped, as it comes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.common.progress import FIELD, Fragment

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("flows", "tasks", "registry", "thresholds", "benchmarks", "examples")
DETAIL = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ALWAYS_QUIET = ("httpx", "numba")  # a line per HTTP request or JIT pass, even under --verbose
# Libraries whose loggers print through their own handlers (not the root's), so only their level quiets
# them (CodeCarbon's is set by its meter, from CODECARBON_LOG_LEVEL).
OWN_HANDLERS = ("mlflow", "alembic", "torch")
# Inherited by the processes a loop starts (Dask workers, the ephemeral Prefect server): their console lines too.
QUIET_ENV = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING"}
VERBOSE_ENV = {"CODECARBON_LOG_LEVEL": "warning"}  # its INFO is a line per reading: its warnings say what it assumed


def ours(record: logging.LogRecord) -> bool:
    """Whether the record was logged by this project's code (a file of its packages, not of an installed library)."""
    path = Path(record.pathname)
    if "site-packages" in path.parts or not path.is_absolute():
        return False
    try:
        return path.relative_to(ROOT).parts[0] in OUR_PACKAGES
    except ValueError:
        return False


def for_a_person(record: logging.LogRecord) -> bool:
    """Without --verbose: this project's warnings and errors (a failed run reaches the command as its
    exception, said there in one line, so the engine's own error records add nothing but a traceback)."""
    return record.levelno >= logging.WARNING and ours(record)


class Console(logging.Handler):
    """Progress fragments joined into lines on stdout; the records a person needs, one line each, on stderr."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.NOTSET)
        self.verbose = verbose
        self.open_line: str | None = None  # the progress line still being written
        self.setFormatter(logging.Formatter(DETAIL))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fragment = getattr(record, FIELD, None)
            if isinstance(fragment, Fragment) and not self.verbose:
                self._progress(fragment)
            elif self.verbose:
                self.end_line()
                sys.stderr.write(self.format(record) + "\n")
            elif for_a_person(record):
                self.end_line()
                sys.stderr.write(
                    f"{record.levelname.lower()}: {record.getMessage()}\n"
                )  # no traceback: --verbose has it
        except Exception:
            self.handleError(record)

    def _progress(self, fragment: Fragment) -> None:
        out = sys.stdout  # looked up each time: a test's captured stream, or the terminal
        if self.open_line == fragment.line:
            out.write(f" {fragment.text}")
        else:
            self.end_line()
            out.write(f"{fragment.line}  {fragment.text}")
        self.open_line = None if fragment.end else fragment.line
        out.write("\n" if fragment.end else "")
        out.flush()

    def end_line(self) -> None:
        """Finish a progress line cut short (a warning, an error, the loop's end), so what follows starts a line."""
        if self.open_line is not None:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open_line = None


def end_line() -> None:
    """Finish the open progress line, if a console is installed (before the command prints its own lines)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, Console):
            handler.end_line()


@contextmanager
def session(verbose: bool) -> Iterator[Console]:
    """The console for one loop command; the logging set-up and environment before it come back after."""
    import mlflow  # noqa: F401  (MLflow and torch set their loggers up at import: first, so the levels below stick)
    import torch  # noqa: F401

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = [*ALWAYS_QUIET, *(() if verbose else OWN_HANDLERS)]
    saved_levels = {name: logging.getLogger(name).level for name in quiet}
    env = VERBOSE_ENV if verbose else QUIET_ENV
    saved_env = {key: os.environ.get(key) for key in env}
    console = Console(verbose)
    root.handlers = [console]
    root.setLevel(logging.INFO)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING if name in ALWAYS_QUIET else logging.ERROR)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    logging.captureWarnings(True)  # library FutureWarnings and the like become records: shown with --verbose only
    try:
        yield console
    finally:
        console.end_line()
        logging.captureWarnings(False)
        root.handlers, root.level = saved_handlers, saved_level
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        for key, before in saved_env.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
