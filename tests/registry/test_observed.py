"""What serving observed, summed up from its windows (registry/observed.py): pure functions over plain records."""

from __future__ import annotations

import math

import pytest

from registry import keys
from registry.observed import TIMESTAMP_MS, summarize
from thresholds.energy.production import at_mix


def _window(at_ms: int, rows: int, energy_j: float | None, **extra: float) -> dict[str, float]:
    window = {TIMESTAMP_MS: float(at_ms), keys.OBSERVED_WINDOW_ROWS: float(rows), keys.OBSERVED_WINDOW_REQUESTS: 2.0}
    if energy_j is not None:
        window[keys.OBSERVED_WINDOW_ENERGY_J] = energy_j
    return window | extra


def test_energy_per_1k_is_over_every_metered_row_not_a_mean_of_window_figures() -> None:
    windows = [
        _window(3000, 1000, 2.0, **{f"{keys.OBSERVED_ROWS_AT_BATCH_PREFIX}64": 1000.0}),
        _window(1000, 10, 1.0, **{f"{keys.OBSERVED_ROWS_AT_BATCH_PREFIX}1": 10.0}),
        _window(2000, 0, 0.5),  # an idle window: energy without rows counts in no figure per row
        _window(4000, 5, None),  # no energy reading: its rows are served but not metered
    ]
    seen = summarize(windows, "accuracy")
    assert seen is not None
    assert seen.energy_j_per_1k == pytest.approx(3.0 / 1010 * 1000)
    assert (seen.windows, seen.rows, seen.requests, seen.first_ms, seen.last_ms) == (4, 1015, 8, 1000, 4000)
    assert seen.rows_by_batch == {1: 10, 64: 1000}


def test_quality_is_weighted_by_labelled_rows_and_rmse_is_pooled() -> None:
    q, n = keys.OBSERVED_WINDOW_QUALITY, keys.OBSERVED_WINDOW_LABELLED_ROWS
    windows = [_window(1, 10, None, **{q: 1.0, n: 30.0}), _window(2, 10, None, **{q: 0.5, n: 10.0})]
    accuracy = summarize(windows, "accuracy")
    assert accuracy is not None and accuracy.quality == pytest.approx(0.875) and accuracy.labelled_rows == 40
    rmse = summarize(windows, "rmse")
    assert rmse is not None and rmse.quality == pytest.approx(math.sqrt((30 * 1.0 + 10 * 0.25) / 40))
    assert summarize([], "accuracy") is None


def test_the_loops_figure_at_a_mix_weights_the_nearest_measured_size_by_rows() -> None:
    measured = {1: 10.0, 64: 1.0, 4096: 0.1}
    assert at_mix(measured, {1: 100}) == pytest.approx(10.0)
    # On a log scale 4 is nearer 1 than 64, 256 nearer 64 than 4096, 2048 nearer 4096 than 64.
    assert at_mix(measured, {4: 100, 256: 300, 2048: 100}) == pytest.approx((10.0 * 100 + 1.0 * 300 + 0.1 * 100) / 500)
    assert at_mix({}, {1: 5}) is None and at_mix(measured, {}) is None
