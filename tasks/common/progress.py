"""Progress for a person: one line per candidate (and per long phase), said in fragments as the loop goes.

    [3/8] #2 prune:0.3 from #1  training… 12.3 s  measuring… 8.1 s  miss: inference_energy_vs_baseline 1.56x > 0.75x

The energy loop's lines are said by `tasks/energy_loop/progress.py`; the cooling loop's (`[2/3] #1 retrain 16-8
training… 41.2 s  evaluating… 6.3 s  PASS`) by its attempt, from `numbered`, `say` and `Ticker`.

Each fragment is an INFO record on the run's logger, so Prefect's logs keep it as a sentence; the
CLI's console (`flows/console.py`) joins the fragments of a line and shows no other INFO record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

FIELD = "progress"  # the LogRecord attribute that carries a Fragment
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fragment:
    line: str  # the line's opening words, which name it: "[3/8] #2 prune:0.3 from #1"
    text: str  # what this moment adds: "training…", "12.3 s  measuring…", "PASS"
    end: bool = False  # the line is complete


def say(line: str, text: str, end: bool = False) -> None:
    """One fragment, on the run's logger inside a flow or task run (so Prefect's logs keep it), else on this
    module's."""
    from tasks.common.stages import run_logger

    logger = run_logger() or log
    logger.info("%s  %s", line, text, extra={FIELD: Fragment(line, text, end)})


@contextmanager
def phase(line: str, doing: str) -> Iterator[None]:
    """`line  doing… 12.3 s`: a stretch of the loop with no candidate to show."""
    say(line, f"{doing}…")
    started = time.perf_counter()
    yield
    say(line, f"{time.perf_counter() - started:.1f} s", end=True)


class Ticker:
    """A sign of life in a long stretch (a DQN's episodes): `text` is said once the stretch has run
    `first_s`, then only once it has run twice as long as at the last fragment, so an hour adds about
    seven fragments to its line, never one per step."""

    def __init__(self, line: str, first_s: float = 30.0) -> None:
        self.line = line
        self.started = time.perf_counter()
        self.next_s = first_s

    def __call__(self, text: str) -> None:
        elapsed_s = time.perf_counter() - self.started
        if elapsed_s >= self.next_s:
            say(self.line, text)
            self.next_s = 2 * elapsed_s


def numbered(index: int, total: int, label: str, parent: int | None = None, used: int | None = None) -> str:
    """`[3/8] #2 prune:0.3 from #1`: a line's opening words, its place in the loop's budget (`used` iterations before
    it, by default `index`) and what it was made from."""
    origin = f" from #{parent}" if parent is not None else ""
    return f"[{(index if used is None else used) + 1}/{total}] #{index} {label}{origin}"
