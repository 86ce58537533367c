"""The CI retraining workflow run the way CI runs it: the `run:` steps of .github/workflows/retrain.yml, in
order, in a subprocess, with the job's `env` filled from real authenticated servers (MLflow with basic auth
on PostgreSQL, Prefect with auth, a process worker: the `servers` fixture of tests/integration/conftest.py,
started once for this module and test_servers.py). What stands
in for GitHub's runner, the `uses:` steps and the install step is said in tests/workflow_runner.py.

RETRAIN_WORKFLOW_INSTALL=real runs the install step as written too (it downloads the `client` group)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal, cast
from unittest import mock

import pytest

from tests.workflow_runner import JobResult, job, run_job, secret_names

pytestmark = [pytest.mark.integration, pytest.mark.servers]
INSTALL = cast(Literal["substitute", "real"], os.environ.get("RETRAIN_WORKFLOW_INSTALL", "substitute"))
RETRAIN_STEP = "Retrain through the deployment and gate on the result"


@pytest.fixture(scope="module")
def ci_secrets(servers: dict[str, str]) -> dict[str, str]:
    """The repository secrets as a team sets them: the stack's URLs and Prefect auth string, and an MLflow
    user `ci` that may only READ the loop's experiment (the worker writes as the admin)."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    admin = {
        "MLFLOW_TRACKING_USERNAME": servers["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": servers["MLFLOW_TRACKING_PASSWORD"],
    }
    password = secrets.token_urlsafe(16)
    with mock.patch.dict(os.environ, admin):
        tracking = MlflowClient(servers["MLFLOW_TRACKING_URI"])
        experiment = tracking.get_experiment_by_name("energy-loop")
        experiment_id = experiment.experiment_id if experiment else tracking.create_experiment("energy-loop")
        auth = get_app_client("basic-auth", tracking_uri=servers["MLFLOW_TRACKING_URI"])
        auth.create_user("ci", password)
        auth.grant_user_permission("ci", "experiment", experiment_id, "READ")
    values = {
        **{key: servers[key] for key in secret_names().values()},
        "MLFLOW_TRACKING_USERNAME": "ci",
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    return values


@pytest.fixture
def registry(servers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """MLflow on the server, read as the admin."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", servers["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", servers["MLFLOW_TRACKING_PASSWORD"])
    return MlflowClient(servers["MLFLOW_TRACKING_URI"])


def _dispatch(ci_secrets: dict[str, str], tmp_path: Path, scenario: str, model_name: str) -> JobResult:
    """Actions > retrain > Run workflow, on the energy loop's nightly deployment with overrides."""
    inputs = {
        "deployment": "energy-loop/dev-cpu",
        "params": f"scenario={scenario} dataset=digits model_name={model_name}",
    }
    return run_job(ci_secrets, inputs, tmp_path, install=INSTALL)


@pytest.mark.timeout(900)  # a loop through the worker, and with RETRAIN_WORKFLOW_INSTALL=real an install
def test_the_job_passes_when_the_loop_passes(ci_secrets: dict[str, str], registry: Any, tmp_path: Path) -> None:
    result = _dispatch(ci_secrets, tmp_path, "tests/fixtures/quick.yaml", "ci-digits")
    print(result.output)  # the job's log, shown by pytest when the test fails (or with -rA)
    assert result.returncode == 0, result.output[-4000:]
    assert [step.name for step in result.steps] == [step["name"] for step in job()["steps"] if "run" in step]
    assert "Completed" in result.output and "PASSED:" in result.output
    champion = registry.get_model_version_by_alias("ci-digits", "champion")
    assert champion.tags["gates_passed"] == "true"


@pytest.mark.timeout(900)  # a loop through the worker, and with RETRAIN_WORKFLOW_INSTALL=real an install
def test_the_job_fails_when_the_scenario_cannot_be_met(
    ci_secrets: dict[str, str], registry: Any, tmp_path: Path
) -> None:
    result = _dispatch(ci_secrets, tmp_path, "tests/fixtures/quick-impossible.yaml", "ci-impossible")
    print(result.output)
    assert result.returncode == 1, result.output[-4000:]
    assert result.failed_step == RETRAIN_STEP
    assert "BUDGET_EXHAUSTED:" in result.output
    versions = registry.search_model_versions("name='ci-impossible'")
    assert versions and all("champion" not in v.aliases for v in versions)


@pytest.mark.parametrize("missing", sorted(secret_names().values()))
def test_a_missing_secret_stops_the_job_in_one_line(missing: str, ci_secrets: dict[str, str], tmp_path: Path) -> None:
    result = run_job({**ci_secrets, missing: ""}, {}, tmp_path, install=INSTALL)  # GitHub's value for an unset secret
    print(result.output)
    assert result.returncode != 0
    assert result.failed_step == "Check the secrets" and len(result.steps) == 1, (
        result.output
    )  # nothing installed or started
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0], result.output
    for value in ci_secrets.values():  # the line names what is missing, never a value
        assert value not in lines[0]


def test_inputs_reach_the_shell_as_data_not_code(ci_secrets: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    hostile = {
        "deployment": f'energy-loop/dev-cpu"; touch {marker}; echo "',
        "params": f"dataset=digits $(touch {marker}) `touch {marker}`",
    }
    for name, value in hostile.items():
        result = run_job(ci_secrets, {name: value}, tmp_path / name, install=INSTALL)
        assert result.returncode == 2 and result.failed_step == RETRAIN_STEP, result.output[-3000:]
        assert not marker.exists(), f"input {name} ran as code"
        assert len(result.steps[-1].output.strip().splitlines()) == 1, result.steps[-1].output
