"""`--parallel auto`: a width only where calibration measured it saving both wall time and energy."""

from __future__ import annotations

import pytest

from tasks.calibrate_parallel import widths_to_try
from thresholds.parallel import ParallelCalibration, WidthTrial, parallel_width, requested_width, threads_per_worker


def _table(cores: int, trials: dict[int, tuple[float, float, float, float]], losses: int = 0) -> ParallelCalibration:
    """width -> (serial wall s, serial J, parallel wall s, parallel J)."""
    return ParallelCalibration(
        machine="test",
        workload="mnist1d",
        cores=cores,
        meter="replay",
        idle_power_w=5.0,
        epochs_per_job=3,
        serial={w: WidthTrial(workers=1, threads_per_worker=cores, wall_s=t[0], energy_j=t[1]) for w, t in trials.items()},
        parallel={w: WidthTrial(workers=w, threads_per_worker=cores // w, wall_s=t[2], energy_j=t[3], repeats=3, losses=losses) for w, t in trials.items()},
    )


@pytest.mark.parametrize(
    ("cores", "trials", "width", "threads"),
    [
        (2, {2: (2.3, 64.4, 3.8, 103.3)}, 1, 2),  # the measurement: slower and costlier -> serial
        (2, {2: (4.0, 100.0, 2.5, 90.0)}, 2, 1),  # faster and cheaper -> parallel
        (2, {2: (4.0, 100.0, 2.5, 100.5)}, 1, 2),  # faster but costlier -> serial
        (2, {2: (4.0, 100.0, 4.2, 95.0)}, 1, 2),  # cheaper but slower -> serial
        (2, {2: (4.0, 100.0, 4.0, 100.0)}, 1, 2),  # no difference -> serial
        (8, {2: (4.0, 100.0, 2.5, 95.0), 4: (8.0, 200.0, 3.0, 150.0), 8: (16.0, 400.0, 3.0, 390.0)}, 4, 2),  # lowest energy ratio
        (8, {2: (4.0, 100.0, 2.5, 75.0), 4: (8.0, 200.0, 3.0, 150.0)}, 4, 2),  # equal energy ratio: the faster
        (8, {2: (4.0, 100.0, 0.0, 75.0)}, 1, 8),  # a zero wall time cannot be judged
        (4, {2: (4.0, 0.0, 2.0, 0.0)}, 1, 4),  # null meter: no energy saving can be shown
    ],
)
def test_auto_picks_only_a_width_that_saved_both_time_and_energy(
    cores: int, trials: dict[int, tuple[float, float, float, float]], width: int, threads: int
) -> None:
    table = _table(cores, trials)
    choice = parallel_width(table, None, cores)
    assert (choice.width, choice.threads_per_worker) == (width, threads), choice.why
    if width > 1:
        assert table.speedup(width) > 1.0 and table.energy_ratio(width) < 1.0  # type: ignore[operator]
    else:
        assert choice.why.startswith("serial")


def test_a_saving_on_average_that_lost_one_paired_repeat_is_not_trusted() -> None:
    table = _table(2, {2: (4.0, 100.0, 2.5, 90.0)}, losses=1)
    choice = parallel_width(table, None, 2)
    assert choice.width == 1 and "lost 1 of 3 paired repeats" in choice.why


def test_forced_and_unmeasured_widths() -> None:
    assert parallel_width(None, 3, cores=16).model_dump() == {"width": 3, "threads_per_worker": 5, "why": "forced by --parallel 3"}
    assert parallel_width(None, 1, cores=16).width == 1
    assert parallel_width(None, None, cores=16).width == 1
    assert "one core" in parallel_width(_table(1, {}), None, cores=1).why


@pytest.mark.parametrize(("value", "expected"), [("auto", None), ("AUTO", None), ("4", 4), (4, 4), ("1", 1), ("64", 64)])
def test_requested_width_accepts(value: object, expected: int | None) -> None:
    assert requested_width(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0", "65", "-2", "two", "", "2.5"])
def test_requested_width_rejects_with_the_value_named(value: str) -> None:
    with pytest.raises(ValueError, match="--parallel"):
        requested_width(value)


@pytest.mark.parametrize(("cores", "widths"), [(1, []), (2, [2]), (3, [2, 3]), (4, [2, 4]), (6, [2, 4, 6]), (16, [2, 4, 8]), (64, [2, 4, 8])])
def test_widths_tried_fill_the_cores(cores: int, widths: list[int]) -> None:
    assert widths_to_try(cores) == widths
    assert all(threads_per_worker(cores, w) * w <= cores for w in widths)
