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


def test_a_size_is_timed_again_until_its_call_fits() -> None:
    """Calls are not linear in the batch: 256 rows cost a third more per row than 4096 here."""
    per_row_s = {4096: 1.6 / 4096, 256: 0.14 / 256, 128: 0.06 / 128}
    timed: list[int] = []

    def time_call(b: int) -> float:
        timed.append(b)
        return per_row_s[b] * b

    fit = fit_size(time_call, 4096, 0.1)
    assert (fit.asked, fit.asked_call_s, fit.chosen) == (4096, pytest.approx(1.6), 128) and timed == [4096, 256, 128]
    assert fit_size(lambda b: 0.01, 512, 0.1).chosen == 512
    line = fit_summary([fit], 1.0, 0.1)
    assert "batch 128, not 4096" in line and "1.60 s" in line and "\n" not in line


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
