"""Target-aware escalation end to end, on real Prefect and a real embedded MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from flows.energy_loop import energy_loop
from tests.conftest import FIXTURES
from thresholds.energy.policy import SERVING_FORMS, StepKind
from thresholds.energy.request import LoopRequest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def test_a_training_energy_miss_is_answered_by_a_training_cost_move_that_passes(mlflow_store: str) -> None:
    outcome = energy_loop(
        LoopRequest(scenario=str(FIXTURES / "quick-train.yaml"), dataset="digits", model_name="digits-train-move")
    )
    assert outcome.state == "PASSED", outcome.table_md
    chosen = outcome.history[outcome.chosen or 0]
    while chosen.step.kind in SERVING_FORMS:  # a passing model is then served in every form; the cheapest is kept
        assert chosen.step.parent is not None
        chosen = outcome.history[chosen.step.parent]
    assert chosen.step.kind in (StepKind.PRUNE_EARLY, StepKind.PRUNE_ES, StepKind.SCRATCH), chosen.step
    assert chosen.step.target == "train_energy_vs_baseline"
    # The candidate before the move met the inference target and missed only training energy.
    pruned = next(c for c in outcome.history if c.step.kind == StepKind.PRUNE)
    assert pruned.index < chosen.index
    verdicts = outcome.table_md.splitlines()
    row = next(line for line in verdicts if line.startswith(f"| {pruned.index} |"))
    assert "train_energy_vs_baseline" in row and "inference_energy_vs_baseline" not in row.split("| next:")[0]
    assert "for train_energy_vs_baseline" in row and "| next: " in row
    assert (chosen.train_energy_j or 0) < (pruned.train_energy_j or 0)
    run = MlflowClient(mlflow_store).get_run(outcome.loop_run_id)
    assert run.data.tags["loop.state"] == "PASSED" and "loop.unreachable" not in run.data.tags


def test_an_unreachable_training_target_ends_the_loop_early_and_names_it(mlflow_store: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((FIXTURES / "quick-train.yaml").read_text())
    raw["name"] = "quick-unreachable"
    raw["targets"] = {"max_accuracy_drop_pt": 6.0, "max_train_energy_vs_baseline": 0.02}
    path = tmp_path / "unreachable.yaml"
    path.write_text(yaml.safe_dump(raw))
    outcome = energy_loop(LoopRequest(scenario=str(path), dataset="digits", model_name="digits-unreachable"))
    assert outcome.state == "FAILED" and outcome.unreachable == "train_energy_vs_baseline"
    assert outcome.reason.startswith("unreachable: train_energy_vs_baseline: ")
    assert len(outcome.history) == 2  # baseline and recipe: the other 4 iterations of the budget were not spent
    run = MlflowClient(mlflow_store).get_run(outcome.loop_run_id)
    assert run.data.tags["loop.unreachable"] == "train_energy_vs_baseline"
