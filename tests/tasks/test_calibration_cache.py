"""Calibration is kept per machine: a loop with a fresh work dir reads it instead of measuring again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.calibrate import calibrate, machine_cache_dir
from tasks.energy.simple import FixedPowerMeter, ReplayMeter


def test_a_fresh_work_dir_reads_the_machine_wide_calibration(tmp_path: Path) -> None:
    shared = tmp_path / "machine"
    first = calibrate(FixedPowerMeter(5.0), tmp_path / "work-a", batch_size=256, window_s=0.02, repeats=1, shared_dir=shared)
    assert len(list(shared.glob("calibration-*.json"))) == 1
    # A meter that would fail every window proves nothing is measured: the shared table is read and copied.
    failing = ReplayMeter([float("nan")], source=FixedPowerMeter(5.0).source)
    again = calibrate(failing, tmp_path / "work-b", batch_size=256, shared_dir=shared)
    assert again == first and len(list((tmp_path / "work-b").glob("calibration-*.json"))) == 1


def test_machine_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENERGY_LOOP_CACHE_DIR", str(tmp_path / "here"))
    assert machine_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("ENERGY_LOOP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine_cache_dir() == tmp_path / "xdg" / "energy-loop"
