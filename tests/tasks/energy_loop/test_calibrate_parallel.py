"""The parallel calibration on a machine other processes keep busy: serial at once, nothing cached."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import tasks.energy_loop.calibrate_parallel as cal
from tasks.data import datasets as data_mod
from tasks.meters.simple import FixedPowerMeter
from tests.conftest import FIXTURES
from thresholds.energy.schema import load_scenario
from thresholds.parallel import parallel_width


def test_a_busy_machine_is_not_calibrated_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenario(FIXTURES / "quick.yaml")
    data_path = str(data_mod.prepare("iris", tmp_path / "data", seed=scenario.training.seed))
    ticks = itertools.count(
        0.0, 1000.0
    )  # every read, the machine did 1000 more busy CPU seconds: other processes' work
    monkeypatch.setattr(cal, "machine_busy_cpu_s", lambda: next(ticks))
    monkeypatch.setattr(cal, "cores", lambda: 2)

    def never(**_: object) -> None:
        raise AssertionError("a busy machine must not train probe candidates")

    table = cal.calibrate_parallel(FixedPowerMeter(20.0), scenario, data_path, never, "fixed-power", tmp_path / "cache")  # type: ignore[arg-type]
    assert table.shared_machine() and table.busy_elsewhere_cores > 0.5
    assert table.serial == {} and table.parallel == {}
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # measured again next time
    choice = parallel_width(table, None, 2)
    assert choice.width == 1 and "cores busy while calibrating" in choice.why
