"""The cooling loop on real Prefect (test harness) and a real embedded MLflow store, on a few simulated days."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import pytest
import yaml
from mlflow import MlflowClient

from flows.cli import cooling_main as main
from flows.cli import main as energy_loop_main
from flows.cooling import cooling_loop
from tasks.cooling.stages import Evaluation
from tests.conftest import FIXTURES
from thresholds.cooling.policy import Attempt, Kind, checks, passed, quality_ok
from thresholds.cooling.request import CoolingRequest
from thresholds.cooling.schema import settings_for
from thresholds.errors import INVALID_INPUT, InputError

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


def test_cli_run_passes_registers_tagged_versions_and_crowns_a_passing_one(
    mlflow_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--scenario", str(QUICK), "--days", "2"]) == 0
    client = MlflowClient(mlflow_store)
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{MODEL}'")}
    assert versions
    champion = client.get_model_version_by_alias(MODEL, "champion")
    tags = versions[champion.version]
    assert tags["gates_passed"] == "true" and tags["environment"] == "room" and tags["loop_state"] == "PASSED"
    for key in (
        "energy_saved_pct",
        "minutes_outside_band",
        "train_energy_j",
        "inference_energy_j_per_year",
        "hidden_units",
        "energy_source",
    ):
        assert key in tags, key
    assert tags["energy_source"] == "fixed-power:20W"
    loop = client.get_run(tags["loop_run_id"])
    assert loop.info.status == "FINISHED" and loop.data.tags["loop.state"] == "PASSED"
    assert {"attempts.md", "summary.json", "week.png", "monthly_energy.png"} <= {
        a.path for a in client.list_artifacts(loop.info.run_id)
    }
    attempt_run = champion.run_id
    assert {"agent/agent.pt", "agent/spec.json"} <= {a.path for a in client.list_artifacts(attempt_run, "agent")}
    assert client.get_metric_history(attempt_run, "episode_reward")
    out = capsys.readouterr().out
    assert "PASSED" in out
    # The progress line of the attempt that passed: the first, or the retrain (another seed) where the first agent's
    # 9 episodes learnt less on this CPU.
    line = r"^\[\d/2\] #\d (train|retrain) 16-8  training… \d+\.\d s  evaluating… \d+\.\d s  PASS$"
    assert re.search(line, out, re.MULTILINE), out
    # The gate has teeth: the agent used less electricity than the thermostat without leaving the band more,
    # while the do-nothing controller, judged on the same simulated days by the same gate, misses it.
    targets = settings_for(str(QUICK), days=2).targets
    assert float(tags["energy_saved_pct"]) >= 2.0 and float(tags["minutes_outside_band"]) <= float(
        tags["builtin_minutes_outside_band"]
    )
    evaluation = Evaluation.model_validate_json(
        Path(client.download_artifacts(attempt_run, "agent/evaluation.json", str(tmp_path))).read_text()
    )
    rows = [c.row("do-nothing") for c in evaluation.comparisons]
    do_nothing = Attempt(index=0, kind=Kind.TRAIN, hidden_units=(1, 1), max_episodes=0, epsilon=0.0, train_energy_j=0.0,
                         inference_energy_j_per_year=0.0, energy_saved_pct=sum(r.saved_pct for r in rows) / len(rows),
                         minutes_outside_band=sum(r.minutes_outside_band for r in rows),
                         builtin_minutes_outside_band=evaluation.builtin_minutes_outside_band)  # fmt: skip
    assert not passed(targets, do_nothing) and do_nothing.energy_saved_pct == pytest.approx(100.0)
    assert [c.name for c in checks(targets, do_nothing) if not c.ok] == ["band_vs_builtin"]


def test_missed_saving_escalates_then_exhausts_the_budget_without_a_champion(mlflow_store: str, tmp_path: Path) -> None:
    scenario = _variant(tmp_path, targets__min_energy_saved_pct=100.0, training__max_episodes=2)
    outcome = cooling_loop(CoolingRequest(scenario=scenario, days=2))
    assert outcome.state == "BUDGET_EXHAUSTED"
    assert [a.kind.value for a in outcome.history] == ["train", "retrain"]
    assert outcome.history[1].max_episodes > outcome.history[0].max_episodes
    client = MlflowClient(mlflow_store)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) == 2 and all(v.tags["gates_passed"] == "false" for v in versions)
    assert outcome.champion_version is None and not outcome.champion_moved


def test_an_agent_too_costly_to_run_is_distilled_and_one_too_costly_to_train_is_shrunk(
    mlflow_store: str, tmp_path: Path
) -> None:
    """The first agent meets the quality gate (a saving target any agent meets: what a 9-episode agent learns
    differs from one CPU to another); what it misses picks the rung. A 1 uJ/year inference budget:
    `distil` it into a 1-1 student (its Q-values regressed, its lineage's training energy includes the
    teacher's), which cannot shrink further. A 1 uJ training budget: `shrink`, a smaller agent trained
    from scratch. No agent can meet either budget, so nothing is crowned."""
    client = MlflowClient(mlflow_store)
    ladder = {"ladder__shrink_factor": 0.05, "ladder__min_hidden_units": 1, "budget__max_attempts": 4,
              "targets__min_energy_saved_pct": -100.0, "targets__max_minutes_outside_vs_builtin": 100_000}  # fmt: skip
    costly_to_run = _variant(tmp_path, targets__max_inference_energy_j_per_year=1e-6, **ladder)
    outcome = cooling_loop(CoolingRequest(scenario=costly_to_run, days=2))
    targets = settings_for(costly_to_run, days=2).targets
    train, distil = outcome.history[:2]
    assert (
        (train.kind, distil.kind) == (Kind.TRAIN, Kind.DISTIL)
        and quality_ok(targets, train)
        and not passed(targets, train)
    )
    assert (
        distil.parent == 0 and distil.hidden_units == (1, 1) and distil.episodes_run == 0
    )  # regressed, not trained by RL
    assert (
        distil.train_energy_j is not None
        and train.train_energy_j is not None
        and distil.train_energy_j > train.train_energy_j
    )  # lineage
    # The 1-1 student either meets quality (then nothing is left to shrink) or misses it (then that width is trained
    # from scratch, and misses too): either way no rung is left and nothing is crowned.
    assert outcome.state == "FAILED" and outcome.reason.startswith("no rung left") and outcome.champion_version is None
    assert [a.kind for a in outcome.history[2:]] in ([], [Kind.SHRINK]), outcome.history
    assert "1-1 cannot shrink further" in outcome.reason or outcome.history[-1].hidden_units == (1, 1)
    versions = {v.tags["kind"]: v.tags for v in client.search_model_versions(f"name='{MODEL}'")}
    assert {"train", "distil"} <= set(versions) and versions["distil"]["hidden_units"] == "1-1"

    costly_to_train = _variant(tmp_path, targets__max_train_energy_j=1e-6, **{**ladder, "budget__max_attempts": 2})
    outcome = cooling_loop(CoolingRequest(scenario=costly_to_train, days=2))
    train, shrink = outcome.history
    assert (train.kind, shrink.kind) == (Kind.TRAIN, Kind.SHRINK) and quality_ok(
        settings_for(costly_to_train, days=2).targets, train
    )
    assert shrink.parent is None and shrink.hidden_units == (1, 1) and shrink.episodes_run >= 1  # trained from scratch
    assert outcome.state == "BUDGET_EXHAUSTED" and outcome.champion_version is None
    assert all(v.tags["gates_passed"] == "false" for v in client.search_model_versions(f"name='{MODEL}'"))


def test_a_crash_marks_the_loop_failed_and_registers_nothing(mlflow_store: str) -> None:
    with (
        mock.patch("tasks.cooling.stages.evaluate", side_effect=RuntimeError("simulated crash")),
        pytest.raises(RuntimeError),
    ):
        cooling_loop(CoolingRequest(scenario=str(QUICK), days=1))
    client = MlflowClient(mlflow_store)
    runs = client.search_runs(
        [client.get_experiment_by_name("cooling-loop").experiment_id], filter_string="tags.`loop.state` = 'FAILED'"
    )
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
def test_cli_bad_input_exits_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], mlflow_store: str, tmp_path: Path
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err and out == ""
    assert not (tmp_path / "mlflow.db").exists()  # refused before the flow: no run opened


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"scenario": "cooling-nowhere"}, "scenario = 'cooling-nowhere'"),
        ({"scenario": str(QUICK), "months": 0}, "evaluation.months = 0: expected greater than or equal to 1"),
        ({"scenario": str(QUICK), "env": "attic"}, "env = 'attic': expected one of seed, room"),
        ({"scenario": str(QUICK), "meter": "wattmeter"}, "meter = 'wattmeter': expected one of"),
        ({"scenario": str(QUICK), "days": "two"}, "days = 'two': expected an integer"),  # a parameter's wrong type
        ({"scenario": str(QUICK), "month": 2}, "month = 2: expected one of the cooling loop's options: scenario, env"),
        ("cooling-room", "request = 'cooling-room': expected a mapping of the cooling loop's options"),
    ],
    ids=["scenario", "months", "env", "meter", "type", "unknown key", "not a mapping"],
)
def test_the_flow_called_directly_with_a_bad_value_ends_failed_with_the_line(
    params: object, needle: str, mlflow_store: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """What a deployment or scheduled run does with the same parameters (a mapping, as its `request`): its first
    task refuses them, and Prefect's own parameter validation does not get in first."""
    request = {**params, "work_root": str(tmp_path / "work")} if isinstance(params, dict) else params
    state = cooling_loop(request, return_state=True)
    assert state.is_failed() and state.name == INVALID_INPUT
    assert state.message is not None and needle in state.message and "\n" not in state.message, state.message
    with pytest.raises(InputError) as raised:  # what a Python caller of the flow gets
        state.result()
    assert str(raised.value) == state.message
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert (
        not (tmp_path / "mlflow.db").exists() and not (tmp_path / "work").exists()
    )  # no run opened, no MLflow version, no agent


@pytest.mark.parametrize("fault", ["unwritable-store", "tracking-unreachable"])
def test_cli_turns_store_and_tracking_failures_into_one_line(
    fault: str, mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
