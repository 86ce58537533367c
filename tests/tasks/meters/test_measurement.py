"""Issue-4 measurement: RAPL on a fake powercap tree, the analytic estimate by hand, replayed
traces, repeated windows and noise-aware comparisons."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import pytest
import torch

from tasks.data.datasets import load_cached, prepare
from tasks.meters import analytic
from tasks.meters.base import MeterError
from tasks.meters.rapl import RaplMeter, counter_delta_uj, discover
from tasks.meters.simple import ReplayMeter
from tasks.meters.stats import Repeated, repeat_until_stable
from tasks.models import factory as models
from tasks.models.evaluate import Repeats, Window, measure_inference
from tasks.models.train import TrainConfig, fit
from thresholds.core import significantly_less


def _zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 1_000_000)
    _zone(root, "intel-rapl:0/intel-rapl:0:0", "core", 500_000)
    _zone(root, "intel-rapl:0/intel-rapl:0:1", "dram", 200_000)
    _zone(root, "intel-rapl:1", "psys", 9_000_000)
    return root


def test_rapl_sums_packages_and_dram_but_not_core_or_psys(powercap: Path) -> None:
    zones, status = discover(powercap)
    assert [z.name for z in zones] == ["package-0", "dram"]
    assert status == "available: package-0, dram"
    meter = RaplMeter(powercap)
    with meter.window("w") as w:
        (powercap / "intel-rapl:0" / "energy_uj").write_text("3500000\n")
        (powercap / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").write_text("700000\n")
    assert w.measurement.energy_j == pytest.approx(3.0)  # 2.5 J package + 0.5 J dram
    assert w.measurement.estimated is False
    assert w.measurement.details == {"package-0_j": "2.5000", "dram_j": "0.5000"}


def test_rapl_counter_wrap_around(powercap: Path) -> None:
    pkg = powercap / "intel-rapl:0"
    (pkg / "max_energy_range_uj").write_text("4000000\n")
    (pkg / "energy_uj").write_text("3900000\n")
    meter = RaplMeter(powercap)
    with meter.window("w") as w:
        (pkg / "energy_uj").write_text("100000\n")  # wrapped: 0.1 J to the top, 0.1 J after
    assert w.measurement.energy_j == pytest.approx(0.2)
    assert counter_delta_uj(10, 30, 100) == 20
    assert counter_delta_uj(90, 10, 100) == 20


def test_rapl_absent_and_unreadable(tmp_path: Path, powercap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zones, status = discover(tmp_path / "missing")
    assert zones == [] and "does not exist" in status
    original = Path.read_text

    def deny(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", deny)
    zones, status = discover(powercap)
    assert zones == [] and status.startswith("unreadable: permission denied on") and "energy_uj" in status
    with pytest.raises(MeterError, match="RAPL unreadable"):
        RaplMeter(powercap)


def test_analytic_estimate_of_the_seed_mlp_matches_the_hand_computation() -> None:
    model = models.build(models.ModelSpec(in_features=40, out_features=10))
    # MACs 40*64 + 64*32 + 32*10 = 4928; activations (40+64)+(64+32)+(32+10) = 242; params 5034.
    fp32 = analytic.inference_energy(model, "fp32", batch_size=1024)
    assert fp32.compute_j_per_1k == pytest.approx(4928 * (3.7 + 0.9) * 1000 * 1e-12)  # 2.26688e-5 J
    assert fp32.memory_j_per_1k == pytest.approx((242 * 5.0 * 1000 + 5034 * 640.0 * 1000 / 1024) * 1e-12)
    assert fp32.energy_j_per_1k == pytest.approx(2.702505e-5)
    int8 = analytic.inference_energy(model, "int8", batch_size=1024)
    assert int8.energy_j_per_1k == pytest.approx(2.2225025e-6)  # 1.13344e-6 + 3.025e-7 + 7.865625e-7
    assert fp32.table == "horowitz-isscc2014-45nm"
    with pytest.raises(ValueError, match="expected one of"):
        analytic.inference_energy(model, "int4", 1024)


def test_replay_meter_from_a_csv_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp_s,energy_j\n0.0,100.0\n1.0,103.5\n2.0,104.0\n")
    meter = ReplayMeter.from_csv(trace)
    readings = []
    for _ in range(2):
        with meter.window("w") as w:
            pass
        readings.append(w.measurement.energy_j)
    assert readings == [3.5, 0.5]
    assert meter.source == "replay:trace.csv"
    backwards = tmp_path / "back.csv"
    backwards.write_text("timestamp_s,energy_j\n0.0,100.0\n1.0,90.0\n")
    with pytest.raises(MeterError, match="expected a finite number >= 0"):
        with ReplayMeter.from_csv(backwards).window("w"):
            pass
    unordered = tmp_path / "unordered.csv"
    unordered.write_text("timestamp_s,energy_j\n1.0,1.0\n0.5,2.0\n")
    with pytest.raises(ValueError, match="increasing timestamps"):
        ReplayMeter.from_csv(unordered)


def test_training_energy_is_recorded_per_epoch(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    model = models.build(models.ModelSpec(in_features=data.n_features, out_features=data.out_features))
    report = fit(model, data, TrainConfig(max_epochs=4, early_stopping=False), meter=ReplayMeter([1.0, 2.0]))
    assert report.epoch_energy_j == [1.0, 2.0, 1.0, 2.0]
    assert report.energy_j == 6.0
    # robust std (1.4826 x median absolute deviation 0.5) x sqrt(4 epochs)
    assert report.energy_sem_j == pytest.approx(1.4826 * 0.5 * 2)


def test_short_epochs_share_a_training_window_and_split_its_energy_by_wall_time(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    model = models.build(models.ModelSpec(in_features=data.n_features, out_features=data.out_features))
    # One window for the whole run (a second would read 100 J more): every epoch gets a share, by its wall time.
    report = fit(
        model,
        data,
        TrainConfig(max_epochs=5, early_stopping=False, energy_window_s=3_600),
        meter=ReplayMeter([6.0, 100.0]),
    )
    assert len(report.epoch_energy_j) == 5 and report.energy_j == pytest.approx(6.0)
    assert all(e > 0 for e in report.epoch_energy_j)
    # Early stopping closes the open window at the epoch it stops.
    stopped = fit(
        model,
        data,
        TrainConfig(max_epochs=50, patience=1, min_delta_pct=99, energy_window_s=3_600),
        meter=ReplayMeter([6.0, 100.0]),
    )
    assert (
        stopped.stopped_early
        and len(stopped.epoch_energy_j) == stopped.epochs_run
        and stopped.energy_j == pytest.approx(6.0)
    )


def test_inference_windows_repeat_until_stable(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    model = models.build(models.ModelSpec(in_features=data.n_features, out_features=data.out_features)).eval()
    # A negligible window length makes every window exactly `min_batches` (20) batches.
    steady = measure_inference(model, data, ReplayMeter([2.0]), 64, Window(min_s=1e-9), Repeats(3, 10))
    assert steady.repeats == 3 and steady.energy_sem_j_per_1k == 0.0
    assert steady.energy_j_per_1k == pytest.approx(2.0 / (20 * 64) * 1000)
    noisy = measure_inference(model, data, ReplayMeter([1.0, 3.0]), 64, Window(min_s=1e-9), Repeats(2, 5))
    assert noisy.repeats == 5 and noisy.energy_sem_j_per_1k > 0


def test_repeat_until_stable_and_its_statistics() -> None:
    values = iter([10.0, 10.1, 9.9, 10.0, 50.0])
    got = repeat_until_stable(lambda: next(values), min_repeats=2, max_repeats=5, target_rel_ci=0.05)
    # Two windows never suffice here (t quantile 12.7 at 1 dof); the third brings the CI under 5 %.
    assert got.values == (10.0, 10.1, 9.9)
    r = Repeated((1.0, 2.0, 3.0))
    assert r.mean == 2.0 and r.std == 1.0 and r.sem == pytest.approx(1 / math.sqrt(3))
    assert r.ci95 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert Repeated((5.0,)).ci95 == math.inf
    with pytest.raises(ValueError, match="min_repeats"):
        repeat_until_stable(lambda: 1.0, 3, 2, 0.1)


@pytest.mark.parametrize(
    ("a", "a_err", "b", "b_err", "sigmas", "less"),
    [
        (0.8, 0.0, 1.0, 0.0, 2.0, True),  # exact figures: any gap counts
        (0.9, 0.05, 1.0, 0.05, 2.0, False),  # gap 0.1 < 2 x 0.0707
        (0.8, 0.05, 1.0, 0.05, 2.0, True),  # gap 0.2 > 0.141
        (0.8, 0.05, 1.0, 0.05, 3.0, False),  # gap 0.2 < 0.212
        (1.0, 0.0, 1.0, 0.0, 0.0, False),  # equal is never less
    ],
)
def test_significantly_less(a: float, a_err: float, b: float, b_err: float, sigmas: float, less: bool) -> None:
    assert significantly_less(a, a_err, b, b_err, sigmas) is less


def test_pruned_model_analytic_estimate_drops_with_width() -> None:
    spec = models.ModelSpec(in_features=40, out_features=10)
    model = models.build(spec)
    before = analytic.inference_energy(model, "fp32", 256).energy_j_per_1k
    from tasks.compression import prune as compress

    pruned, pruned_spec = compress.prune(model, spec, 0.5)
    after = analytic.inference_energy(pruned, "fp32", 256).energy_j_per_1k
    assert after < 0.5 * before
    # The estimate reads the pruned layers themselves: the same as a model built at the pruned widths.
    assert analytic.layer_shapes(pruned) == [(40, 32), (32, 16), (16, 10)]
    assert after == pytest.approx(analytic.inference_energy(models.build(pruned_spec), "fp32", 256).energy_j_per_1k)


def test_representative_subset_is_stratified_and_deterministic() -> None:
    from tasks.models.evaluate import representative_subset

    y = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    idx = representative_subset(y, 20, seed=3)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert counts == [16, 3, 1]  # proportional, every class present
    assert torch.equal(idx, representative_subset(y, 20, seed=3))
    assert len(representative_subset(y, 0)) == 100 and len(representative_subset(y, 1000)) == 100


def test_accuracy_bound_of_a_subset() -> None:
    from tasks.models.evaluate import accuracy_bound95

    # p = 0.9 on 100 of 1000: 1.96 * sqrt(0.09 / 100) * sqrt(900 / 999)
    assert accuracy_bound95(0.9, 100, 1000) == pytest.approx(1.96 * 0.03 * math.sqrt(900 / 999))
    assert accuracy_bound95(0.9, 1000, 1000) == 0.0
    assert accuracy_bound95(1.0, 50, 1000) > 0  # never a zero-width bound from a perfect subset score


def test_repeats_stop_at_the_time_budget_after_two(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"s": 0.0}
    values = itertools.cycle([1.0, 2.0, 3.0])

    def once() -> float:
        clock["s"] += 2.0
        return next(values)

    monkeypatch.setattr("tasks.meters.stats.time.perf_counter", lambda: clock["s"])
    got = repeat_until_stable(once, min_repeats=3, max_repeats=50, target_rel_ci=0.01, budget_s=7.0)
    assert got.n == 3 and clock["s"] == 6.0  # a fourth call would end at 8 s
    clock["s"] = 0.0
    assert repeat_until_stable(once, min_repeats=3, max_repeats=50, target_rel_ci=0.01, budget_s=1.0).n == 2


class _Slow(torch.nn.Module):
    """A model whose every call takes `call_s` (a big model at a big batch size)."""

    def __init__(self, call_s: float) -> None:
        super().__init__()
        self.call_s = call_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.call_s)
        return x


def test_a_slow_models_window_holds_the_calls_that_fit_not_twenty(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    started = time.perf_counter()
    report = measure_inference(_Slow(0.05), data, ReplayMeter([1.0]), 64, Window(min_s=0.1, fill_s=0.1), Repeats(2, 2))
    elapsed_s = time.perf_counter() - started
    calls = report.samples // 64
    assert 2 * 2 <= calls <= 2 * 4  # two windows of 0.1 s: two or three calls each (twenty before)
    assert elapsed_s < 1.0  # one warm-up call: the warm-up stops at fill_s too
