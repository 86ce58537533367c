"""Promotion and status against a real embedded MLflow registry (no flow needed)."""

from __future__ import annotations

from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.cli import main


def _version(client: MlflowClient, name: str, tags: dict[str, str], status: str = "FINISHED") -> str:
    exp = client.get_experiment_by_name("promo") or client.get_experiment(client.create_experiment("promo"))
    run = client.create_run(exp.experiment_id)
    client.set_terminated(run.info.run_id, status=status)
    return str(
        client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags
        ).version
    )


@pytest.fixture
def registry(mlflow_store: str) -> MlflowClient:
    client = MlflowClient(mlflow_store)
    client.create_registered_model("m")
    return client


def test_promote_only_a_version_whose_gates_passed(registry: MlflowClient, capsys: pytest.CaptureFixture[str]) -> None:
    good = _version(
        registry,
        "m",
        {"gates_passed": "true", "inference_energy_j_per_1k": "0.5", "accuracy": "0.9", "energy_source": "codecarbon"},
    )
    bad = _version(
        registry, "m", {"gates_passed": "false", "verdict": "miss: accuracy", "inference_energy_j_per_1k": "0.1"}
    )
    assert main(["promote", "m", bad]) == 1
    assert "its recorded gates did not pass (miss: accuracy)" in capsys.readouterr().err
    assert main(["promote", "m", good]) == 0
    assert str(registry.get_model_version_by_alias("m", "champion").version) == good
    assert main(["status", "m"]) == 0
    out = capsys.readouterr().out
    assert f"champion   version {good}: accuracy=0.9, inference_energy_j_per_1k=0.5" in out and "challenger none" in out


def test_forced_promotion_needs_a_reason_and_records_it(
    registry: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_status_names_the_cheapest_passing_challenger(
    registry: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.5"})
    _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.4"})
    cheapest = _version(registry, "m", {"gates_passed": "true", "inference_energy_j_per_1k": "0.3"})
    assert main(["promote", "m", first]) == 0
    capsys.readouterr()
    assert main(["status", "m"]) == 0
    assert f"challenger version {cheapest}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["promote", "m", "x1"], "expected a version number"), (["promote", "m", "99"], "version = '99'")],
)
def test_bad_promotion_input_exits_2(
    registry: MlflowClient, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def _race(uri: str, version: str, energy: float, start_at: float, out: Any) -> None:
    """One 'loop' finishing: judge against the champion as it is now, move the alias if better."""
    import time as _time

    from registry.energy import move_champion_if_better
    from thresholds.energy.policy import CandidateResult, Step, StepKind

    candidate = CandidateResult(
        index=1,
        step=Step(kind=StepKind.PRUNE, value=0.5, parent=0),
        accuracy=0.9,
        inference_energy_j_per_1k=energy,
        energy_source="fixed",
        params=100,
    )
    client = MlflowClient(uri)
    while _time.time() < start_at:  # all racers leave the line together
        _time.sleep(0.001)
    out.put((version, move_champion_if_better(client, "m", version, candidate, 2.0, owner=f"racer {version}")))


def test_concurrent_loops_leave_the_best_version_as_champion(registry: MlflowClient, mlflow_store: str) -> None:
    """Four processes finish at once; without the lock the last writer would win, whatever its energy."""
    import multiprocessing
    import time

    energies = [0.40, 0.10, 0.30, 0.20]
    versions = [
        _version(
            registry,
            "m",
            {
                "gates_passed": "true",
                "inference_energy_j_per_1k": f"{e}",
                "accuracy": "0.9",
                "energy_source": "fixed",
                "params": "100",
            },
        )
        for e in energies
    ]  # noqa: E501
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 8.0  # spawned interpreters import mlflow first
    procs = [
        ctx.Process(target=_race, args=(mlflow_store, v, e, start_at, out))
        for v, e in zip(versions, energies, strict=True)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = dict(out.get(timeout=5) for _ in procs)
    best = versions[energies.index(min(energies))]
    assert str(registry.get_model_version_by_alias("m", "champion").version) == best
    assert results[best][0] is True
    assert "m--champion-lock" not in {m.name for m in registry.search_registered_models()}  # released


def test_a_stale_champion_lock_is_broken_after_its_lease(registry: MlflowClient) -> None:
    import time

    from registry.core import champion_lock

    registry.create_registered_model(
        "m--champion-lock", tags={"owner": "a crashed loop", "expires_at": f"{time.time() - 1:.3f}"}
    )
    with champion_lock(registry, "m", owner="me", wait_s=5):
        assert registry.get_registered_model("m--champion-lock").tags["owner"] == "me"
    assert "m--champion-lock" not in {m.name for m in registry.search_registered_models()}


def test_a_held_champion_lock_makes_others_wait_then_time_out(registry: MlflowClient) -> None:
    import time

    from registry.core import ChampionLockTimeout, champion_lock

    registry.create_registered_model(
        "m--champion-lock", tags={"owner": "a running loop", "expires_at": f"{time.time() + 60:.3f}"}
    )
    started = time.monotonic()
    with pytest.raises(ChampionLockTimeout, match="held by a running loop"):
        with champion_lock(registry, "m", owner="me", wait_s=1.0):
            pass
    assert time.monotonic() - started >= 1.0
