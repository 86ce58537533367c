"""Guarded promotion: what to do when `champion` is set on a version, as pure functions over plain data.

The loop records on every version whether its gates passed (`gates_passed`) and the promotion mode of
its scenario (`promotion_mode`: `warn` or `enforce`). When someone moves `champion` by hand (the MLflow
UI), the webhook receiver reads those tags and the statuses of the runs behind the version, and this
module decides: leave a gated promotion alone; otherwise record it and, under `enforce`, move the alias
back to the last gated champion (or remove it when there is none: no champion beats an ungated one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from thresholds.keys import FORCED_PROMOTION_REASON, GATES_PASSED, PROMOTION_MODE, VERDICT

CHAMPION = "champion"
PromotionMode = Literal["warn", "enforce"]
# `energy-loop promote --force --reason ...` is the one deliberate way around the gates; the receiver
# honours its record (tags `forced_promotion_reason`, `promoted_at`) only this long after it was written.
FORCED_PROMOTION_WINDOW_S = 300.0

Action = Literal["ignore", "gated", "warn", "forced", "revert", "remove", "superseded"]


@dataclass(frozen=True)
class Guard:
    """The receiver's decision for one alias-set event."""

    action: Action
    reason: str
    restore_version: str | None = None  # for `revert`: the version `champion` goes back to


def gate_problems(tags: dict[str, str], run_status: str, loop_status: str | None) -> list[str]:
    """Why a version may not be champion (empty: it may): recorded gates, its run, the loop that registered it."""
    problems = []
    if tags.get(GATES_PASSED) != "true":
        problems.append(f"its recorded gates did not pass ({tags.get(VERDICT, 'no verdict recorded')})")
    if run_status != "FINISHED":
        problems.append(f"its run is {run_status}, not FINISHED")
    if loop_status is not None and loop_status != "FINISHED":
        problems.append(f"the loop that registered it is {loop_status}, not FINISHED")
    return problems


def promotion_mode(*version_tags: dict[str, str]) -> PromotionMode:
    """`enforce` when the promoted version's scenario or the displaced gated champion's scenario says so."""
    return "enforce" if any(tags.get(PROMOTION_MODE) == "enforce" for tags in version_tags) else "warn"


def forced_recently(tags: dict[str, str], now_s: float, promoted_at_s: float | None) -> bool:
    """The version was just promoted with `energy-loop promote --force --reason` (a reason is on record)."""
    if not tags.get(FORCED_PROMOTION_REASON) or promoted_at_s is None:
        return False
    return 0 <= now_s - promoted_at_s <= FORCED_PROMOTION_WINDOW_S


def guard_champion(
    alias: str, version: str, problems: list[str], mode: PromotionMode, last_gated: str | None, forced: bool
) -> Guard:
    """The decision for `alias` set on `version` (see the module docstring)."""
    if alias != CHAMPION:
        return Guard("ignore", f"alias {alias!r} is not guarded (only {CHAMPION!r} is)")
    if not problems:
        return Guard("gated", f"version {version} passed its gates: left alone")
    why = _ungated(version, problems)
    if forced:
        return Guard("forced", f"{why}; forced with `energy-loop promote --force` and a reason on record: left alone")
    if mode == "warn":
        return Guard("warn", f"{why}; promotion mode warn: left in place")
    if last_gated is not None and last_gated != version:
        return Guard(
            "revert",
            f"{why}; promotion mode enforce: moved back to version {last_gated}, the last gated champion",
            last_gated,
        )
    return Guard("remove", f"{why}; promotion mode enforce and no earlier gated champion: alias removed")


def superseded(version: str, problems: list[str], current: str | None) -> Guard:
    """By the time the alias would move back, `champion` had already moved on (or was removed): leave it."""
    now = "removed" if current is None else f"on version {current}"
    return Guard("superseded", f"{_ungated(version, problems)}; {CHAMPION} is already {now}: alias left as is")


def _ungated(version: str, problems: list[str]) -> str:
    return f"version {version} became {CHAMPION} without passing its gates: {'; '.join(problems)}"
