"""The cooling loop on real Prefect (test harness) and a real embedded MLflow store, on a few simulated days."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import cooling_main as main
from flows.cli import main as energy_loop_main
from flows.cooling import cooling_loop
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
QUICK = FIXTURES / "cooling-quick.yaml"
MODEL = "cooling-agent"


def _variant(tmp_path: Path, **changes: object) -> str:
    raw = yaml.safe_load(QUICK.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw.setdefault(section, {})[key] = value
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_cli_run_passes_registers_tagged_versions_and_crowns_a_passing_one(mlflow_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--scenario", str(QUICK), "--days", "2"]) == 0
    client = MlflowClient(mlflow_store)
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{MODEL}'")}
    assert versions
    champion = client.get_model_version_by_alias(MODEL, "champion")
    tags = versions[champion.version]
    assert tags["gates_passed"] == "true" and tags["environment"] == "room" and tags["loop_state"] == "PASSED"
    for key in ("energy_saved_pct", "minutes_outside_band", "train_energy_j", "inference_energy_j_per_year", "hidden_units", "energy_source"):
        assert key in tags, key
    assert tags["energy_source"] == "fixed-power:20W"
    loop = client.get_run(tags["loop_run_id"])
    assert loop.info.status == "FINISHED" and loop.data.tags["loop.state"] == "PASSED"
    assert {"attempts.md", "summary.json", "week.png", "monthly_energy.png"} <= {a.path for a in client.list_artifacts(loop.info.run_id)}
    attempt_run = champion.run_id
    assert {"agent/agent.pt", "agent/spec.json"} <= {a.path for a in client.list_artifacts(attempt_run, "agent")}
    assert client.get_metric_history(attempt_run, "episode_reward")
    assert "PASSED" in capsys.readouterr().out


def test_missed_saving_escalates_then_exhausts_the_budget_without_a_champion(mlflow_store: str, tmp_path: Path) -> None:
    scenario = _variant(tmp_path, targets__min_energy_saved_pct=100.0)
    outcome = cooling_loop(scenario=scenario, days=2)
    assert outcome.state == "BUDGET_EXHAUSTED"
    assert [a.kind.value for a in outcome.history] == ["train", "retrain"]
    assert outcome.history[1].max_episodes > outcome.history[0].max_episodes
    client = MlflowClient(mlflow_store)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 2 and all(v.tags["gates_passed"] == "false" for v in versions)
    assert outcome.champion_version is None and not outcome.champion_moved


def test_a_crash_marks_the_loop_failed_and_registers_nothing(mlflow_store: str) -> None:
    with mock.patch("tasks.cooling.stages.evaluate", side_effect=RuntimeError("simulated crash")), pytest.raises(RuntimeError):
        cooling_loop(scenario=str(QUICK), days=1)
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("cooling-loop").experiment_id], filter_string="tags.`loop.state` = 'FAILED'")
    assert len(runs) == 1 and "simulated crash" in runs[0].data.tags["loop.reason"]
    assert client.search_registered_models() == [] or not client.search_model_versions(f"name='{MODEL}'")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--scenario", "cooling-nowhere"], "scenario"),
        (["run", "--scenario", str(QUICK), "--months", "0"], "evaluation.months"),
        (["run", "--scenario", str(QUICK), "--days", "-2"], "evaluation.days"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], mlflow_store: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("fault", ["unwritable-store", "tracking-unreachable"])
def test_cli_turns_store_and_tracking_failures_into_one_line(fault: str, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import io

    if fault == "unwritable-store":
        (tmp_path / "mlartifacts").write_text("a file where the artifact folder should be")
        expected = "energy-cooling: FAILED: could not write"
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        expected = "energy-cooling: FAILED: the tracking server at http://127.0.0.1:9"
    # Not capsys: Prefect's console log handler keeps the stream it first saw, and capsys closes its stream.
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        code = main(["run", "--scenario", str(QUICK), "--days", "1"])
    err = stderr.getvalue().strip().splitlines()
    assert code == 1
    assert err and err[-1].startswith(expected), err[-3:]
    if fault == "unwritable-store":
        assert MlflowClient(mlflow_store).search_model_versions(f"name='{MODEL}'") == []


def test_energy_loop_cooling_is_the_same_command(capsys: pytest.CaptureFixture[str], mlflow_store: str) -> None:
    assert energy_loop_main(["cooling", "run", "--scenario", "cooling-nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("energy-loop: error: scenario = 'cooling-nowhere'") and len(err.splitlines()) == 1
    assert energy_loop_main(["cooling", "validate", "cooling-room"]) == 0
    assert '"env": "room"' in capsys.readouterr().out
