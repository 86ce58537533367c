"""Calibration is kept per machine: a loop with a fresh work dir reads it instead of measuring again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.energy_loop.calibrate import calibrate, machine_cache_dir
from tasks.meters.simple import FixedPowerMeter, ReplayMeter


def test_a_fresh_work_dir_reads_the_machine_wide_calibration(tmp_path: Path) -> None:
    shared = tmp_path / "machine"
    first = calibrate(
        FixedPowerMeter(5.0), tmp_path / "work-a", batch_size=256, window_s=0.02, repeats=1, shared_dir=shared
    )
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


def test_each_architecture_is_calibrated_on_itself(tmp_path: Path) -> None:
    """A user's model is probed as itself (its factory, its input shape), under its own cache entry: the
    paper MLP's table says nothing about whether bf16 pays for a Transformer."""
    from tasks.models import factory as models

    transformer = models.ModelSpec(
        factory="examples.transformer_seq:make",
        input_shape=(40, 1),
        out_features=10,
        kwargs={"d_model": 8, "ff_dim": 16},
    )
    mlp = calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=16, window_s=0.01, repeats=1)
    built: list[models.ModelSpec] = []
    real_build = models.build
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "build", lambda spec: built.append(spec) or real_build(spec))
        theirs = calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=16, window_s=0.01, repeats=1, spec=transformer)
    assert built and all(
        spec == transformer for spec in built
    )  # measured on the Transformer, not read from the MLP's entry
    assert len(list(tmp_path.glob("calibration-*.json"))) == 2
    assert set(theirs.inference_ratio) == set(mlp.inference_ratio) == {"int8", "fp16", "bf16"}


def test_a_factory_whose_code_changed_is_calibrated_afresh(tmp_path: Path) -> None:
    """Same factory name and arguments, different layers (the user edited the model): a new entry, not the old table."""
    from tasks.models import factory as models

    spec = models.ModelSpec(
        factory="examples.transformer_seq:make",
        input_shape=(40, 1),
        out_features=10,
        kwargs={"d_model": 8, "ff_dim": 16},
    )
    calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=16, window_s=0.01, repeats=1, spec=spec)
    real_build = models.build
    edited = spec.model_copy(update={"kwargs": {"d_model": 8, "ff_dim": 24}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "build", lambda s: real_build(edited if s == spec else s))
        calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=16, window_s=0.01, repeats=1, spec=spec)
        assert len(list(tmp_path.glob("calibration-*.json"))) == 2
        # Unchanged since: read back, nothing measured (a meter that fails every window would raise).
        failing = ReplayMeter([float("nan")], source=FixedPowerMeter(5.0).source)
        calibrate(failing, tmp_path, batch_size=16, spec=spec)
    assert len(list(tmp_path.glob("calibration-*.json"))) == 2


def test_a_slow_precision_is_probed_with_few_calls() -> None:
    """A call longer than the windows: one warm-up call and one per window, not the ten and three a fast call gets."""
    import time

    from tasks.energy_loop.calibrate import _energy_per_call

    slow: list[float] = []
    _energy_per_call(FixedPowerMeter(5.0), lambda: slow.append(time.sleep(0.03) or 0.0), window_s=0.01, repeats=3)
    fast: list[float] = []
    _energy_per_call(FixedPowerMeter(5.0), lambda: fast.append(0.0), window_s=0.01, repeats=3)
    assert len(slow) == 1 + 3
    assert len(fast) >= 10 + 3


def test_a_probe_begins_no_window_past_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A precision that takes seconds per call: one warm-up call and one window, not three."""
    import time

    from tasks.energy_loop import calibrate as calibration

    monkeypatch.setattr(calibration, "PROBE_BUDGET_S", 0.05)
    calls: list[float] = []
    calibration._energy_per_call(
        FixedPowerMeter(5.0), lambda: calls.append(time.sleep(0.04) or 0.0), window_s=0.01, repeats=3
    )
    assert len(calls) == 1 + 1  # a second window would end past 0.05 s
