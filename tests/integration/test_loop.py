"""The whole flow on real Prefect (test harness) and a real embedded MLflow store, read back via MlflowClient."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.cli import main
from flows.energy_loop import energy_loop
from registry.tracking import load_version
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def _versions(client: MlflowClient, name: str) -> dict[str, dict[str, str]]:
    return {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{name}'")}


def test_passing_loop_registers_every_candidate_and_crowns_a_passing_one(mlflow_store: str) -> None:
    outcome = energy_loop(scenario=str(FIXTURES / "quick.yaml"), dataset="digits", model_name="digits-quick")
    assert outcome.state == "PASSED", outcome.reason
    client = MlflowClient(mlflow_store)
    versions = _versions(client, "digits-quick")
    assert len(versions) == len(outcome.history) >= 2
    champion = client.get_model_version_by_alias("digits-quick", "champion")
    tags = versions[champion.version]
    assert tags["gates_passed"] == "true"
    # What the webhook receiver reads: the scenario's promotion mode, and the champion to move back to.
    assert tags["promotion_mode"] == "warn" and client.get_registered_model("digits-quick").tags["last_gated_champion"] == str(champion.version)
    assert tags["compression_steps"].startswith("early-stopping")
    for key in ("accuracy", "inference_energy_j_per_1k", "train_energy_j", "latency_ms_per_batch", "energy_source", "energy_estimated"):
        assert key in tags, key
    assert tags["energy_source"] == "fixed-power:20W" and tags["energy_estimated"] == "true"
    assert int(tags["deployment.energy_optimal_batch_size"]) in (1, 16, 64, 256, 1024, 4096)
    assert "pays back after" in tags["payback"] or tags["payback"].startswith("no payback")
    assert "calibration.inference_ratio.int8" in client.get_run(outcome.loop_run_id).data.tags
    chosen = outcome.history[outcome.chosen or 0]
    assert "confirmed on the full test split" in outcome.reason
    assert chosen.tags["eval_samples"] == "all" and "subset_accuracy" in chosen.tags
    assert float(tags["accuracy"]) == pytest.approx(chosen.accuracy, abs=1e-5)  # the registry holds the full-split figure
    failing = [v for v, t in versions.items() if t["gates_passed"] == "false"]
    assert champion.version not in failing and failing  # the baseline never passes: it is the reference
    # Parent run finished, nested runs carry per-epoch curves, the table and the Pareto plot are artifacts.
    parent = client.get_run(outcome.loop_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["loop.state"] == "PASSED"
    artifacts = {a.path for a in client.list_artifacts(outcome.loop_run_id)}
    assert {"iterations.md", "pareto.png"} <= artifacts
    assert tags["pareto_plot"] == f"runs:/{outcome.loop_run_id}/pareto.png"
    assert "pareto.png" in {a.path for a in client.list_artifacts(champion.run_id)}  # the version page's source run
    first = outcome.history[0]
    assert first.run_id is not None
    assert len(client.get_metric_history(first.run_id, "val_loss")) == first.epochs_run
    epoch_energy = client.get_metric_history(first.run_id, "epoch_energy_j")
    assert [m.step for m in epoch_energy] == list(range(1, (first.epochs_run or 0) + 1))
    assert sum(m.value for m in epoch_energy) == pytest.approx(first.train_energy_j)
    for key in ("inference_energy_sem_j_per_1k", "train_energy_sem_j", "analytic_inference_energy_j_per_1k"):
        assert key in tags, key
    assert int(client.get_run(first.run_id).data.metrics["inference_repeats"]) >= 3
    # The champion reloads with weights_only=True and reproduces the recorded accuracy's shape of output.
    model, spec = load_version("digits-quick", "@champion")
    assert spec.history == outcome.history[outcome.chosen or 0].lineage


def test_parallel_loop_trains_on_dask_workers_and_measures_inference_serially(mlflow_store: str) -> None:
    outcome = energy_loop(scenario=str(FIXTURES / "quick.yaml"), dataset="digits", model_name="digits-parallel", parallel=2)
    assert outcome.state == "PASSED", outcome.reason
    assert len(outcome.history) >= 2
    for c in outcome.history:
        assert c.tags["train_energy_attribution"] == "process-cpu-share"  # only the worker's CPU share of the machine
        assert c.tags["train_pid"] != str(os.getpid())  # trained on a Dask worker process
        assert c.inference_repeats >= 1 and c.inference_energy_j_per_1k  # measured afterwards, in this process
    client = MlflowClient(mlflow_store)
    assert client.get_model_version_by_alias("digits-parallel", "champion").tags["gates_passed"] == "true"


def test_impossible_scenario_ends_budget_exhausted_and_moves_no_alias(mlflow_store: str) -> None:
    from prefect.events import emit_event

    with mock.patch("tasks.steps.emit_event", autospec=emit_event) as emitted:
        outcome = energy_loop(scenario=str(FIXTURES / "quick-impossible.yaml"), dataset="digits", model_name="digits-impossible")
    assert emitted.call_args.kwargs["event"] == "energy-loop.loop.budget_exhausted"
    assert emitted.call_args.kwargs["resource"]["prefect.resource.id"] == "energy-loop.model.digits-impossible"
    assert outcome.state == "BUDGET_EXHAUSTED"
    assert "used 3 of 3 iterations" in outcome.reason
    client = MlflowClient(mlflow_store)
    versions = _versions(client, "digits-impossible")
    assert len(versions) == 3 and all(t["gates_passed"] == "false" for t in versions.values())
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("digits-impossible", "champion")
    assert client.get_run(outcome.loop_run_id).data.tags["loop.state"] == "BUDGET_EXHAUSTED"


def test_cli_exit_codes_and_bad_file_inside_the_flow(mlflow_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--scenario", str(FIXTURES / "quick-impossible.yaml"), "--dataset", "digits", "--model-name", "cli-model"]) == 1
    out = capsys.readouterr().out
    assert "BUDGET_EXHAUSTED" in out and "| # | steps |" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n" + "x,2,0\n1,2,1\n" * 15)
    assert main(["run", "--scenario", str(FIXTURES / "quick.yaml"), "--dataset", str(bad), "--target", "label", "--model-name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "column 'a'" in err
    client = MlflowClient(mlflow_store)
    assert client.search_model_versions("name='bad'") == []


def test_regression_csv_runs_end_to_end(mlflow_store: str, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    frame["price"] = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(scale=0.1, size=400) + 100
    path = tmp_path / "houses.csv"
    frame.to_csv(path, index=False)
    outcome = energy_loop(scenario=str(FIXTURES / "quick.yaml"), dataset=str(path), target="price", model_name="houses")
    assert outcome.history[0].rmse is not None and outcome.history[0].accuracy is None
    assert outcome.state in {"PASSED", "BUDGET_EXHAUSTED", "FAILED"}
    versions = _versions(MlflowClient(mlflow_store), "houses")
    assert all("rmse" in t for t in versions.values())


def test_edge_target_uses_int8_that_this_cpu_would_skip(mlflow_store: str) -> None:
    outcome = energy_loop(scenario=str(FIXTURES / "quick-edge.yaml"), dataset="digits", model_name="digits-edge")
    assert outcome.state == "PASSED", outcome.reason
    chosen = outcome.history[outcome.chosen or 0]
    assert chosen.lineage[-1] == "precision:int8"
    assert chosen.energy_source.endswith("+analytic:horowitz-isscc2014-45nm") and chosen.estimated
    assert "measured_inference_energy_j_per_1k" in chosen.tags  # the local reading stays on record
    run = MlflowClient(mlflow_store).get_run(outcome.loop_run_id)
    assert run.data.tags["calibration.machine"] == "analytic:horowitz-isscc2014-45nm"
