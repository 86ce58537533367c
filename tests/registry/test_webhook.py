"""registry.webhook.guard_alias against a real embedded registry: what no webhook test reaches cheaply."""

from __future__ import annotations

from typing import Any


def _registered(client: Any, name: str, gates_passed: bool, mode: str) -> str:
    exp = client.get_experiment_by_name("guard") or client.get_experiment(client.create_experiment("guard"))
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id, status="FINISHED")
    tags = {"gates_passed": str(gates_passed).lower(), "promotion_mode": mode}
    return str(
        client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
        ).version
    )


def test_guard_on_the_embedded_registry_forced_and_deleted_cases(mlflow_store: str) -> None:
    """guard_alias against a real (embedded) registry: what no webhook test reaches cheaply."""
    from mlflow import MlflowClient

    from registry.core import promote
    from registry.webhook import guard_alias

    client = MlflowClient(mlflow_store)
    client.create_registered_model("m")
    gated, ungated = _registered(client, "m", True, "enforce"), _registered(client, "m", False, "enforce")
    promote("m", gated)
    assert client.get_registered_model("m").tags["last_gated_champion"] == gated
    # `energy-loop promote --force --reason` is on record: left alone, but recorded.
    promote("m", ungated, force=True, reason="hotfix for the demo")
    assert guard_alias("m", "champion", ungated).guard.action == "forced"
    assert str(client.get_model_version_by_alias("m", "champion").version) == ungated
    assert client.get_model_version("m", ungated).tags["ungated_champion.action"] == "forced"
    # The last gated champion was deleted since: nothing to move back to, so the alias goes.
    client.delete_model_version("m", gated)
    client.delete_model_version_tag("m", ungated, "forced_promotion_reason")
    record = guard_alias("m", "champion", ungated)
    assert record.guard.action == "remove" and "no earlier gated champion" in record.guard.reason
    assert client.get_registered_model("m").aliases == {}
