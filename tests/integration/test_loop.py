"""The whole flow on real Prefect (test harness) and a real embedded MLflow store, read back via MlflowClient."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.cli import main
from flows.energy_loop import energy_loop
from tasks.data.datasets import load_cached, prepare
from tasks.models.evaluate import quality
from tasks.models.factory import load_version
from tests.conftest import FIXTURES
from tests.integration.conftest import QuickLoop
from thresholds.energy.request import LoopRequest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def _versions(client: MlflowClient, name: str) -> dict[str, dict[str, str]]:
    return {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{name}'")}


def test_passing_loop_registers_every_candidate_crowns_a_passing_one_and_emits_no_alert(
    quick_loop: QuickLoop, tmp_path: Path
) -> None:
    outcome = quick_loop.outcome  # quick.yaml on digits, model digits-quick (tests/integration/conftest.py)
    assert outcome.state == "PASSED", outcome.reason
    client = MlflowClient(quick_loop.store)
    versions = _versions(client, "digits-quick")
    assert len(versions) == len(outcome.history) >= 2
    champion = client.get_model_version_by_alias("digits-quick", "champion")
    tags = versions[champion.version]
    assert tags["gates_passed"] == "true"
    # What the webhook receiver reads: the scenario's promotion mode, and the champion to move back to.
    assert tags["promotion_mode"] == "warn" and client.get_registered_model("digits-quick").tags[
        "last_gated_champion"
    ] == str(champion.version)
    assert tags["compression_steps"].startswith("early-stopping")
    for key in (
        "accuracy",
        "inference_energy_j_per_1k",
        "train_energy_j",
        "latency_ms_per_batch",
        "energy_source",
        "energy_estimated",
    ):
        assert key in tags, key
    assert tags["energy_source"] == "fixed-power:20W" and tags["energy_estimated"] == "true"
    assert int(tags["deployment.energy_optimal_batch_size"]) in (1, 16, 64, 256, 1024, 4096)
    assert "pays back after" in tags["payback"] or tags["payback"].startswith("no payback")
    assert "calibration.inference_ratio.int8" in client.get_run(outcome.loop_run_id).data.tags
    assert outcome.chosen is not None
    chosen = outcome.history[outcome.chosen]
    assert "confirmed on the full test split" in outcome.reason
    assert chosen.tags["eval_samples"] == "all" and "subset_accuracy" in chosen.tags
    assert float(tags["accuracy"]) == pytest.approx(
        chosen.accuracy, abs=1e-5
    )  # the registry holds the full-split figure
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
    # The champion reloads with weights_only=True and reproduces the accuracy recorded for it on the full test split.
    model, spec = load_version("digits-quick", "@champion")
    assert spec.history == chosen.lineage
    digits = load_cached(str(prepare("digits", tmp_path / "reload-data")))
    reloaded = quality(model, digits)
    assert reloaded.samples == len(digits.y_test) and reloaded.accuracy == pytest.approx(
        float(tags["accuracy"]), abs=1e-4
    )
    # A passing loop emits no alert (the same loop: a second run of it would check nothing more).
    for state in ("budget_exhausted", "failed"):
        assert _events(f"energy-loop.loop.{state}", "energy-loop.model.digits-quick", timeout_s=5) == []


def test_parallel_loop_trains_on_dask_workers_and_measures_inference_serially(mlflow_store: str) -> None:
    outcome = energy_loop(
        LoopRequest(scenario=str(FIXTURES / "quick.yaml"), dataset="digits", model_name="digits-parallel", parallel=2)
    )
    assert outcome.state == "PASSED", outcome.reason
    assert len(outcome.history) >= 2
    on_workers = [c for c in outcome.history if "train_host" in c.tags]
    assert len(on_workers) >= 2  # the first rung: baseline and recipe at once
    for c in outcome.history:
        # A rung of one candidate has nothing to run beside: it trains in this process, its energy read directly.
        assert (c.tags["train_pid"] != str(os.getpid())) == (c in on_workers)
        assert c.inference_repeats >= 1 and c.inference_energy_j_per_1k  # measured afterwards, in this process
    client = MlflowClient(mlflow_store)
    assert client.get_model_version_by_alias("digits-parallel", "champion").tags["gates_passed"] == "true"
    assert client.get_run(outcome.loop_run_id).data.tags["parallel.width"] == "2"
    # Every version trained in a parallel phase says how its figure was attributed, and the
    # attributed parts of one phase add up to the machine's reading over it (within 5 %).
    phases: dict[tuple[str, str, str], list[float]] = {}
    for tags in _versions(client, "digits-parallel").values():
        if int(tags["candidate"]) not in {c.index for c in on_workers}:
            # Produced alone in this process (a passing model served fused): its own CPU share, not a phase's split.
            assert tags["train_energy_attribution"] == "process-cpu-share", tags
            continue
        assert tags["train_energy_attribution"] == "machine-phase-split", tags
        key = tuple(tags[f"train_energy_attribution.{k}"] for k in ("machine_energy_j", "phase_s", "candidates"))
        phases.setdefault(key, []).append(
            float(tags["train_energy_attribution.busy_j"]) + float(tags["train_energy_attribution.constant_j"])
        )
        assert float(tags["train_energy_j"]) >= float(tags["train_energy_attribution.busy_j"])
    for (machine_j, phase_s, candidates), parts in phases.items():
        assert len(parts) == int(candidates)
        assert sum(parts) == pytest.approx(float(machine_j), rel=0.05)
        assert float(machine_j) == pytest.approx(20.0 * float(phase_s), rel=0.05)  # the fixed 20 W meter over the phase


def _events(name: str, resource_id: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Events named `name` on `resource_id`, read back from the Prefect server's events API (they arrive
    asynchronously)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    query = {
        "filter": {
            "event": {"name": [name]},
            "resource": {"id": [resource_id]},
            "occurred": {"since": "2020-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=query, timeout=10)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_impossible_scenario_ends_budget_exhausted_and_moves_no_alias(mlflow_store: str) -> None:
    outcome = energy_loop(
        LoopRequest(scenario=str(FIXTURES / "quick-impossible.yaml"), dataset="digits", model_name="digits-impossible")
    )
    assert outcome.state == "BUDGET_EXHAUSTED"
    assert "used 3 of 3 iterations" in outcome.reason
    # The alert went to the Prefect server for real: an automation matching it would fire.
    events = _events("energy-loop.loop.budget_exhausted", "energy-loop.model.digits-impossible")
    assert len(events) == 1, events
    assert events[0]["payload"] == {"reason": outcome.reason, "mlflow_run_id": outcome.loop_run_id}
    assert events[0]["resource"]["prefect.resource.name"] == "digits-impossible"
    client = MlflowClient(mlflow_store)
    versions = _versions(client, "digits-impossible")
    assert len(versions) == 3 and all(t["gates_passed"] == "false" for t in versions.values())
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("digits-impossible", "champion")
    assert client.get_run(outcome.loop_run_id).data.tags["loop.state"] == "BUDGET_EXHAUSTED"


def test_cli_exit_codes_and_bad_file_inside_the_flow(
    mlflow_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "run",
                "--scenario",
                str(FIXTURES / "quick-impossible.yaml"),
                "--dataset",
                "digits",
                "--model-name",
                "cli-model",
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "BUDGET_EXHAUSTED" in out and "| # | steps |" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n" + "1,2,0\n2,2,1\n" * 15 + "?,2,1\n")  # a number column with stray text
    assert (
        main(
            [
                "run",
                "--scenario",
                str(FIXTURES / "quick.yaml"),
                "--dataset",
                str(bad),
                "--target",
                "label",
                "--model-name",
                "bad",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "column 'a' row 30 = '?'" in err
    client = MlflowClient(mlflow_store)
    assert client.search_model_versions("name='bad'") == []


def test_trigger_without_a_prefect_server_runs_the_flow_in_this_process(
    mlflow_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    argv = [
        "trigger",
        "--deployment",
        "energy-loop/dev-cpu",
        "--param",
        f"scenario={FIXTURES / 'quick.yaml'}",
        "--param",
        "dataset=digits",
    ]
    assert (
        main([*argv[:3], "--param", "dataset=digits"]) == 2
    )  # no deployment defaults in process: the scenario is required
    assert "--param scenario=...: expected when running in process" in capsys.readouterr().err
    assert main([*argv, "--param", "model_name=triggered", "--wait"]) == 0
    captured = capsys.readouterr()
    assert "PREFECT_API_URL is not set: no server to trigger, running the flow in this process instead" in captured.err
    assert "PASSED:" in captured.out
    client = MlflowClient(mlflow_store)
    champion = client.get_model_version_by_alias("triggered", "champion")  # the --param overrides reached the flow
    loop = client.get_run(champion.tags["loop_run_id"])
    assert loop.data.tags["loop.pid"] == str(os.getpid()) and loop.data.tags["loop.state"] == "PASSED"


def _regression_csv(tmp_path: Path, learnable: bool) -> Path:
    """400 rows, 5 features; the target is linear in them (plus 0.1 noise), or pure noise no model can predict."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    signal = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) if learnable else 0.0
    frame["price"] = signal + rng.normal(scale=0.1 if learnable else 1.0, size=400) + 100
    path = tmp_path / ("linear.csv" if learnable else "noise.csv")
    frame.to_csv(path, index=False)
    return path


def _regression_scenario(tmp_path: Path, max_rmse: float) -> str:
    path = tmp_path / f"regression-{max_rmse}.yaml"
    raw = yaml.safe_load((FIXTURES / "quick.yaml").read_text())
    raw.update(name="regression", targets={"max_rmse": max_rmse}, budget={"max_iterations": 3})
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_regression_csv_with_a_linear_target_passes(mlflow_store: str, tmp_path: Path) -> None:
    # The target's spread is ~3.8 and its noise 0.1: an RMSE of 1.0 is within reach of the first early-stopped model.
    outcome = energy_loop(
        LoopRequest(
            scenario=_regression_scenario(tmp_path, 1.0),
            dataset=str(_regression_csv(tmp_path, True)),
            target="price",
            model_name="linear",
        )
    )
    assert outcome.state == "PASSED", outcome.reason
    assert outcome.chosen is not None and outcome.chosen >= 1  # the baseline is the reference, never the answer
    chosen = outcome.history[outcome.chosen]
    assert chosen.accuracy is None and chosen.rmse is not None and chosen.rmse <= 1.0
    client = MlflowClient(mlflow_store)
    versions = _versions(client, "linear")
    assert len(versions) == len(outcome.history) and all("rmse" in t and "accuracy" not in t for t in versions.values())
    champion = client.get_model_version_by_alias("linear", "champion")
    assert str(champion.version) == outcome.champion_version and versions[champion.version]["gates_passed"] == "true"
    assert float(versions[champion.version]["rmse"]) == pytest.approx(chosen.rmse, rel=1e-4)


def test_regression_csv_with_an_unpredictable_target_exhausts_the_budget(mlflow_store: str, tmp_path: Path) -> None:
    # Pure noise of spread 1.0: no model gets near an RMSE of 0.5 on unseen rows.
    outcome = energy_loop(
        LoopRequest(
            scenario=_regression_scenario(tmp_path, 0.5),
            dataset=str(_regression_csv(tmp_path, False)),
            target="price",
            model_name="noise",
        )
    )
    assert outcome.state == "BUDGET_EXHAUSTED", outcome.reason
    assert "used 3 of 3 iterations" in outcome.reason
    assert len(outcome.history) == 3 and all(c.rmse is not None and c.rmse > 0.5 for c in outcome.history)
    client = MlflowClient(mlflow_store)
    versions = _versions(client, "noise")
    assert len(versions) == 3 and all(
        t["gates_passed"] == "false" and float(t["rmse"]) > 0.5 for t in versions.values()
    )
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("noise", "champion")


def test_edge_target_uses_int8_that_this_cpu_would_skip(mlflow_store: str) -> None:
    outcome = energy_loop(
        LoopRequest(scenario=str(FIXTURES / "quick-edge.yaml"), dataset="digits", model_name="digits-edge")
    )
    assert outcome.state == "PASSED", outcome.reason
    chosen = outcome.history[outcome.chosen or 0]
    assert chosen.lineage[-1] == "precision:int8"
    assert chosen.energy_source.endswith("+analytic:horowitz-isscc2014-45nm") and chosen.estimated
    assert "measured_inference_energy_j_per_1k" in chosen.tags  # the local reading stays on record
    run = MlflowClient(mlflow_store).get_run(outcome.loop_run_id)
    assert run.data.tags["calibration.machine"] == "analytic:horowitz-isscc2014-45nm"


def test_messy_imbalanced_table_runs_with_its_preprocessing_beside_every_version(
    mlflow_store: str, tmp_path: Path
) -> None:
    import json

    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from tasks.data.datasets import load_cached, prepare
    from tasks.data.preprocess import TablePreprocessor
    from tasks.models import factory as models

    rng = np.random.default_rng(0)
    n = 400
    size = rng.normal(40, 5, n)
    frame = pd.DataFrame(
        {
            "id": [f"row-{i}" for i in range(n)],
            "size": np.where(rng.random(n) < 0.1, np.nan, size),
            "island": rng.choice(["Biscoe", "Dream", None], size=n),
            "tagged": rng.choice([True, False], size=n),
            "site": "north",
            "kind": np.where(size > 46, "rare", "common"),  # about 1 in 9 rows: judged by balanced accuracy
        }
    )
    path = tmp_path / "animals.csv"
    frame.to_csv(path, index=False)
    assert main(
        [
            "run",
            "--scenario",
            str(FIXTURES / "quick.yaml"),
            "--dataset",
            str(path),
            "--target",
            "kind",
            "--model-name",
            "animals",
        ]
    ) in (0, 1)
    client = MlflowClient(mlflow_store)
    versions = client.search_model_versions("name='animals'")
    assert versions
    loop_run = client.get_run(versions[0].tags["loop_run_id"])
    assert loop_run.data.tags["quality_metric"] == "balanced_accuracy"
    assert "constant column: 'site'" in loop_run.data.tags["data.notes"] and "'id'" in loop_run.data.tags["data.notes"]
    data = load_cached(str(prepare(str(path), Path(".energy-loop/cache"), "kind")))  # the loop's own cache entry
    mlflow.set_tracking_uri(mlflow_store)
    for version in versions:
        assert version.tags["quality_metric"] == "balanced_accuracy"
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/animals/{version.version}", dst_path=str(tmp_path / str(version.version))
            )
        )
        folder = next(local.rglob("preprocessing.json")).parent  # the model folder, inside the MLflow model's artifacts
        saved = json.loads((folder / "preprocessing.json").read_text())
        assert saved == data.preprocessing
        model, spec = models.load(folder)
        pre = TablePreprocessor.from_dict(saved)
        raw = pre.transform(pd.read_csv(path))  # a raw row of the table, as a caller would send it
        assert raw.shape[1] == spec.in_features
        with torch.no_grad():
            predicted = pre.decode(models.to_precision(model, spec.precision)(torch.tensor(raw)).numpy())
        assert set(predicted) <= {"common", "rare"} and (predicted == frame["kind"].to_numpy()).mean() > 0.8
        # The registered MLflow model takes the raw rows (text, gaps, the dropped columns) and applies the same
        # preprocessing.
        served = mlflow.pyfunc.load_model(f"models:/animals/{version.version}").predict(
            pd.read_csv(path).drop(columns=["kind"])
        )
        assert list(served["prediction"]) == [str(v) for v in predicted]
    table = Path(client.download_artifacts(loop_run.info.run_id, "iterations.md", str(tmp_path))).read_text()
    assert "| balanced_accuracy |" in table and "Quality: balanced_accuracy" in table


def test_a_retrain_at_other_batch_sizes_judges_the_champion_at_them(
    quick_loop: QuickLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain measured where production runs (batch 16, as the production automation asks) re-scores the champion
    at batch 16 on its own test split before the champion rule compares them: J per 1k at one batch size is never
    judged against J per 1k at another."""
    import shutil

    import mlflow

    shutil.copy(quick_loop.folder / "mlflow.db", tmp_path / "mlflow.db")  # the store the other tests read stays
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    champion = client.get_model_version_by_alias(quick_loop.model_name, "champion")
    assert champion.tags["serving.batch_sizes"] != "16"
    request = LoopRequest(
        scenario=str(FIXTURES / "quick.yaml"), dataset="digits", model_name=quick_loop.model_name,
        serving_batch_sizes=[16],
    )  # fmt: skip
    outcome = energy_loop(request)
    loop_run = client.get_run(outcome.loop_run_id)
    assert loop_run.data.tags["champion.rescored_version"] == str(champion.version)
    assert "measured at batch sizes" in loop_run.data.tags["champion.rescored_reason"]
    assert loop_run.data.metrics["champion.rescored.inference_energy_j_per_1k"] > 0
    assert 0.5 < loop_run.data.metrics["champion.rescored.accuracy"] <= 1
    assert f"The champion (version {champion.version}) was re-scored" in outcome.table_md
    new = [client.get_model_version(quick_loop.model_name, v) for v in outcome.versions.values()]
    assert new and all(v.tags["serving.batch_sizes"] == "16" for v in new)
