"""The cooling registry's `close_loop` against a real embedded MLflow store: `champion` moves to a passing
agent only when it saves at least as much as the champion re-read under the registry lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import cooling
from registry.core import LoopRecord
from tasks.cooling import dqn
from thresholds.cooling.policy import Attempt, Kind
from thresholds.core import Final, FinalState

MODEL = "cooling-test"
LOCK = f"{MODEL}--champion-lock"


def _passing_loop(tmp_path: Path, saved_pct: float) -> tuple[str, list[Attempt], Final]:
    """A loop run with one logged attempt that passed its gates, saving `saved_pct` %."""
    loop_run_id = cooling.open_loop(f"loop saving {saved_pct}", {"scenario": "test"}, {"environment": "room"})
    agent_dir = dqn.save_agent(
        tmp_path / f"agent-{saved_pct}",
        dqn.QNetwork(4, (4, 4), 3),
        {"obs_dim": 4, "n_actions": 3, "hidden_units": [4, 4]},
    )
    attempt = Attempt(index=0, kind=Kind.TRAIN, hidden_units=(4, 4), max_episodes=1, epsilon=0.1,
                      energy_saved_pct=saved_pct, saved_vs_best_controller_pct=saved_pct, minutes_outside_band=0,
                      best_controller_minutes_outside_band=0, train_energy_j=1.0,
                      inference_energy_j_per_year=1.0, agent_dir=str(agent_dir))  # fmt: skip
    run_id = cooling.log_attempt(loop_run_id, attempt, "meets every target", {}, {}, {"environment": "room"})
    return (
        loop_run_id,
        [attempt.model_copy(update={"run_id": run_id})],
        Final(state=FinalState.PASSED, chosen=0, reason="attempt #0 meets every target"),
    )


def _close(loop: tuple[str, list[Attempt], Final]) -> LoopRecord:
    loop_run_id, history, final = loop
    return cooling.close_loop(
        loop_run_id,
        MODEL,
        final,
        history,
        cooling.LoopReport(["meets every target"], [True], "| table |", [], {}),
        {"environment": "room"},
    )


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


def _loop_run_id(client: MlflowClient, saved_pct: float) -> str:
    runs = client.search_runs(
        [client.get_experiment_by_name(cooling.EXPERIMENT).experiment_id],
        filter_string=f"attributes.run_name = 'loop saving {saved_pct}'",
    )
    assert len(runs) == 1
    return str(runs[0].info.run_id)


def test_close_loop_moves_an_existing_champion_only_to_a_better_agent(mlflow_store: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_store)
    first = _close(_passing_loop(tmp_path, 10.0))
    assert first.champion_moved and first.versions == {0: "1"} and _champion(client) == "1"
    better = _close(_passing_loop(tmp_path, 20.0))
    assert better.champion_moved and better.champion_version == "2" and _champion(client) == "2"
    assert (
        better.champion_reason
        == "saves 20.00 % vs the champion's 10.00 % (vs the best tuned controller, held-out years)"
    )
    worse = _close(_passing_loop(tmp_path, 15.0))
    assert not worse.champion_moved and worse.champion_version == "2" and _champion(client) == "2"
    assert (
        worse.versions == {0: "3"} and client.get_model_version(MODEL, "3").tags["gates_passed"] == "true"
    )  # registered, not crowned
    assert (
        client.get_run(_loop_run_id(client, 15.0))
        .data.tags["loop.champion"]
        .startswith("unchanged: saves 15.00 %, less than")
    )
    assert LOCK not in {m.name for m in client.search_registered_models()}  # released


def test_close_loop_judges_the_champion_as_it_is_once_it_holds_the_lock(mlflow_store: str, tmp_path: Path) -> None:
    """A loop saving 25 % closes while another holds the lock and crowns a 30 % agent: it must wait, then
    compare with 30 %, not with the 20 % champion it would have seen before waiting."""
    client = MlflowClient(mlflow_store)
    _close(_passing_loop(tmp_path, 20.0))
    rival = _passing_loop(tmp_path, 30.0)
    mine = _passing_loop(tmp_path, 25.0)
    client.create_registered_model(LOCK, tags={"owner": "another loop", "expires_at": f"{time.time() + 60:.3f}"})
    outcome: list[LoopRecord | BaseException] = []

    def close_mine() -> None:
        try:
            outcome.append(_close(mine))
        except BaseException as exc:  # reported by the main thread
            outcome.append(exc)

    closing = threading.Thread(target=close_mine)
    closing.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(client.search_model_versions(f"name='{MODEL}'")) < 2:
        time.sleep(0.1)  # my version is registered before the lock is taken
    time.sleep(1.5)
    assert closing.is_alive() and not outcome, "close_loop moved on while another process held the champion lock"
    assert _champion(client) == "1"
    # The other holder crowns its 30 % agent, then releases.
    rival_tags = {"environment": "room", "energy_saved_pct": "30", "saved_vs_best_controller_pct": "30"}
    rival_version = client.create_model_version(
        MODEL, source=f"runs:/{rival[1][0].run_id}/agent", run_id=rival[1][0].run_id, tags=rival_tags
    )
    client.set_registered_model_alias(MODEL, "champion", str(rival_version.version))
    client.delete_registered_model(LOCK)
    closing.join(timeout=120)
    assert outcome and isinstance(outcome[0], LoopRecord), outcome
    record = outcome[0]
    assert not record.champion_moved and record.champion_version == str(rival_version.version)
    assert "less than the champion's 30.00 %" in record.champion_reason
    assert _champion(client) == str(rival_version.version)


@pytest.mark.parametrize("state", [FinalState.BUDGET_EXHAUSTED, FinalState.FAILED])
def test_a_loop_that_did_not_pass_registers_but_never_moves_the_champion(
    state: FinalState, mlflow_store: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_store)
    _close(_passing_loop(tmp_path, 10.0))
    loop_run_id, history, _ = _passing_loop(tmp_path, 90.0)
    final = Final(state=state, chosen=None, reason="no")
    record = cooling.close_loop(
        loop_run_id, MODEL, final, history, cooling.LoopReport(["miss"], [False], "", [], {}), {"environment": "room"}
    )  # would win on saving alone
    assert not record.champion_moved and record.versions == {0: "2"} and _champion(client) == "1"
