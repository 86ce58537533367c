"""Promotion and status against a real embedded MLflow registry (no flow needed)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.cli import main


def _version(client: MlflowClient, name: str, tags: dict[str, str], status: str = "FINISHED") -> str:
    exp = client.get_experiment_by_name("promo") or client.get_experiment(client.create_experiment("promo"))
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id, status=status)
    return str(client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags).version)


@pytest.fixture
def registry(mlflow_store: str) -> MlflowClient:
    client = MlflowClient(mlflow_store)
    client.create_registered_model("m")
    return client


def test_promote_only_a_version_whose_gates_passed(registry: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    good = _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.5", "accuracy": "0.9", "energy_source": "codecarbon"})
    bad = _version(registry, "m", {"gates_passed": "false", "verdict": "miss: accuracy", "inference_energy_j_per_1k": "0.1"})
    assert main(["promote", "m", bad]) == 1
    assert "its recorded gates did not pass (miss: accuracy)" in capsys.readouterr().err
    assert main(["promote", "m", good]) == 0
    assert str(registry.get_model_version_by_alias("m", "champion").version) == good
    assert main(["status", "m"]) == 0
    out = capsys.readouterr().out
    assert f"champion   version {good}: accuracy=0.9, inference_energy_j_per_1k=0.5" in out and "challenger none" in out


def test_forced_promotion_needs_a_reason_and_records_it(registry: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _version(registry, "m", {"gates_passed": "false"})
    assert main(["promote", "m", bad, "--force"]) == 2
    assert "expected a non-empty reason" in capsys.readouterr().err
    with pytest.raises(MlflowException):
        registry.get_model_version_by_alias("m", "champion")  # nothing moved
    assert main(["promote", "m", bad, "--force", "--reason", "hotfix for incident 42"]) == 0
    tags = registry.get_model_version("m", bad).tags
    assert tags["forced_promotion_reason"] == "hotfix for incident 42" and "gates did not pass" in tags["forced_over"]


def test_a_version_from_a_failed_run_is_refused(registry: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    crashed = _version(registry, "m", {"gates_passed": "true"}, status="FAILED")
    assert main(["promote", "m", crashed]) == 1
    assert "its run is FAILED" in capsys.readouterr().err


def test_status_names_the_cheapest_passing_challenger(registry: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    first = _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.5"})
    _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.4"})
    cheapest = _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.3"})
    assert main(["promote", "m", first]) == 0
    capsys.readouterr()
    assert main(["status", "m"]) == 0
    assert f"challenger version {cheapest}" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "needle"), [(["promote", "m", "x1"], "expected a version number"), (["promote", "m", "99"], "version = '99'")])
def test_bad_promotion_input_exits_2(registry: MlflowClient, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
