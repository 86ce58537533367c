"""The parser of every command, and `main`: the logging a command needs, its one-line errors, and stopping."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from flows.cli import loops, predict, registry, serve, trigger
from flows.cli.common import EXIT_NOT_PASSED, interrupted, is_interrupt, stopping_on_signals


def build_parser(prog: str = "energy-loop") -> argparse.ArgumentParser:
    """Every command: a subparser and its handler (`set_defaults(handler=...)`), from the module that runs it."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a model, measure its energy, gate it against thresholds and escalate compression "
        "until it passes.",
    )
    parser.set_defaults(prog=prog, main=functools.partial(main, prog=prog))  # `trigger` re-enters it to run in process
    sub = parser.add_subparsers(dest="command", required=True)
    loops.add_parsers(sub)
    registry.add_parsers(sub)
    trigger.add_parsers(sub)
    loops.add_cooling_parsers(
        sub.add_parser("cooling", help="the cooling agent's pipeline (train, gate, register a DQN)")
    )
    predict.add_parsers(sub)
    serve.add_parsers(sub)
    return parser


def _logging(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The loop's console (progress, table, verdict; --verbose adds every log line), or plain INFO lines."""
    if getattr(args, "loop_console", False):
        from flows import console

        return console.session(args.verbose)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "codecarbon", "alembic", "mlflow.store.db.utils", "numba", "mlflow.pyfunc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return contextlib.nullcontext()


def main(argv: Sequence[str] | None = None, prog: str = "energy-loop") -> int:
    # Retry budget for a tracking server that goes away: MLflow's client retries connection errors
    # and 5xx with exponential backoff (never 4xx validation errors). ~1+2+4+8 s, then the command fails.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Before any Prefect server starts: it reads this.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = None
    with stopping_on_signals():  # Ctrl-C and SIGTERM: one line, exit 130 / 143 (the traceback with --verbose only)
        try:
            args = build_parser(prog).parse_args(argv)
            with _logging(args):
                return _handled(args)
        except BaseException as exc:
            if not is_interrupt(exc):
                raise
            if getattr(args, "verbose", False):  # where it was stopped, on request
                traceback.print_exc()
            what = getattr(args, "stopped", "stopped")
            return interrupted(prog, exc, what(exc) if callable(what) else what)


def _handled(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    try:
        return int(args.handler(args))
    except MlflowException as exc:
        # Unreachable or refusing tracking server (e.g. 401 without MLFLOW_TRACKING_USERNAME/PASSWORD): one line,
        # exit 1.
        first = str(exc).splitlines()[0][:300]
        print(
            f"{args.prog}: error: tracking server at {os.environ.get('MLFLOW_TRACKING_URI', 'sqlite:///mlflow.db')}: "
            f"{first}",
            file=sys.stderr,
        )
        return EXIT_NOT_PASSED
