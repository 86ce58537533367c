"""The champion rules' figures come from a version's run metrics (its tags only where the run has none), and what a
closed loop leaves in a real embedded MLflow store is keyed by declared keys only (tests/test_keys.py reads the code;
this reads the store)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric

from registry import cooling, energy, keys
from registry.core import open_loop
from tasks.cooling import dqn
from tasks.cooling import keys as attempt_keys
from tests.test_keys import declared
from thresholds.cooling.policy import Attempt, Kind, SavingRecord
from thresholds.core import Final, FinalState
from thresholds.energy import keys as detail
from thresholds.energy.policy import CandidateResult, ChampionFigures, Step, StepKind

MODEL = "figures-test"


def _version(client: MlflowClient, tags: dict[str, str], metrics: dict[str, float]) -> object:
    exp = client.get_experiment_by_name("figures") or client.get_experiment(client.create_experiment("figures"))
    run = client.create_run(exp.experiment_id)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name='{MODEL}'"):
        client.create_registered_model(MODEL)
    return client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/m", run_id=run.info.run_id, tags=tags)


def test_the_champion_figures_are_the_runs_metrics_not_the_tag_text(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    tags = {keys.ENERGY_SOURCE: "replay", keys.INFERENCE_ENERGY_J_PER_1K: "0.9", keys.PARAMS: "10"}
    metrics = {keys.INFERENCE_ENERGY_J_PER_1K: 0.123456789, keys.ACCURACY: 0.91, keys.PARAMS: 1234.0}
    figures = energy.champion_figures(client, _version(client, tags, metrics))
    assert figures == ChampionFigures("replay", 0.123456789, accuracy=0.91, params=1234)


def test_a_version_without_run_metrics_is_read_from_its_tags(mlflow_store: str) -> None:
    client = MlflowClient(mlflow_store)
    tags = {keys.ENERGY_SOURCE: "replay", keys.INFERENCE_ENERGY_J_PER_1K: "0.5", keys.ACCURACY: "not a number"}
    assert energy.champion_figures(client, _version(client, tags, {})) == ChampionFigures("replay", 0.5)
    room = {keys.ENVIRONMENT: "room", keys.ENERGY_SAVED_PCT: "29"}
    assert cooling.saving_record(client, _version(client, room, {})) == SavingRecord("room", 29.0)
    assert energy.champion_figures(client, None) is None and cooling.saving_record(client, None) is None


def _closed_cooling_loop(tmp_path: Path, logged_pct: float, final_pct: float) -> str:
    """A cooling loop whose attempt was logged saving `logged_pct` % and is registered saving `final_pct` %."""
    loop_run_id = cooling.open_loop("figures loop", {"scenario": "test"}, {keys.ENVIRONMENT: "room"})
    agent_dir = dqn.save_agent(
        tmp_path / "agent", dqn.QNetwork(4, (4, 4), 3), {"obs_dim": 4, "n_actions": 3, "hidden_units": [4, 4]}
    )
    attempt = Attempt(index=0, kind=Kind.TRAIN, hidden_units=(4, 4), max_episodes=1, epsilon=0.1,
                      energy_saved_pct=logged_pct, minutes_outside_band=0, train_energy_j=1.0,
                      inference_energy_j_per_year=1.0, agent_dir=str(agent_dir))  # fmt: skip
    run_id = cooling.log_attempt(
        loop_run_id,
        attempt,
        "meets every target",
        {attempt_keys.DISTIL_MSE: 0.1},
        {attempt_keys.EPISODE_REWARD: [1.0, 2.0]},
        {},
    )
    registered = attempt.model_copy(update={"run_id": run_id, "energy_saved_pct": final_pct})
    cooling.close_loop(
        loop_run_id,
        MODEL,
        Final(state=FinalState.PASSED, chosen=0, reason="attempt #0 meets every target"),
        [registered],
        cooling.LoopReport(["meets every target"], [True], "| table |", [], {}),
        {keys.ENVIRONMENT: "room"},
    )
    return loop_run_id


def test_a_figure_changed_after_the_run_is_logged_again_on_the_run(mlflow_store: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_store)
    _closed_cooling_loop(tmp_path, 10.0, 12.5)
    version = client.get_model_version(MODEL, "1")
    assert client.get_run(version.run_id).data.metrics[keys.ENERGY_SAVED_PCT] == 12.5
    assert version.tags[keys.ENERGY_SAVED_PCT] == "12.5"
    assert cooling.saving_record(client, version) == SavingRecord("room", 12.5)


def test_a_closed_loop_leaves_only_declared_keys_in_the_store(mlflow_store: str, tmp_path: Path) -> None:
    client = MlflowClient(mlflow_store)
    loop_run_id = _closed_cooling_loop(tmp_path, 10.0, 10.0)
    known, prefixes, _ = declared()
    loop_run = client.get_run(loop_run_id)
    version = client.get_model_version(MODEL, "1")
    run = client.get_run(version.run_id)
    written = {
        *loop_run.data.tags,
        *run.data.tags,
        *run.data.metrics,
        *run.data.params,
        *version.tags,
        *client.get_registered_model(MODEL).tags,
    }
    own = {k for k in written if not k.startswith("mlflow.") or k == keys.MLFLOW_PARENT_RUN_ID}
    stray = sorted(k for k in own if k not in known and not k.startswith(tuple(prefixes)))
    assert not stray, f"keys in the store that no keys.py declares: {stray}"
    assert {keys.LOOP_STATE, keys.LOOP_CHAMPION, keys.GATES_PASSED, keys.ENERGY_SAVED_PCT, keys.KIND} <= own


def test_an_energy_loop_registers_its_confirmed_figures_as_run_metrics_under_declared_keys(
    mlflow_store: str, tmp_path: Path
) -> None:
    """A candidate logged on the evaluation subset, then confirmed on the full split (a new accuracy) before the loop
    closes: the version's run holds the confirmed figure, which is what the champion rule reads."""
    client = MlflowClient(mlflow_store)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"0" * 16)
    step = Step(kind=StepKind.PRUNE, value=0.5, parent=0)
    logged = CandidateResult(index=0, step=step, accuracy=0.8, inference_energy_j_per_1k=0.25, params=100,
                             energy_source="replay", model_dir=str(model_dir),
                             tags={detail.EVAL_SAMPLES: "100", detail.SERVING_RUNTIME: "torch"},
                             series={detail.VAL_LOSS: [0.5, 0.4]})  # fmt: skip
    loop_run_id = open_loop(energy.EXPERIMENT, "energy figures", {"targets": {"min_accuracy": 0.7}}, {})
    run_id = energy.log_candidate(loop_run_id, logged, "meets every target")
    confirmed = logged.model_copy(update={"run_id": run_id, "accuracy": 0.85})
    record = energy.close_loop(
        loop_run_id,
        MODEL,
        Final(state=FinalState.PASSED, chosen=0, reason="confirmed"),
        [confirmed],
        2.0,
        energy.LoopReport(["meets every target"], [True], "| table |", None),
        {keys.SCENARIO: "test"},
    )
    version = client.get_model_version(MODEL, record.versions[0])
    assert energy.champion_figures(client, version) == ChampionFigures("replay", 0.25, accuracy=0.85, params=100)
    assert version.tags[keys.ACCURACY] == "0.85" and version.tags[detail.SERVING_RUNTIME] == "torch"
    run = client.get_run(run_id)
    known, prefixes, _ = declared()
    written = {*client.get_run(loop_run_id).data.tags, *run.data.tags, *run.data.metrics, *run.data.params,
               *version.tags}  # fmt: skip
    own = {k for k in written if not k.startswith("mlflow.") or k == keys.MLFLOW_PARENT_RUN_ID}
    stray = sorted(k for k in own if k not in known and not k.startswith(tuple(prefixes)))
    assert not stray, f"keys in the store that no keys.py declares: {stray}"
    assert {keys.DETAIL_PREFIX + detail.EVAL_SAMPLES, detail.VAL_LOSS, keys.STEP, keys.PARETO_PLOT} <= own
