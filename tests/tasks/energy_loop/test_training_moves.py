"""The training-cost moves on a tiny model: prune inside the recipe, prune with a budgeted
early-stopped fine-tune, and a compressed architecture trained from scratch; lineage energies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.data.datasets import prepare
from tasks.energy_loop.candidate import run_step
from tasks.meters.simple import FixedPowerMeter
from tasks.models import factory as models
from thresholds.energy.policy import CandidateResult, Step, StepKind
from thresholds.energy.schema import Scenario


def test_training_cost_moves_run_reload_and_count_their_lineage(tmp_path: Path) -> None:
    digits_path = str(prepare("digits", tmp_path / "data"))
    scenario = Scenario.model_validate(
        {
            "name": "moves",
            "training": {
                "max_epochs": 20,
                "patience": 2,
                "batch_size": 128,
                "fine_tune_epochs": 6,
                "prune_at_epoch": 3,
            },
            "measurement": {"inference_batch_size": 128, "min_window_s": 0.01, "repeats_min": 2, "repeats_max": 2},
        }
    )
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    steps = [
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1),
        Step(kind=StepKind.PRUNE_EARLY, value=0.5, parent=1, target="train_energy_vs_baseline"),
        Step(kind=StepKind.PRUNE_ES, value=0.5, parent=1, epochs=2, target="train_energy_vs_baseline"),
        Step(kind=StepKind.SCRATCH, parent=2, target="train_energy_vs_baseline"),
    ]
    for step in steps:
        result = run_step(scenario, step, history, digits_path, tmp_path, meter)
        assert result.ok, result.rejected_reason
        history.append(result)
    assert [c.lineage for c in history[3:]] == [
        ["early-stopping", "prune-early:0.5@3"],
        ["early-stopping", "prune-es:0.5/2ep"],
        ["early-stopping", "scratch:32-16"],
    ]
    recipe, pruned, early, budgeted, scratch = history[1:]
    for c in history[3:]:
        assert c.accuracy is not None and c.accuracy > 0.8, (c.lineage, c.accuracy)
        assert c.params == pruned.params  # the same pruned architecture, three ways
        _, spec = models.load(Path(c.model_dir or ""))
        assert spec.history == c.lineage and spec.hidden == [32, 16]
        assert c.inference_ratio_vs_baseline is not None and c.inference_pairs == 2  # measured paired with the baseline
    # Pruning inside the recipe has no separate fine-tune: its lineage is its own training, the epochs before pruning
    # included.
    assert early.train_energy_j > sum(early.series["epoch_energy_j"]) > 0  # type: ignore[operator]
    assert early.tags["prune_at_epoch"] == "3" and early.tags["epochs_before_pruning"] == "3"
    # The budgeted fine-tune adds at most 2 epochs to the recipe's lineage; the scratch model's lineage is its own
    # training.
    assert budgeted.train_energy_j > recipe.train_energy_j and (budgeted.epochs_run or 0) <= 2  # type: ignore[operator]
    assert scratch.train_energy_j == pytest.approx(sum(scratch.series["epoch_energy_j"]))
    assert scratch.tags["architecture_from"] == "#2"


def test_the_soft_label_back_off_fine_tunes_the_pruned_model_on_its_teacher(tmp_path: Path) -> None:
    digits_path = str(prepare("digits", tmp_path / "data"))
    scenario = Scenario.model_validate(
        {
            "name": "kd",
            "training": {"max_epochs": 8, "patience": 2, "batch_size": 128, "fine_tune_epochs": 3},
            "measurement": {"inference_batch_size": 128, "min_window_s": 0.01, "repeats_min": 2, "repeats_max": 2},
        }
    )
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    for step in [
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1, teacher=0, target="accuracy_drop_pt"),
        Step(kind=StepKind.DISTILL, value=0.5, parent=1, epochs=2, target="train_energy_vs_baseline"),
    ]:
        result = run_step(scenario, step, history, digits_path, tmp_path, meter)
        assert result.ok, result.rejected_reason
        history.append(result)
    baseline, recipe, plain, taught, student = history
    assert (student.epochs_run or 0) <= 2 and student.lineage == [
        "early-stopping",
        "distill:0.5",
    ]  # `distill:0.5/2ep`: within its budget
    assert taught.lineage == ["early-stopping", "prune:0.5", "kd:#0"] and taught.tags["teacher"] == "#0"
    assert (
        taught.params == plain.params and taught.accuracy is not None and taught.accuracy > 0.5
    )  # trained (10 classes), not an accuracy goal
    plain_model, _ = models.load(Path(plain.model_dir or ""))
    taught_model, _ = models.load(Path(taught.model_dir or ""))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain_model.state_dict().values(), taught_model.state_dict().values(), strict=True)
    )
    # Its lineage holds the teacher's training (the baseline, outside the recipe's lineage) and the labelling pass.
    fine_tune_j = sum(taught.series["epoch_energy_j"])
    assert {s.origin for s in taught.train_segments} == {0, 1, 3}
    assert taught.train_energy_j > recipe.train_energy_j + baseline.train_energy_j + fine_tune_j  # type: ignore[operator]
