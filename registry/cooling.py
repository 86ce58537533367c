"""Every MLflow call of the cooling pipeline: the loop's parent run, one nested run per attempt,
and, once the loop has reached a final state, the `cooling-agent` versions and the `champion` alias.

Same rules as the energy loop (registry/tracking.py, whose helpers this reuses): nothing is
registered before the gates are decided, a crashed or interrupted loop is marked FAILED/KILLED and
registers nothing, and the alias moves last, only to a version whose gates passed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from registry import tracking
from registry.tracking import _experiment_id, client, flatten
from tasks.cooling.policy import Attempt, Final, FinalState

EXPERIMENT = "cooling-loop"
CHAMPION = tracking.CHAMPION


def open_loop(run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """The parent run (orphans of killed loops in this experiment are closed first)."""
    return tracking.open_loop(EXPERIMENT, run_name, params, tags)


def _figures(a: Attempt, extra: dict[str, float]) -> dict[str, float]:
    values: dict[str, float | int | None] = {
        "energy_saved_pct": a.energy_saved_pct,
        "minutes_outside_band": a.minutes_outside_band,
        "builtin_minutes_outside_band": a.builtin_minutes_outside_band,
        "train_energy_j": a.train_energy_j,
        "spent_energy_j": a.spent_energy_j,
        "inference_energy_j_per_year": a.inference_energy_j_per_year,
        "episodes_run": a.episodes_run,
        **extra,
    }
    return {k: float(v) for k, v in values.items() if v is not None}


def log_attempt(loop_run_id: str, a: Attempt, verdict: str, metrics: dict[str, float], series: dict[str, list[float]], tags: dict[str, str]) -> str:
    """Nested run: settings, figures, per-episode curves, the comparison table and the agent files."""
    from mlflow.entities import Metric, Param, RunTag

    mc = client()
    parent = mc.get_run(loop_run_id)
    run = mc.create_run(
        parent.info.experiment_id, run_name=f"#{a.index} {a.kind.value} {a.hidden_units[0]}-{a.hidden_units[1]}", tags={"mlflow.parentRunId": loop_run_id}
    )
    run_id = str(run.info.run_id)
    params = {
        "kind": a.kind.value,
        "hidden_units": f"{a.hidden_units[0]}-{a.hidden_units[1]}",
        "max_episodes": a.max_episodes,
        "epsilon": a.epsilon,
        "parent": a.parent,
    }
    found = [Metric(k, v, 0, 0) for k, v in _figures(a, metrics).items()]
    for name, values in series.items():
        found += [Metric(name, float(v), 0, step) for step, v in enumerate(values, start=1)]
    all_tags = {**tags, "verdict": verdict[:4000]}
    if a.failed_reason:
        all_tags["failed_reason"] = a.failed_reason[:4000]
    mc.log_batch(run_id, metrics=found[:1000], params=[Param(k, str(v)) for k, v in flatten(params).items()], tags=[RunTag(k, v) for k, v in all_tags.items()])
    for start in range(1000, len(found), 1000):
        mc.log_batch(run_id, metrics=found[start : start + 1000])
    if a.agent_dir and Path(a.agent_dir).is_dir():
        mc.log_artifacts(run_id, a.agent_dir, artifact_path="agent")
    mc.set_terminated(run_id, status="FAILED" if a.failed_reason else "FINISHED")
    return run_id


class CoolingRecord(BaseModel):
    versions: dict[int, str] = {}  # attempt index -> registered version
    champion_version: str | None = None
    champion_moved: bool = False
    champion_reason: str = ""


def beats(candidate: dict[str, str], champion: dict[str, str] | None) -> tuple[bool, str]:
    """Pure: does a passing version take `champion`? Same environment: it must save at least as much.
    A seed-environment agent never displaces a room agent (the room is the pipeline's default)."""
    if champion is None:
        return True, "no champion yet"
    env, current_env = candidate.get("environment"), champion.get("environment")
    if env != current_env:
        if current_env == "room":
            return False, f"the champion is a room agent; a {env} agent does not replace it"
        return True, f"a {env} agent replaces the {current_env} champion"
    try:
        new, old = float(candidate["energy_saved_pct"]), float(champion.get("energy_saved_pct", "-inf"))
    except (KeyError, ValueError):
        return False, "the candidate has no recorded saving"
    if new >= old:
        return True, f"saves {new:.2f} % vs the champion's {old:.2f} %"
    return False, f"saves {new:.2f} %, less than the champion's {old:.2f} %"


def version_tags(a: Attempt, common: dict[str, str], passed: bool, verdict: str, loop_run_id: str, final: Final) -> dict[str, str]:
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


def close_loop(
    loop_run_id: str,
    model_name: str,
    final: Final,
    history: list[Attempt],
    verdicts: list[str],
    gates_passed: list[bool],
    table_md: str,
    artifacts: list[Path],
    summary: dict[str, Any],
    common_tags: dict[str, str],
) -> CoolingRecord:
    """Register each attempt that produced an agent, end the run, then move `champion` if earned."""

    mc = client()
    tracking.ensure_registered_model(mc, model_name, "Server-room cooling agents (DQN) produced by the cooling loop.")
    # Artifacts first: a full disk or an unwritable store fails here, before any version exists.
    tracking.log_text(mc, loop_run_id, "attempts.md", f"# Cooling loop: {final.state.value}\n\n{final.reason}\n\n{table_md}\n")
    tracking.log_text(mc, loop_run_id, "summary.json", json.dumps(summary, indent=2, default=str))
    for path in artifacts:
        if path.exists():
            mc.log_artifact(loop_run_id, str(path))
    record = CoolingRecord()
    chosen_tags: dict[str, str] | None = None
    for a, verdict, ok in zip(history, verdicts, gates_passed, strict=True):
        if not (a.run_id and a.agent_dir and not a.failed_reason):
            continue
        tags = version_tags(a, common_tags, ok, verdict, loop_run_id, final)
        version = mc.create_model_version(model_name, source=f"runs:/{a.run_id}/agent", run_id=a.run_id, tags=tags)
        record.versions[a.index] = str(version.version)
        if final.chosen == a.index and ok:
            chosen_tags = tags
    mc.set_tag(loop_run_id, "loop.state", final.state.value)
    mc.set_tag(loop_run_id, "loop.reason", final.reason[:4000])
    mc.set_terminated(loop_run_id, status="FINISHED")
    promote: str | None = None
    if final.state == FinalState.PASSED and final.chosen in record.versions and chosen_tags is not None:
        # Last, and under the registry's champion lock: judged against the champion as it is now.
        with tracking.champion_lock(mc, model_name, owner=f"cooling loop run {loop_run_id}"):
            current = tracking.champion_version(mc, model_name)
            wins, record.champion_reason = beats(chosen_tags, None if current is None else dict(current.tags))
            if wins:
                promote = record.versions[final.chosen]
                mc.set_registered_model_alias(model_name, CHAMPION, promote)
                tracking.record_gated_champion(mc, model_name, promote)
                record.champion_moved = True
    mc.set_tag(loop_run_id, "loop.champion", (f"moved to {promote}: " if promote else "unchanged: ") + record.champion_reason[:3900])
    current = tracking.champion_version(mc, model_name)
    record.champion_version = None if current is None else str(current.version)
    return record


def log_benchmark(params: dict[str, str], artifacts: list[Path]) -> str:
    return tracking.log_benchmark("cooling-benchmark", params, artifacts)


def experiment_id(name: str = EXPERIMENT) -> str:
    return _experiment_id(client(), name)
