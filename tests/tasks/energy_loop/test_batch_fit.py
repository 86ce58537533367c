"""The batch sizes the loop measures at: the scenario's where a call fits a share of a window, else the largest
power of two that fits, chosen once before the loop for every candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.data.datasets import load_cached, prepare
from tasks.energy_loop.batch_fit import fit_size, fit_summary, fitted_scenario, suited_batch_size
from thresholds.energy.schema import Scenario


def test_a_call_that_fits_keeps_its_size_and_a_slow_one_falls_to_a_power_of_two() -> None:
    assert suited_batch_size(4096, 0.05, 0.1) == 4096
    assert suited_batch_size(4096, 1.6, 0.1) == 256  # 4096 x 0.1 / 1.6 = 256
    assert suited_batch_size(4096, 1.7, 0.1) == 128  # 241 rows fit: the power of two below
    assert suited_batch_size(1000, 0.3, 0.1) == 256  # 333 fit
    assert suited_batch_size(64, 100.0, 0.1) == 1  # nothing fits: one row at a time


def test_a_size_is_found_from_a_small_call_and_never_by_timing_the_slow_one() -> None:
    """A call costs a fixed overhead plus a cost per row; the scenario's 4096 is never timed when it is slow."""

    def fitted(overhead_s: float, per_row_s: float) -> tuple[int, list[int]]:
        timed: list[int] = []

        def time_call(b: int) -> float:
            timed.append(b)
            return overhead_s + per_row_s * b

        return fit_size(time_call, 4096, 0.1).chosen, timed

    assert fitted(0.002, 0.0004) == (128, [16, 128, 256])  # 245 rows fit: 128, as 256 was timed over
    # Overhead-bound calls (linearly, 4096 rows would take 12.8 s; truly 0.09 s): doubled until the scenario's size.
    assert fitted(0.05, 1e-5) == (4096, [16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
    fit = fit_size(lambda b: 0.01 + 0.0004 * b, 4096, 0.1)
    assert (fit.asked, fit.chosen) == (4096, 128) and fit.asked_call_s == pytest.approx(0.0164 * 256)
    assert fit_size(lambda b: 0.01, 512, 0.1).chosen == 512
    assert fit_size(lambda b: 1.0, 512, 0.1).chosen == 1  # nothing fits: one row at a time
    line = fit_summary([fit], 1.0, 0.1)
    assert "batch 128, not 4096" in line and "4.20 s" in line and "\n" not in line


def test_the_loop_scenario_is_unchanged_where_calls_fit_and_smaller_where_they_do_not(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    fast = Scenario.model_validate({"name": "x", "measurement": {"inference_batch_size": 64, "min_window_s": 10}})
    same, fits = fitted_scenario(fast, data)
    assert same is fast and [f.asked for f in fits] == [64]
    # A window so short that no call fits a share of it: every size falls, and the sizes stay strictly increasing.
    slow = Scenario.model_validate(
        {"name": "x", "measurement": {"serving_batch_sizes": [1, 512, 4096], "min_window_s": 1e-6}}
    )
    fitted, fits = fitted_scenario(slow, data)
    assert fitted.measurement.batch_sizes_served == [1]  # 1, 512 and 4096 all fall to one row
    assert fitted.measurement.inference_batch_size == 1 and slow.measurement.batch_sizes_served == [1, 512, 4096]
    assert {f.asked for f in fits} == {1, 512, 1024, 4096}  # the calibration size (1024) too
