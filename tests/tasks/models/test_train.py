"""Early stopping's minimum improvement: a plateau of tiny gains does not keep training for ever."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tasks.data.datasets import CachedData, load_cached, prepare
from tasks.models import factory as models
from tasks.models.train import TrainConfig, _significant, fit


@pytest.mark.parametrize(
    ("score", "reference", "min_delta_pct", "significant"),
    [
        ((0.0, 0.99), (0.0, 1.0), 0.0, True),  # any improvement counts without a minimum
        ((0.0, 0.996), (0.0, 1.0), 0.5, False),  # 0.4 % < 0.5 %
        ((0.0, 0.994), (0.0, 1.0), 0.5, True),
        ((0.0, 5.0), (math.inf, math.inf), 0.5, True),  # the first epoch always counts
        ((-0.91, 1.2), (-0.90, 1.0), 0.5, True),  # higher accuracy counts, whatever the loss
        ((-0.90, 1.1), (-0.91, 1.0), 0.5, False),
    ],
)
def test_what_counts_as_an_improvement(
    score: tuple[float, float], reference: tuple[float, float], min_delta_pct: float, significant: bool
) -> None:
    assert _significant(score, reference, min_delta_pct) is significant


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> CachedData:
    return load_cached(str(prepare("digits", Path(tmp_path_factory.mktemp("cache")))))


def test_a_minimum_improvement_stops_on_the_plateau_and_keeps_the_best_weights(digits: CachedData) -> None:
    reports = []
    for min_delta_pct in (0.0, 5.0):
        torch.manual_seed(0)
        model = models.build(models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features))
        reports.append(
            fit(model, digits, TrainConfig(max_epochs=80, patience=3, batch_size=128, min_delta_pct=min_delta_pct))
        )
    plain, strict = reports
    assert strict.stopped_early and strict.epochs_run < plain.epochs_run  # the same run, cut at the plateau
    assert strict.val_losses == plain.val_losses[: strict.epochs_run]
    assert strict.best_val_loss == min(strict.val_losses)  # the best weights, even from a small improvement
