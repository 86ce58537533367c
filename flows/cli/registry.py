"""The registry commands: `promote` (move the champion alias to a version whose gates passed), `status` (the
champion and the best passing challenger with their figures) and `webhook serve|register` (the champion guard)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from flows.cli.common import EXIT_BAD_INPUT, EXIT_NOT_PASSED, bad_input
from registry import keys
from tasks.energy_loop.keys import PAYBACK


def add_parsers(sub: Any) -> None:
    promote = sub.add_parser("promote", help="move the champion alias to a version whose recorded gates passed")
    promote.add_argument("model", help="registered model name")
    promote.add_argument("version", help="model version number")
    promote.add_argument("--force", action="store_true", help="promote even if its gates did not pass (needs --reason)")
    promote.add_argument("--reason", default="", help="why, written to the version's tags (required with --force)")
    promote.set_defaults(handler=_promote)
    show = sub.add_parser("status", help="print the champion and the best passing challenger with their energy figures")
    show.add_argument("model", help="registered model name")
    show.set_defaults(handler=_status)
    _webhook_parsers(
        sub.add_parser(
            "webhook", help="guard the champion alias: the receiver of MLflow registry webhooks, and its registration"
        )
    )


def _webhook_parsers(hook: argparse.ArgumentParser) -> None:
    from flows.webhook import PATH, SECRET_ENV, WEBHOOK_NAME

    sub = hook.add_subparsers(dest="webhook_command", required=True)
    serve = sub.add_parser("serve", help=f"run the receiver (FastAPI; secret from {SECRET_ENV})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.set_defaults(handler=_webhook_serve)
    register = sub.add_parser(
        "register", help=f"create or update the alias webhook on the MLflow server (secret from {SECRET_ENV})"
    )
    register.add_argument(
        "--url", required=True, help=f"the receiver as the MLflow server reaches it, e.g. http://127.0.0.1:8765{PATH}"
    )
    register.add_argument(
        "--name", default=WEBHOOK_NAME, help=f"webhook name; an existing one is updated (default {WEBHOOK_NAME})"
    )
    register.add_argument("--no-test", dest="test", action="store_false", help="skip the signed test delivery")
    register.set_defaults(handler=_webhook_register)


def _webhook_serve(args: argparse.Namespace) -> int:
    from flows.webhook import check_port, read_secret, serve

    try:
        secret, port = read_secret(), check_port(args.port)
    except ValueError as exc:
        return bad_input(args.prog, exc)
    return serve(secret, args.host, port)


def _webhook_register(args: argparse.Namespace) -> int:
    from flows.webhook import check_registration, read_secret, register

    try:
        secret = read_secret()
        check_registration(args.url)
    except ValueError as exc:
        return bad_input(args.prog, exc)
    return register(secret, args.url, args.name, args.test)


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from registry.core import PromotionRefused, promote

    if not args.version.isdigit():
        print(f"energy-loop: error: version = {args.version!r}: expected a version number such as 3", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(promote(args.model, args.version, force=args.force, reason=args.reason, user=os.environ.get("USER", "")))
    except PromotionRefused as exc:
        print(f"energy-loop: refused: {exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    except ValueError as exc:
        return bad_input("energy-loop", exc)
    except MlflowException as exc:
        print(
            f"energy-loop: error: model = {args.model!r} version = {args.version!r}: {str(exc).splitlines()[0]}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return 0


FIGURES = (
    keys.ACCURACY,
    keys.RMSE,
    keys.INFERENCE_ENERGY_J_PER_1K,
    keys.OBSERVED_INFERENCE_ENERGY_J_PER_1K,
    keys.TRAIN_ENERGY_J,
    keys.LATENCY_MS_PER_BATCH,
    keys.ENERGY_SOURCE,
    keys.ENERGY_ESTIMATED,
    keys.COMPRESSION_STEPS,
    PAYBACK,
)


def _status(args: argparse.Namespace) -> int:
    from registry.core import status

    result = status(args.model)
    if result["champion"] is None and result["challenger"] is None:
        print(
            f"energy-loop: error: model = {args.model!r}: no registered versions with recorded gates", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    for role in ("champion", "challenger"):
        entry = result[role]
        if entry is None:
            print(f"{role:10s} none")
            continue
        figures = ", ".join(f"{k}={entry[k]}" for k in FIGURES if k in entry)
        print(f"{role:10s} version {entry['version']}: {figures}")
        served = result["served"][role]
        if served is not None:
            print(f"{'':10s} {_served_line(*served)}")
        for key, what in ((keys.PRODUCTION_LAST_BREACH, "last breach"), (keys.PRODUCTION_LAST_RECOVERY, "recovered")):
            if key in entry:
                print(f"{'':10s} {what}: {_production_event_line(entry[key])}")
    return 0


def _production_event_line(tag: str) -> str:
    """A production event tag (JSON) as one line: when, and what missed its limit."""
    import json

    try:
        record = json.loads(tag)
        misses = "; ".join(f"{m['figure']} {m['value']:.4g} over limit {m['limit']:.4g}" for m in record["misses"])
        return f"{record['at']}" + (f": {misses}" if misses else "") + f" (rows by batch size {record['batch_mix']})"
    except (ValueError, KeyError, TypeError):
        return tag[:300]


def _served_line(seen: Any, loop_at_mix: float | None, loop_headline: float | None) -> str:
    """What `serve` observed, next to the loop's own figures: one line."""
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(seen.first_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    mix = ", ".join(f"<={b}: {n}" for b, n in seen.rows_by_batch.items()) or "none"
    parts = [f"served: {seen.rows} rows in {seen.requests} requests ({seen.errors} failed), {seen.windows} windows "
             f"since {since}; rows by batch size {mix}"]  # fmt: skip
    if seen.energy_j_per_1k is not None:
        sem = f" ± {seen.energy_j_per_1k_sem:.3g}" if seen.energy_j_per_1k_sem is not None else ""
        loop = f"; the loop's at this mix {loop_at_mix:.4g}" if loop_at_mix is not None else ""
        loop += f", at its own batch size {loop_headline:.4g}" if loop_headline is not None else ""
        parts.append(f"observed {seen.energy_j_per_1k:.4g}{sem} J/1k{loop}")
    if seen.latency_p95_ms is not None:
        parts.append(f"latency p95 {seen.latency_p95_ms:.3g} ms (last window)")
    if seen.quality is not None:
        parts.append(f"quality {seen.quality:.4g} over {seen.labelled_rows} labelled rows")
    return " · ".join(parts)
