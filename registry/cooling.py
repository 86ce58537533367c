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

from registry import core, store
from registry.core import LoopRecord, NestedRun, RunFiles, VersionSpec, flatten, log_nested_run
from thresholds.cooling.policy import Attempt, beats_champion
from thresholds.core import Final

EXPERIMENT = "cooling-loop"


def open_loop(run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """The parent run (orphans of killed loops in this experiment are closed first)."""
    return core.open_loop(EXPERIMENT, run_name, params, tags)


def _figures(a: Attempt, extra: dict[str, float]) -> dict[str, float]:
    values: dict[str, float | int | None] = {
        "energy_saved_pct": a.energy_saved_pct,
        "minutes_outside_band": a.minutes_outside_band,
        "builtin_minutes_outside_band": a.builtin_minutes_outside_band,
        "saved_vs_best_controller_pct": a.saved_vs_best_controller_pct,
        "best_controller_minutes_outside_band": a.best_controller_minutes_outside_band,
        "vs_mpc_pct": a.vs_mpc_pct,
        "train_energy_j": a.train_energy_j,
        "spent_energy_j": a.spent_energy_j,
        "inference_energy_j_per_year": a.inference_energy_j_per_year,
        "episodes_run": a.episodes_run,
        **extra,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


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
        "kind": a.kind.value,
        "hidden_units": f"{a.hidden_units[0]}-{a.hidden_units[1]}",
        "max_episodes": a.max_episodes,
        "epsilon": a.epsilon,
        "parent": a.parent,
    }
    all_tags = {**tags, "verdict": verdict[:4000]}
    if a.failed_reason:
        all_tags["failed_reason"] = a.failed_reason[:4000]
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
            "hidden_units": f"{a.hidden_units[0]}-{a.hidden_units[1]}",
            "energy_source": a.energy_source,
            "energy_estimated": str(a.energy_estimated).lower(),
            "attempt": str(a.index),
            "kind": a.kind.value,
            "gates_passed": str(passed).lower(),
            "verdict": verdict[:4000],
            "loop_run_id": loop_run_id,
            "loop_state": final.state.value,
            "week_plot": f"runs:/{loop_run_id}/week.png",
            "monthly_plot": f"runs:/{loop_run_id}/monthly_energy.png",
        }
    )
    return tags


class LoopReport(NamedTuple):
    """The cooling loop's report: per attempt its verdict and whether it met every gate; the attempts table
    (markdown), the plots and the summary written as summary.json."""

    verdicts: list[str]
    gates_passed: list[bool]
    table_md: str
    artifacts: list[Path]
    summary: dict[str, Any]


def close_loop(
    loop_run_id: str,
    model_name: str,
    final: Final,
    history: list[Attempt],
    report: LoopReport,
    common_tags: dict[str, str],
) -> LoopRecord:
    """Register each attempt that produced an agent, end the run, then move `champion` if earned."""
    verdicts, gates_passed, table_md, artifacts, summary = report
    versions = [
        VersionSpec(
            index=a.index,
            run_id=a.run_id,
            model_dir=a.agent_dir,
            artifact_path="agent",
            tags=version_tags(a, common_tags, ok, verdict, loop_run_id, final),
        )
        for a, verdict, ok in zip(history, verdicts, gates_passed, strict=True)
        if a.run_id and a.agent_dir and not a.failed_reason
    ]
    chosen = next((v.tags for v in versions if v.index == final.chosen), {})
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
        lambda champion: beats_champion(chosen, champion),
    )


def log_benchmark(params: dict[str, str], artifacts: list[Path]) -> str:
    return store.log_benchmark("cooling-benchmark", params, artifacts)
