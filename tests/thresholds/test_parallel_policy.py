"""`--parallel auto`: a width only where calibration measured it saving both wall time and energy beyond the noise."""

from __future__ import annotations

import pytest

from tasks.energy_loop.calibrate_parallel import widths_to_try
from thresholds.parallel import (
    ParallelCalibration,
    WidthTrial,
    parallel_width,
    requested_width,
    saving_beyond_noise,
    threads_per_worker,
)

Runs = tuple[list[float], list[float], list[float], list[float]]  # serial wall s, serial J, parallel wall s, parallel J


def _table(
    cores: int, trials: dict[int, Runs], startup: dict[int, tuple[float, float]] | None = None, per_loop: int = 8
) -> ParallelCalibration:
    startup = startup or {}
    return ParallelCalibration(
        machine="test",
        workload="mnist1d",
        cores=cores,
        meter="replay",
        idle_power_w=5.0,
        epochs_per_job=3,
        candidates_per_loop=per_loop,
        serial={
            w: WidthTrial(workers=1, threads_per_worker=cores, wall_s_runs=t[0], energy_j_runs=t[1])
            for w, t in trials.items()
        },
        parallel={
            w: WidthTrial(workers=w, threads_per_worker=cores // w, wall_s_runs=t[2], energy_j_runs=t[3])
            for w, t in trials.items()
        },
        startup_s={w: s[0] for w, s in startup.items()},
        startup_j={w: s[1] for w, s in startup.items()},
    )


FAST = [4.0, 4.1, 3.9, 4.0]
FAST_J = [100.0, 101.0, 99.0, 100.0]


@pytest.mark.parametrize(
    ("cores", "trials", "startup", "width", "why"),
    [
        # the measurement, repeated: slower and costlier -> serial
        (
            2,
            {2: ([2.3, 2.4, 2.2, 2.3], [64.4, 65.0, 63.8, 64.4], [3.8, 3.9, 3.7, 3.8], [103.3, 104.0, 102.5, 103.3])},
            None,
            1,
            "time more than serial",
        ),
        # faster and cheaper in every run, well beyond the noise -> parallel
        (2, {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [80.0, 81.0, 79.0, 80.0])}, None, 2, "2 workers: measured"),
        # faster but costlier -> serial
        (
            2,
            {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [104.0, 105.0, 103.0, 104.0])},
            None,
            1,
            "energy more than serial",
        ),
        # cheaper but slower -> serial
        (2, {2: (FAST, FAST_J, [4.3, 4.4, 4.2, 4.3], [80.0, 81.0, 79.0, 80.0])}, None, 1, "time more than serial"),
        # faster and cheaper on average, but one parallel run above a serial one -> serial
        (
            2,
            {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [80.0, 81.0, 79.0, 99.5])},
            None,
            1,
            "energy not below serial in every run",
        ),
        # noise: a small saving inside two standard errors of runs that scatter -> serial
        (
            2,
            {2: ([4.0, 5.0, 3.0, 4.0], [100.0, 130.0, 90.0, 100.0], [3.6, 3.7, 3.5, 3.6], [89.0, 89.5, 88.0, 88.5])},
            None,
            1,
            "standard errors: noise",
        ),
        # a clear saving that the workers' start-up eats: 20 s start-up, 2 of 8 candidates' share = 5 s, 100 J -> serial
        (
            2,
            {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [80.0, 81.0, 79.0, 80.0])},
            {2: (20.0, 400.0)},
            1,
            "time more than serial",
        ),
        # a saving below min_gain_pct (3 %) though beyond the noise -> serial
        (
            2,
            {
                2: (
                    [4.0, 4.01, 3.99, 4.0],
                    [100.0, 100.2, 99.8, 100.0],
                    [3.9, 3.91, 3.89, 3.9],
                    [98.0, 98.1, 97.9, 98.0],
                )
            },
            None,
            1,
            "< 3 %",
        ),
        # several widths that pay: the lowest energy ratio wins
        (
            8,
            {
                2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [90.0, 91.0, 89.0, 90.0]),
                4: (FAST, FAST_J, [2.0, 2.1, 1.9, 2.0], [70.0, 71.0, 69.0, 70.0]),
            },
            None,
            4,
            "4 workers: measured",
        ),
        # one run a side: the noise cannot be judged -> serial
        (2, {2: ([4.0], [100.0], [2.0], [50.0])}, None, 1, "noise is unknown"),
        # null meter: no energy saving can be shown -> serial
        (4, {2: (FAST, [0.0] * 4, [2.0] * 4, [0.0] * 4)}, None, 1, "no time or energy reading"),
    ],
)
def test_auto_picks_only_a_width_that_saved_both_time_and_energy_beyond_the_noise(
    cores: int, trials: dict[int, Runs], startup: dict[int, tuple[float, float]] | None, width: int, why: str
) -> None:
    table = _table(cores, trials, startup)
    choice = parallel_width(table, None, cores, sigmas=2.0, min_gain_pct=3.0)
    assert choice.width == width, choice.why
    assert why in choice.why
    if width > 1:
        assert choice.threads_per_worker == cores // width
        assert table.speedup(width) > 1.0 and table.energy_ratio(width) < 1.0  # type: ignore[operator]
    else:
        assert choice.why.startswith("serial") and choice.threads_per_worker == cores  # serial: torch on every core


def test_a_calibration_measured_beside_other_processes_picks_serial() -> None:
    trials = {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [80.0, 81.0, 79.0, 80.0])}
    table = _table(2, trials)
    assert parallel_width(table, None, 2).width == 2  # alone: a clear saving
    busy = table.model_copy(update={"busy_elsewhere_cores": 0.8})  # other jobs held 0.8 of the 2 cores
    assert busy.shared_machine()
    choice = parallel_width(busy, None, 2)
    assert choice.width == 1 and "0.80 of 2 cores busy" in choice.why
    assert not table.model_copy(update={"busy_elsewhere_cores": 0.4}).shared_machine()  # a fifth: still fair


def test_the_start_up_is_spread_over_the_candidates_a_loop_trains() -> None:
    trials = {2: (FAST, FAST_J, [2.5, 2.6, 2.4, 2.5], [80.0, 81.0, 79.0, 80.0])}
    # 4 s and 40 J of start-up: a rung of 2 of 8 candidates carries a quarter (1 s, 10 J) and still saves ...
    spread = _table(2, trials, {2: (4.0, 40.0)}, per_loop=8)
    assert spread.startup_share(2) == pytest.approx(0.25)
    assert spread.speedup(2) == pytest.approx(4.0 / 3.5) and spread.energy_ratio(2) == pytest.approx(90.0 / 100.0)
    assert parallel_width(spread, None, 2).width == 2
    # ... but a loop of 2 candidates pays all of it in its one rung: slower than serial.
    alone = _table(2, trials, {2: (4.0, 40.0)}, per_loop=2)
    assert alone.startup_share(2) == 1.0
    assert parallel_width(alone, None, 2).width == 1


@pytest.mark.parametrize(
    ("serial", "parallel", "expected"),
    [
        ([10.0, 10.0], [5.0, 5.0], None),
        ([10.0, 10.0], [10.0, 10.0], "more than serial"),
        ([10.0, 12.0], [9.0, 11.0], "not below serial in every run"),
        ([10.0], [5.0, 5.0], "noise is unknown"),
    ],
)
def test_saving_beyond_noise(serial: list[float], parallel: list[float], expected: str | None) -> None:
    verdict = saving_beyond_noise(serial, parallel, sigmas=2.0, min_gain_pct=0.0)
    assert verdict == expected if expected is None else expected in (verdict or "")


def test_forced_and_unmeasured_widths() -> None:
    assert parallel_width(None, 3, cores=16).model_dump() == {
        "width": 3,
        "threads_per_worker": 5,
        "why": "forced by --parallel 3",
    }
    assert parallel_width(None, 1, cores=16).width == 1
    assert parallel_width(None, None, cores=16).width == 1
    assert "one core" in parallel_width(_table(1, {}), None, cores=1).why


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", None), ("AUTO", None), ("4", 4), (4, 4), ("1", 1), ("64", 64)]
)
def test_requested_width_accepts(value: object, expected: int | None) -> None:
    assert requested_width(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0", "65", "-2", "two", "", "2.5"])
def test_requested_width_rejects_with_the_value_named(value: str) -> None:
    with pytest.raises(ValueError, match="--parallel"):
        requested_width(value)


@pytest.mark.parametrize(
    ("cores", "widths"), [(1, []), (2, [2]), (3, [2, 3]), (4, [2, 4]), (6, [2, 4, 6]), (16, [2, 4, 8]), (64, [2, 4, 8])]
)
def test_widths_tried_fill_the_cores(cores: int, widths: list[int]) -> None:
    assert widths_to_try(cores) == widths
    assert all(threads_per_worker(cores, w) * w <= cores for w in widths)
