"""One candidate being produced: the `Production` a rung's producer reads (scenario, step, history, data, meter) and
adds its energy, tags and training runs to; the model it `Made`; and the training settings every rung's training is
built from."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from tasks.compression import distill as distill_mod
from tasks.data.datasets import CachedData
from tasks.meters.base import EnergyMeter
from tasks.models import factory as models
from tasks.models.hooks import Hooks
from tasks.models.train import TrainConfig, TrainReport, fit
from thresholds.energy.policy import CandidateResult, Step
from thresholds.energy.schema import Scenario, Training
from thresholds.energy.training_cost import TrainSegment


def batch_factor(history: list[str]) -> int:
    """The training batch multiplier a lineage was trained with (`batch:f` step), 1 when none."""
    for step in reversed(history):
        if step.startswith("batch:"):
            return int(step.split(":", 1)[1])
    return 1


def train_config(
    training: Training,
    epochs: int,
    patience: int,
    batch_factor: int = 1,
    early_stopping: bool = True,
    autocast: bool = False,
) -> TrainConfig:
    """The one place a rung's training settings are built: the scenario's recipe at `batch_factor` x the batch size."""
    return TrainConfig(
        max_epochs=epochs,
        patience=patience,
        batch_size=training.batch_size * batch_factor,
        lr=TrainConfig.lr * math.sqrt(batch_factor),  # square-root scaling keeps the noise of each step comparable
        early_stopping=early_stopping,
        seed=training.seed,
        autocast=autocast,
        monitor=training.early_stopping_monitor,
        min_delta_pct=training.early_stopping_min_delta_pct,
        energy_window_s=training.energy_window_s,
    )


@dataclass
class Production:
    """One candidate being produced: what its rung reads, and the energy and tags it has added up so far."""

    scenario: Scenario
    step: Step
    history: list[CandidateResult]
    index: int
    data: CachedData
    meter: EnergyMeter
    spent_j: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    segments: list[TrainSegment] = field(default_factory=list)  # the training runs of this production
    hooks: Hooks = field(default_factory=Hooks)  # the user's loss, metric and training step (`model.*` of the scenario)

    @property
    def label(self) -> str:
        return f"#{self.index} {self.step.label}"

    def parent(self) -> tuple[torch.nn.Module, models.ModelSpec, CandidateResult]:
        """The model this rung starts from (`step.parent`), its spec and its record."""
        parent = self.history[self.step.parent if self.step.parent is not None else 0]
        if parent.model_dir is None or parent.train_energy_j is None:
            raise ValueError(f"parent #{parent.index} has no saved model")
        model, spec = models.load(Path(parent.model_dir))
        return model, spec, parent

    def train(
        self, model: torch.nn.Module, cfg: TrainConfig, teacher: torch.nn.Module | None = None, label: str | None = None
    ) -> tuple[TrainReport, float]:
        """Train `model` on the labels, or on `teacher`'s soft labels; returns the report and the labelling energy."""
        if teacher is None:
            report, labelling_j = (
                fit(model, self.data, cfg, label=label or self.label, meter=self.meter, hooks=self.hooks),
                0.0,
            )
        else:
            ladder = self.scenario.ladder
            report, labelling_j = distill_mod.distill(
                teacher,
                model,
                self.data,
                cfg,
                distill_mod.SoftLabels(ladder.distill_temperature, ladder.distill_alpha),
                self.meter,
                label or self.label,
                self.hooks,
            )
        self.spent_j += report.energy_j + labelling_j
        work = work_key(model, cfg, teacher is not None)
        self.segments.append(
            TrainSegment(
                origin=self.index,
                run=len(self.segments),
                work=work,
                epochs=report.epochs_run,
                energy_j=report.energy_j + labelling_j,
                energy_sem_j=report.energy_sem_j,
            )
        )
        return report, labelling_j

    def lineage(self, parent: CandidateResult | None = None) -> list[TrainSegment]:
        """The training runs behind the model this production made: its parent's, then its own."""
        return [*(parent.train_segments if parent is not None else []), *self.segments]


def work_key(model: torch.nn.Module, cfg: TrainConfig, distilled: bool) -> str:
    """What makes two training epochs the same work: the parameter shapes (the architecture as trained),
    the batch size, autocast and whether the labels come from a teacher."""
    shapes = ";".join("x".join(map(str, p.shape)) for p in model.parameters())
    digest = hashlib.sha256(shapes.encode()).hexdigest()[:10]
    return (
        f"{digest}/bs{cfg.batch_size}/{'autocast' if cfg.autocast else 'fp32'}/{'teacher' if distilled else 'labels'}"
    )


class Made(NamedTuple):
    """What a rung's producer returns: the model, its spec, the energy of its whole lineage, its main training run."""

    model: torch.nn.Module
    spec: models.ModelSpec
    lineage_j: float
    lineage_sem_j: float
    report: TrainReport | None = None
    segments: list[TrainSegment] | None = None  # the lineage's training runs; None: this production's own
    finish: Callable[[Path], None] | None = None  # writes what the rung adds to the saved model folder


def model_spec(scenario: Scenario, data: CachedData) -> models.ModelSpec:
    """The scenario's architecture for this data: the user's factory (`model.factory`) or a built-in (`model.kind`)."""
    settings = scenario.model
    common = dict(input_shape=data.input_shape, out_features=data.out_features, hooks=settings.hooks)
    if settings.factory:
        return models.ModelSpec(factory=settings.factory, **common)
    kwargs = {"hidden": list(settings.hidden)} if settings.kind == "mlp" else {}
    return models.ModelSpec(factory=models.BUILTINS[settings.kind], kwargs=kwargs, **common)
