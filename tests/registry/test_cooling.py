"""The cooling registry against a real embedded MLflow store: none or all versions registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import cooling as registry
from registry.store import IncompleteArtifact
from thresholds.cooling.policy import Attempt, Final, FinalState, Kind


def _attempt(index: int, agent_dir: Path) -> Attempt:
    agent_dir.mkdir(parents=True)
    (agent_dir / "agent.pt").write_bytes(b"\0" * 256)
    (agent_dir / "spec.json").write_text("{}")
    return Attempt(
        index=index,
        kind=Kind.TRAIN,
        hidden_units=(8, 4),
        max_episodes=2,
        epsilon=0.3,
        energy_saved_pct=10.0,
        agent_dir=str(agent_dir),
    )


def test_an_agent_missing_from_the_store_registers_no_version_at_all(mlflow_store: str, tmp_path: Path) -> None:
    loop_run_id = registry.open_loop("loop", {}, {})
    history = []
    for i in range(2):
        a = _attempt(i, tmp_path / f"attempt-{i}")
        history.append(a.model_copy(update={"run_id": registry.log_attempt(loop_run_id, a, "ok", {}, {}, {})}))
    (tmp_path / "attempt-1" / "agent.pt").write_bytes(
        b"\0" * 512
    )  # the store holds a truncated copy of the second agent
    final = Final(state=FinalState.PASSED, chosen=0, reason="attempt #0 meets every target")
    with pytest.raises(IncompleteArtifact, match="agent.pt"):
        registry.close_loop(
            loop_run_id,
            "cooling-agent",
            final,
            history,
            registry.LoopReport(["ok", "ok"], [True, True], "table", [], {}),
            {},
        )
    client = MlflowClient(mlflow_store)
    assert client.search_model_versions("name='cooling-agent'") == []
