"""The skeleton every loop shares: open the parent run, run the pipeline's rungs, close or abort.

    loop_run_id = open_loop(experiment, run_name, params, tags)
    with aborting(loop_run_id):            # any exception: the run is marked FAILED/KILLED, nothing registered
        ... plan, train, measure, log ...  # the pipeline's own stages
        return close_loop(...)             # registry close (artifacts -> checked versions -> champion under the lock)
                                           # then `outcome(...)`: the record the CLI prints

Final states and checks are `thresholds.core`'s; the closing sequence is `registry.core.close_loop`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.exceptions import TerminationSignal
from prefect.states import Failed
from pydantic import BaseModel

from registry import core
from registry.core import LoopRecord
from tasks.meters.select import close_shared_meters
from thresholds.core import Final
from thresholds.errors import INVALID_INPUT, InputError


class LoopOutcome(BaseModel):
    """What a finished loop hands back (either pipeline): its verdict, the champion and the table."""

    state: str
    reason: str
    chosen: int | None
    model_name: str
    loop_run_id: str
    champion_version: str | None
    champion_moved: bool
    champion_reason: str
    versions: dict[int, str]
    table_md: str
    history: list[Any]
    unreachable: str | None = None  # the target the loop showed no step left could reach (FAILED)
    loop_energy: dict[str, float] = {}  # where the loop's own energy and wall time went (energy loop: ledger.py)


def invalid_input(exc: InputError) -> State[Any]:
    """How a flow run ends on bad input, before any run is opened: Failed, with the one line as its message
    (no traceback in any log); a Python caller of the flow gets the InputError raised."""
    return Failed(name=INVALID_INPUT, message=str(exc), data=exc)


class InputErrorsInOneLine(logging.Filter):
    """On the flow-run logger: a record carrying an InputError keeps its line, not its traceback.

    Running a deployment's flow run, Prefect's engine re-raises a Failed run's exception at its top
    level and logs it with the traceback; for bad input the state's message already says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InputError):
            record.msg, record.args = f"{record.getMessage()}: {exc}", ()
            record.exc_info, record.exc_text = None, None
        return True


INPUT_ERRORS_IN_ONE_LINE = InputErrorsInOneLine()  # one instance: adding it again is a no-op


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger] | None:
    """The logger of the flow or task run this code runs in (Prefect keeps its records), or None outside one."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return None


@task(cache_policy=NO_CACHE)
def open_loop(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    return core.open_loop(experiment, run_name, params, tags)


@task(cache_policy=NO_CACHE)
def abort_loop(loop_run_id: str, reason: str, status: str) -> None:
    """Best effort: when the tracking server itself is what failed, the next loop closes the run as orphaned."""
    try:
        core.abort_loop(loop_run_id, reason, status)
    except Exception as exc:
        get_run_logger().warning(
            "could not mark loop run %s %s (%s); the next loop will close it as orphaned", loop_run_id, status, exc
        )


@contextmanager
def aborting(loop_run_id: str) -> Iterator[None]:
    """Any exception inside marks the loop run FAILED (KILLED on Ctrl-C or SIGTERM, which Prefect's flow engine
    raises as its TerminationSignal) and goes on, naming the run on the exception (the CLI's one line says it);
    meters are closed either way."""
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt | TerminationSignal) else "FAILED"
        abort_loop(loop_run_id, f"{type(exc).__name__}: {exc}", status)
        exc.loop_run_id = loop_run_id  # type: ignore[attr-defined]
        raise
    finally:
        close_shared_meters()


def outcome(
    title: str,
    artifact_key: str,
    final: Final,
    record: LoopRecord,
    model_name: str,
    loop_run_id: str,
    table: str,
    history: list[Any],
) -> LoopOutcome:
    """The loop's record: the champion sentence, a Prefect markdown artifact, and the outcome the CLI prints."""
    champion = (
        f"champion moved to version {record.champion_version}: {record.champion_reason}"
        if record.champion_moved
        else (
            f"champion unchanged ({record.champion_version or 'none'})"
            f"{': ' + record.champion_reason if record.champion_reason else ''}"
        )
    )
    key = "".join(ch if ch.isalnum() else "-" for ch in artifact_key.lower())
    create_markdown_artifact(
        markdown=f"# {title}: {final.state.value}\n\n{final.reason}\n\n{champion}\n\n{table}\n",
        key=key,
        description=f"{final.state.value}: {final.reason}"[:500],
    )
    return LoopOutcome(
        state=final.state.value,
        reason=final.reason,
        chosen=final.chosen,
        model_name=model_name,
        loop_run_id=loop_run_id,
        champion_version=record.champion_version,
        champion_moved=record.champion_moved,
        champion_reason=champion,
        versions=record.versions,
        table_md=table,
        history=history,
        unreachable=final.unreachable,
    )
