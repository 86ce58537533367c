"""Progress for a person: one line per candidate (and per long phase), said in fragments as the loop goes.

    [3/8] #2 prune:0.3 from #1  training… 12.3 s  measuring… 8.1 s  miss: inference_energy_vs_baseline 1.56x > 0.75x

The energy loop's lines are said here; the cooling loop's (`[2/3] #1 retrain 16-8  training… 41.2 s
evaluating… 6.3 s  PASS`) by its attempt, from `numbered`, `say` and `Ticker`.

Each fragment is an INFO record on the run's logger, so Prefect's logs keep it as a sentence; the
CLI's console (`flows/console.py`) joins the fragments of a line and shows no other INFO record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tasks.report import gate_verdict
from thresholds.energy.policy import CandidateResult, Next, Step, iterations_used
from thresholds.energy.schema import Scenario

FIELD = "progress"  # the LogRecord attribute that carries a Fragment
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fragment:
    line: str  # the line's opening words, which name it: "[3/8] #2 prune:0.3 from #1"
    text: str  # what this moment adds: "training…", "12.3 s  measuring…", "PASS"
    end: bool = False  # the line is complete


def say(line: str, text: str, end: bool = False) -> None:
    """One fragment, on the run's logger inside a flow or task run (so Prefect's logs keep it), else on this module's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = log
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


def _line(scenario: Scenario, history: list[CandidateResult], index: int, step: Step) -> str:
    """Numbered by the iterations of the budget used before it (a rung refused as not applicable uses none)."""
    return numbered(index, scenario.budget.max_iterations, step.label, step.parent, used=iterations_used(history[:index]))


def training(scenario: Scenario, history: list[CandidateResult], rung: list[Next]) -> None:
    """A line for each candidate of the rung, numbered after the history."""
    for i, n in enumerate(rung):
        say(_line(scenario, history, len(history) + i, n.step), "training…")


def trained(scenario: Scenario, history: list[CandidateResult], produced: CandidateResult) -> None:
    """How long producing it took (training, or an export), and, unless it was rejected, that it is measured now."""
    say(_line(scenario, history, produced.index, produced.step), f"{produced.wall_s:.1f} s" + ("  measuring…" if produced.ok else ""))


def judged(scenario: Scenario, history: list[CandidateResult], produced: CandidateResult) -> None:
    """How long measuring took and the gates' verdict: the end of the candidate's line."""
    c = history[-1]
    measured = f"{c.wall_s - produced.wall_s:.1f} s  " if produced.ok else ""
    verdict = gate_verdict(scenario, c, history[0], inference_figure=True) + ("  (not applicable: no iteration used)" if c.not_applicable else "")
    say(_line(scenario, history, c.index, c.step), measured + verdict, end=True)
