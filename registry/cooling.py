"""What the cooling loop writes to MLflow: its parent run, one nested run per attempt, and the
`cooling-agent` versions, closed through the registry core (`registry/core.py`).

Same rules as the energy loop: nothing is registered before the gates are decided, every agent file
is checked in the store before the first version, a crashed or interrupted loop is marked
FAILED/KILLED and registers nothing, and the alias moves last, only to a version whose gates passed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from registry import core, keys, store
from registry.core import LoopRecord, NestedRun, RunFiles, VersionSpec, flatten, log_nested_run, version_figures
from thresholds.cooling.policy import Attempt, SavingRecord, beats_champion
from thresholds.core import Final

EXPERIMENT = "cooling-loop"


def open_loop(run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """The parent run (orphans of killed loops in this experiment are closed first)."""
    return core.open_loop(EXPERIMENT, run_name, params, tags)


def _figures(a: Attempt, extra: dict[str, float]) -> dict[str, float]:
    metrics: dict[str, float | int | None] = {
        keys.ENERGY_SAVED_PCT: a.energy_saved_pct,
        keys.MINUTES_OUTSIDE_BAND: a.minutes_outside_band,
        keys.BUILTIN_MINUTES_OUTSIDE_BAND: a.builtin_minutes_outside_band,
        keys.SAVED_VS_BEST_CONTROLLER_PCT: a.saved_vs_best_controller_pct,
        keys.BEST_CONTROLLER_MINUTES_OUTSIDE_BAND: a.best_controller_minutes_outside_band,
        keys.VS_MPC_PCT: a.vs_mpc_pct,
        keys.TRAIN_ENERGY_J: a.train_energy_j,
        keys.SPENT_ENERGY_J: a.spent_energy_j,
        keys.INFERENCE_ENERGY_J_PER_YEAR: a.inference_energy_j_per_year,
        keys.EPISODES_RUN: a.episodes_run,
        **extra,
    }
    return {k: float(v) for k, v in metrics.items() if v is not None}


def log_attempt(
    loop_run_id: str,
    a: Attempt,
    verdict: str,
    metrics: dict[str, float],
    series: dict[str, list[float]],
    tags: dict[str, str],
) -> str:
    """Nested run: settings, figures, per-episode curves, the comparison table and the agent files."""
    params = {
        keys.KIND: a.kind.value,
        keys.HIDDEN_UNITS: f"{a.hidden_units[0]}-{a.hidden_units[1]}",
        keys.MAX_EPISODES: a.max_episodes,
        keys.EPSILON: a.epsilon,
        keys.PARENT: a.parent,
    }
    all_tags = {**tags, keys.VERDICT: verdict[:4000]}
    if a.failed_reason:
        all_tags[keys.FAILED_REASON] = a.failed_reason[:4000]
    run_name = f"#{a.index} {a.kind.value} {a.hidden_units[0]}-{a.hidden_units[1]}"
    return log_nested_run(
        loop_run_id,
        NestedRun(run_name, flatten(params), _figures(a, metrics), series, all_tags),
        RunFiles(a.agent_dir, "agent"),
        not a.failed_reason,
    )


def version_tags(
    a: Attempt, common: dict[str, str], passed: bool, verdict: str, loop_run_id: str, final: Final
) -> dict[str, str]:
    tags = {k: f"{v:.6g}" for k, v in _figures(a, {}).items()}
    tags.update(
        {
            **common,
            keys.HIDDEN_UNITS: f"{a.hidden_units[0]}-{a.hidden_units[1]}",
            keys.ENERGY_SOURCE: a.energy_source,
            keys.ENERGY_ESTIMATED: str(a.energy_estimated).lower(),
            keys.ATTEMPT: str(a.index),
            keys.KIND: a.kind.value,
            keys.GATES_PASSED: str(passed).lower(),
            keys.VERDICT: verdict[:4000],
            keys.LOOP_RUN_ID: loop_run_id,
            keys.LOOP_STATE_AT_CLOSE: final.state.value,
            keys.WEEK_PLOT: f"runs:/{loop_run_id}/week.png",
            keys.MONTHLY_PLOT: f"runs:/{loop_run_id}/monthly_energy.png",
        }
    )
    return tags


def saving_record(mc: Any, version: Any | None) -> SavingRecord | None:
    """What the cooling champion rule compares, from a version's run metrics (its tags for one registered without
    them); None when there is no champion."""
    if version is None:
        return None
    found = version_figures(mc, version, [keys.ENERGY_SAVED_PCT, keys.SAVED_VS_BEST_CONTROLLER_PCT])
    return SavingRecord(
        environment=version.tags.get(keys.ENVIRONMENT),
        energy_saved_pct=found.get(keys.ENERGY_SAVED_PCT),
        saved_vs_best_controller_pct=found.get(keys.SAVED_VS_BEST_CONTROLLER_PCT),
    )


class LoopReport(NamedTuple):
    """The cooling loop's report: per attempt its verdict and whether it met every gate; the attempts table
    (markdown), the plots, the summary written as summary.json, and whether the scenario's gates judge the agent
    against the best tuned controller (then so does the champion rule)."""

    verdicts: list[str]
    gates_passed: list[bool]
    table_md: str
    artifacts: list[Path]
    summary: dict[str, Any]
    vs_best_controller: bool = False


def close_loop(
    loop_run_id: str,
    model_name: str,
    final: Final,
    history: list[Attempt],
    report: LoopReport,
    common_tags: dict[str, str],
) -> LoopRecord:
    """Register each attempt that produced an agent, end the run, then move `champion` if earned."""
    verdicts, gates_passed, table_md, artifacts, summary, vs_best_controller = report
    versions = [
        VersionSpec(
            index=a.index,
            run_id=a.run_id,
            model_dir=a.agent_dir,
            artifact_path="agent",
            tags=version_tags(a, common_tags, ok, verdict, loop_run_id, final),
            figures=_figures(a, {}),
        )
        for a, verdict, ok in zip(history, verdicts, gates_passed, strict=True)
        if a.run_id and a.agent_dir and not a.failed_reason
    ]
    chosen = next((v for v in versions if v.index == final.chosen), None)
    candidate = SavingRecord(
        environment=None if chosen is None else chosen.tags.get(keys.ENVIRONMENT),
        energy_saved_pct=None if chosen is None else chosen.figures.get(keys.ENERGY_SAVED_PCT),
        saved_vs_best_controller_pct=None if chosen is None else chosen.figures.get(keys.SAVED_VS_BEST_CONTROLLER_PCT),
        must_beat_best_controller=vs_best_controller,
    )
    texts = {
        "attempts.md": f"# Cooling loop: {final.state.value}\n\n{final.reason}\n\n{table_md}\n",
        "summary.json": json.dumps(summary, indent=2, default=str),
    }
    description = "Server-room cooling agents (DQN) produced by the cooling loop."
    return core.close_loop(
        loop_run_id,
        model_name,
        description,
        final,
        texts,
        artifacts,
        versions,
        lambda mc, champion: beats_champion(candidate, saving_record(mc, champion)),
    )


def log_benchmark(params: dict[str, str], artifacts: list[Path]) -> str:
    return store.log_benchmark("cooling-benchmark", params, artifacts)
