"""Paired (ABBA) measurement: order, the log-ratio estimator and its interval, drift cancelling,
and the inference windows of two models interleaved on a replayed meter with known energies."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import pytest

from tasks.data.datasets import load_cached, prepare
from tasks.meters.paired import AcrossSizes, PairedRatio, abba_order, measure_paired
from tasks.meters.simple import ReplayMeter
from tasks.meters.stats import t_quantile_975
from tasks.models import factory as models
from tasks.models.evaluate import Repeats, Window, across_sizes, measure_inference, measure_inference_paired


def test_abba_order_alternates_in_whole_blocks() -> None:
    assert abba_order(2) == list("ABBA")
    assert abba_order(3) == list("ABBAABBA")


def test_ratio_is_the_geometric_mean_of_the_pairs_with_a_t_interval() -> None:
    pairs = PairedRatio(reference=(2.0, 2.0, 4.0, 1.0), candidate=(1.0, 1.2, 1.6, 0.6))
    logs = [math.log(0.5), math.log(0.6), math.log(0.4), math.log(0.6)]
    assert pairs.n == 4
    assert pairs.ratio == pytest.approx(math.exp(statistics.fmean(logs)))
    assert pairs.log_sem == pytest.approx(statistics.stdev(logs) / 2)
    low, high = pairs.ci95
    half = t_quantile_975(3) * statistics.stdev(logs) / 2
    assert (low, high) == pytest.approx(
        (math.exp(statistics.fmean(logs) - half), math.exp(statistics.fmean(logs) + half))
    )
    assert low < pairs.ratio < high


def test_from_ten_pairs_a_pair_far_out_is_trimmed_and_the_error_is_yuens() -> None:
    """A sampled-load meter puts a pair far out now and then: it must not move the ratio the gates judge."""
    logs = [-0.04, -0.03, -0.02, -0.01, 0.0, 0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.40]  # one outlier among 12 pairs
    pairs = PairedRatio(reference=(1.0,) * len(logs), candidate=tuple(math.exp(x) for x in logs))
    kept = sorted(logs)[1:-1]  # 10 % of 12 is one pair at each end
    assert pairs.ratio == pytest.approx(math.exp(statistics.fmean(kept)))
    assert abs(math.log(pairs.ratio)) < 0.01 < statistics.fmean(logs) - 0.02  # the plain mean reads 3.7 %
    winsor = [-0.03, -0.03, -0.02, -0.01, 0.0, 0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.05]
    assert pairs.log_sem == pytest.approx(statistics.stdev(winsor) * math.sqrt(12) / 10)
    assert pairs.log_ci95 == pytest.approx(t_quantile_975(9) * pairs.log_sem)
    assert pairs.log_sem < statistics.stdev(logs) / math.sqrt(12) / 2
    nine = PairedRatio(
        reference=(1.0,) * 9, candidate=tuple(math.exp(x) for x in logs[3:])
    )  # below 10 pairs: the plain mean
    assert nine.ratio == pytest.approx(math.exp(statistics.fmean(logs[3:])))
    assert AcrossSizes((pairs,)).log_sem == pytest.approx(pairs.log_sem) and AcrossSizes((pairs,)).dof == 9


def test_abba_cancels_a_drift_that_separate_measurements_would_read_as_a_difference() -> None:
    """The machine gets 5 % more expensive every window; the candidate truly costs half the reference."""
    clock = itertools.count()

    def window(true_j: float) -> float:
        return true_j * math.exp(0.05 * next(clock))

    paired = measure_paired(lambda: window(2.0), lambda: window(1.0), pairs_min=4, pairs_max=4, target_rel_ci=0.0)
    assert paired.n == 4
    assert paired.ratio == pytest.approx(0.5)  # exact: a trend linear in log energy cancels in every ABBA block
    # Measured one after the other (4 reference windows, then 4 candidate windows), the drift reads as a 22 % error.
    clock = itertools.count()
    refs = [window(2.0) for _ in range(4)]
    cands = [window(1.0) for _ in range(4)]
    assert statistics.fmean(cands) / statistics.fmean(refs) == pytest.approx(0.5 * math.exp(0.2), rel=1e-6)


def test_pairs_stop_once_the_interval_is_tight_and_never_beyond_the_maximum() -> None:
    steady = measure_paired(lambda: 2.0, lambda: 1.5, pairs_min=2, pairs_max=20, target_rel_ci=0.05)
    assert steady.n == 2 and steady.ratio == pytest.approx(0.75) and steady.ci95 == pytest.approx((0.75, 0.75))
    noise = itertools.cycle([1.0, 1.4, 0.8, 1.2, 0.9])
    noisy = measure_paired(lambda: 2.0, lambda: next(noise), pairs_min=2, pairs_max=7, target_rel_ci=0.01)
    assert noisy.n == 7  # an odd maximum ends on a half block (A B)


def test_a_window_without_energy_cannot_be_paired() -> None:
    with pytest.raises(ValueError, match="expected a positive energy"):
        measure_paired(lambda: 1.0, lambda: 0.0, pairs_min=2, pairs_max=4, target_rel_ci=0.05)
    with pytest.raises(ValueError, match="pairs_min"):
        measure_paired(lambda: 1.0, lambda: 1.0, pairs_min=3, pairs_max=2, target_rel_ci=0.05)


def test_two_models_measured_in_interleaved_windows_on_a_replayed_meter(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    spec = models.ModelSpec(in_features=data.n_features, out_features=data.out_features)
    reference, candidate = models.build(spec).eval(), models.build(spec).eval()
    # Windows in ABBA order read reference 4 J, candidate 3 J, candidate 3.3 J, reference 4.4 J, ...: a 10 % drift per
    # block.
    meter = ReplayMeter([4.0, 3.0, 3.3, 4.4])
    mine, theirs, paired = measure_inference_paired(
        candidate, reference, data, meter, 64, Window(min_s=1e-9), Repeats(4, 4)
    )
    assert paired.n == 4 and paired.ratio == pytest.approx(0.75)
    assert paired.ci95 == pytest.approx((0.75, 0.75))
    per_1k = 1000 / (20 * 64)  # a negligible window length makes every window exactly 20 batches
    assert mine.energy_j_per_1k == pytest.approx(statistics.fmean([3.0, 3.3]) * per_1k) and mine.repeats == 4
    assert theirs.energy_j_per_1k == pytest.approx(statistics.fmean([4.0, 4.4]) * per_1k)
    assert mine.total_energy_j == pytest.approx(2 * (3.0 + 3.3)) and theirs.total_energy_j == pytest.approx(
        2 * (4.0 + 4.4)
    )


def test_one_serving_size_judges_exactly_as_before_and_several_take_the_geometric_mean() -> None:
    b1 = PairedRatio(reference=(2.0, 2.0, 4.0, 1.0), candidate=(1.0, 1.2, 1.6, 0.6))
    alone = AcrossSizes((b1,))
    assert (alone.n, alone.ratio, alone.log_sem, *alone.ci95) == pytest.approx((b1.n, b1.ratio, b1.log_sem, *b1.ci95))
    b64 = PairedRatio(reference=(1.0, 1.0), candidate=(0.9, 1.0))
    both = AcrossSizes((b1, b64))
    assert both.n == 6 and both.worst == pytest.approx(b64.ratio)
    assert both.ratio == pytest.approx(math.sqrt(b1.ratio * b64.ratio))
    deviations = [r - statistics.fmean(part.log_ratios) for part in (b1, b64) for r in part.log_ratios]
    pooled_variance = sum(d * d for d in deviations) / (
        3 + 1
    )  # pooled over the sizes: (4 - 1) + (2 - 1) degrees of freedom
    assert both.log_sem == pytest.approx(math.sqrt(pooled_variance * (1 / 4 + 1 / 2)) / 2)
    assert both.log_ci95 == pytest.approx(t_quantile_975(4) * both.log_sem)
    low, high = both.ci95
    assert low < both.ratio < high


def test_reports_at_several_serving_sizes_combine_into_one_figure(tmp_path: Path) -> None:
    data = load_cached(str(prepare("digits", tmp_path)))
    model = models.build(models.ModelSpec(in_features=data.n_features, out_features=data.out_features)).eval()
    meter = ReplayMeter([2.0, 2.0, 8.0, 8.0])  # two windows at batch 1, then two at batch 64
    small, large = (measure_inference(model, data, meter, b, Window(1e-9), Repeats(2, 2)) for b in (1, 64))
    assert across_sizes([small]) is small
    both = across_sizes([small, large])
    assert small.energy_j_per_1k == pytest.approx(2.0 / 20 * 1000) and large.energy_j_per_1k == pytest.approx(
        8.0 / (20 * 64) * 1000
    )
    assert both.energy_j_per_1k == pytest.approx(math.sqrt(small.energy_j_per_1k * large.energy_j_per_1k))
    assert both.energy_sem_j_per_1k == 0.0  # every window read the same: no spread
    assert both.latency_ms_per_batch == small.latency_ms_per_batch and both.batch_size == 1
    assert both.repeats == 4 and both.total_energy_j == pytest.approx(20.0)


def test_a_time_budget_ends_the_pairs_after_a_whole_block_whatever_the_noise() -> None:
    """Windows of a slow model: each takes 1 s of the fake clock; a 5 s budget leaves room for one block only (the
    next would end at 8 s), however noisy the ratio."""
    clock = {"s": 0.0}
    noise = itertools.cycle([1.0, 1.4, 0.8, 1.2, 0.9])

    def window(value: float) -> float:
        clock["s"] += 1.0
        return value

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tasks.meters.paired.time.perf_counter", lambda: clock["s"])
        bounded = measure_paired(
            lambda: window(2.0), lambda: window(next(noise)), pairs_min=4, pairs_max=20, target_rel_ci=0.01, budget_s=5
        )
        assert bounded.n == 2 and clock["s"] == 4.0  # one block at least, even below pairs_min
        clock["s"] = 0.0
        longer = measure_paired(
            lambda: window(2.0), lambda: window(next(noise)), pairs_min=2, pairs_max=20, target_rel_ci=0.01, budget_s=12
        )
        assert longer.n == 6 and clock["s"] == 12.0  # three blocks fit exactly; a fourth would end at 16 s
