"""The champion guard's decisions: pure functions over a version's tags and the statuses of its runs."""

from __future__ import annotations

from typing import Any

import pytest

from thresholds.promotion import (
    FORCED_PROMOTION_WINDOW_S,
    forced_recently,
    gate_problems,
    guard_champion,
    promotion_mode,
    superseded,
)

PROBLEMS = ["its recorded gates did not pass (miss: accuracy)"]


@pytest.mark.parametrize(
    ("alias", "problems", "mode", "last_gated", "forced", "action", "restore"),
    [
        ("staging", PROBLEMS, "enforce", "1", False, "ignore", None),
        ("champion", [], "enforce", "1", False, "gated", None),
        ("champion", PROBLEMS, "warn", "1", False, "warn", None),
        ("champion", PROBLEMS, "enforce", "1", False, "revert", "1"),
        ("champion", PROBLEMS, "enforce", None, False, "remove", None),
        (
            "champion",
            PROBLEMS,
            "enforce",
            "5",
            False,
            "remove",
            None,
        ),  # the recorded gated champion is this very version
        ("champion", PROBLEMS, "enforce", "1", True, "forced", None),
    ],
)
def test_guard_decisions(
    alias: str, problems: list[str], mode: Any, last_gated: str | None, forced: bool, action: str, restore: str | None
) -> None:
    guard = guard_champion(alias, "5", problems, mode, last_gated, forced)
    assert (guard.action, guard.restore_version) == (action, restore)
    if action not in ("ignore", "gated"):
        assert "version 5" in guard.reason and "miss: accuracy" in guard.reason


def test_gate_problems_mode_and_forced_window() -> None:
    assert gate_problems({"gates_passed": "true"}, "FINISHED", "FINISHED") == []
    assert gate_problems({"gates_passed": "true"}, "FINISHED", None) == []
    assert len(gate_problems({"verdict": "miss"}, "FAILED", "KILLED")) == 3
    assert promotion_mode({"promotion_mode": "warn"}, {"promotion_mode": "enforce"}) == "enforce"
    assert promotion_mode({}, {}) == "warn"
    now = 1_000_000.0
    assert forced_recently({"forced_promotion_reason": "hotfix"}, now, now - 10)
    assert not forced_recently({"forced_promotion_reason": "hotfix"}, now, now - FORCED_PROMOTION_WINDOW_S - 1)
    assert not forced_recently({}, now, now - 10)
    assert (
        superseded("5", PROBLEMS, "7").action == "superseded" and "version 7" in superseded("5", PROBLEMS, "7").reason
    )
