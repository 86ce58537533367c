"""Quality on the test split, and inference energy / latency at a fixed batch size."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from tasks.common.plugins import is_entry_point
from tasks.data.datasets import CachedData, outputs
from tasks.data.images import StreamedSplit
from tasks.meters.base import EnergyMeter, Measurement
from tasks.meters.paired import PairedRatio, measure_paired
from tasks.meters.stats import Repeated, repeat_until_stable
from tasks.models.hooks import resolve
from tasks.models.train import loss_targets


@dataclass(frozen=True)
class Quality:
    accuracy: float | None  # classification, in [0, 1]
    rmse: float | None  # regression, in target units
    loss: float
    samples: int = 0
    accuracy_bound95: float | None = None  # half-width of the 95 % interval when evaluated on a subset


QualityMetric = Literal["accuracy", "balanced_accuracy", "macro_f1"]
# `quality_metric: auto` judges by balanced accuracy when the smallest class has fewer training rows
# than this fraction of the largest: plain accuracy would let a model ignore the small classes.
IMBALANCE_RATIO = 0.5


def resolve_quality_metric(choice: str, data: CachedData, hook: str | None = None) -> tuple[str, str]:
    """The metric the gates judge (stored in the `accuracy` figures) and why: the user's `model.metric`
    (a `PKG.MODULE:FUNCTION`, tasks/models/hooks.py) when set, else a classification metric by `choice`."""
    if hook is not None:
        return hook, "model.metric: yours, in [0, 1], higher is better"
    if data.task != "classification":
        return "accuracy", "regression: judged by RMSE"
    counts = torch.bincount(data.y_train, minlength=data.n_classes)
    smallest, largest = int(counts.min()), int(counts.max())
    ratio = smallest / largest if largest else 1.0
    shape = (
        f"smallest class {data.class_labels[int(counts.argmin())]!r} has {smallest} training rows, {ratio:.0%} of "
        f"the largest's {largest}"
    )
    if choice != "auto":
        return choice, f"set by the scenario ({shape})"
    if ratio < IMBALANCE_RATIO:
        return "balanced_accuracy", f"auto: imbalanced classes ({shape} < {IMBALANCE_RATIO:.0%})"
    return "accuracy", f"auto: balanced enough classes ({shape})"


def quality_tag(metric: str, data: CachedData) -> str:
    """What the `quality_metric` tag says: the judged metric, or `rmse` for a regression judged by RMSE alone."""
    return metric if data.task == "classification" or is_entry_point(metric) else "rmse"


def score(metric: QualityMetric, predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Accuracy, balanced accuracy (mean recall over the classes present) or macro-F1."""
    if metric == "accuracy":
        return (predicted == truth).float().mean().item()
    from sklearn.metrics import balanced_accuracy_score, f1_score

    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(truth.numpy(), predicted.numpy()))
    return float(
        f1_score(truth.numpy(), predicted.numpy(), average="macro", labels=sorted(set(truth.tolist())), zero_division=0)
    )


def representative_subset(y: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of a stratified sample of `size` rows (every class in proportion, at least one each)."""
    if size <= 0 or size >= len(y):
        return torch.arange(len(y))
    generator = torch.Generator().manual_seed(seed)
    if y.dtype.is_floating_point:  # regression: a plain random sample
        return torch.randperm(len(y), generator=generator)[:size].sort().values
    picked = []
    for cls in torch.unique(y):
        rows = torch.nonzero(y == cls).flatten()
        take = max(1, round(size * len(rows) / len(y)))
        picked.append(rows[torch.randperm(len(rows), generator=generator)[:take]])
    return torch.cat(picked).sort().values


def accuracy_bound95(accuracy: float, n: int, population: int) -> float:
    """Normal-approximation 95 % half-width for an accuracy measured on n of `population` samples
    without replacement (finite-population correction): the error bound of the subset."""
    if n >= population:
        return 0.0
    fpc = math.sqrt((population - n) / (population - 1))
    return 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 0.25 / n) / n) * fpc


@dataclass(frozen=True)
class InferenceReport:
    energy_j_per_1k: float  # mean over repeated windows (above idle when idle_power_w is given)
    energy_sem_j_per_1k: float  # standard error of that mean
    energy_ci95_j_per_1k: float
    repeats: int
    latency_ms_per_batch: float
    latency_ms_spread: float  # inter-quartile range of per-batch latencies
    batch_size: int
    samples: int
    total_energy_j: float  # everything the windows read, idle included
    measurement: Measurement  # the last window, for its provenance details


def quality(
    model: nn.Module, data: CachedData, subset: torch.Tensor | None = None, metric: str = "accuracy"
) -> Quality:
    """`metric` (or RMSE) on the test split, or on `subset` of it with its error bound. A `PKG.MODULE:FUNCTION`
    metric (the user's, tasks/models/hooks.py) is the `accuracy` figure of either task, without a bound (its spread is
    unknown)."""
    x, y = (data.x_test, data.y_test) if subset is None else (data.x_test[subset], data.y_test[subset])
    with torch.no_grad():
        out = outputs(model, x)
    hooks = resolve({"metric": metric}) if is_entry_point(metric) else None
    if data.task == "classification":
        loss = nn.functional.cross_entropy(out, y).item()
        if hooks is not None:
            return Quality(accuracy=hooks.metric(out.float(), y), rmse=None, loss=loss, samples=len(y))
        accuracy = score(metric, out.argmax(dim=1), y)  # type: ignore[arg-type]
        bound = accuracy_bound95(accuracy, len(y), len(data.y_test)) if subset is not None else None
        return Quality(accuracy=accuracy, rmse=None, loss=loss, samples=len(y), accuracy_bound95=bound)
    mse = nn.functional.mse_loss(out.squeeze(1), y).item()
    value = None if hooks is None else hooks.metric(out.float(), loss_targets(y, data.task))
    return Quality(accuracy=value, rmse=math.sqrt(mse) * data.target_std, loss=mse, samples=len(y))


def batch_pool(x: torch.Tensor | StreamedSplit, batch_size: int) -> torch.Tensor:
    """Test inputs tiled so every measured batch has exactly `batch_size` rows. Of a streamed split, the first
    `batch_size` x 4 are decoded once: the windows measure the model, never the decoding."""
    if isinstance(x, StreamedSplit):
        x = x[: batch_size * 4]
    reps = max(1, math.ceil(batch_size * 4 / len(x)))
    return x.repeat(reps, *([1] * (x.dim() - 1)))  # rows of a table, or images / sequences of any shape


class Window(NamedTuple):
    """How one inference window runs: batches for at least `min_s` seconds, and at least `min_batches` batches
    while they fit in `fill_s` (after `warmup_batches` unmeasured ones, once per model, as many as fit in `fill_s`;
    one at least), its energy counted above `idle_power_w`.

    A window holds as many calls as fit, never a fixed number: 20 calls of a ResNet at batch 4096 took minutes per
    window on the development machine; a fast model's window still holds 20 calls at least, for its latency
    quantiles."""

    min_s: float
    min_batches: int = 20
    warmup_batches: int = 5
    idle_power_w: float = 0.0
    fill_s: float = 2.0


class Repeats(NamedTuple):
    """How many windows (pairs, when paired): at least `at_least`, then until the 95 % interval of the energy is
    within `target_rel_ci` of it, at most `at_most`; and, with `budget_s`, no more once another window (another
    ABBA block) would end past `budget_s` seconds of measuring (two windows, one block at least)."""

    at_least: int = 1
    at_most: int = 1
    target_rel_ci: float = 0.05
    budget_s: float | None = None


ONE_WINDOW = Repeats()
SOME_PAIRS = Repeats(2, 8)


def measure_inference(
    model: nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    batch_size: int,
    window: Window,
    repeats: Repeats = ONE_WINDOW,
    label: str = "inference",
) -> InferenceReport:
    """Repeated windows until the energy per 1k is stable.

    Long windows keep short runs from being lost in meter noise; repeats give the spread.
    """
    pool = batch_pool(data.x_test, batch_size)
    windows = _Windows(model, pool, meter, batch_size, window, label)
    with torch.inference_mode():
        windows.warm_up(window.warmup_batches)
        stats = repeat_until_stable(
            windows.one, repeats.at_least, repeats.at_most, repeats.target_rel_ci, budget_s=repeats.budget_s
        )
    return windows.report(stats)


class _Windows:
    """Measured inference windows of one model, each run as `window` says."""

    def __init__(
        self, model: nn.Module, pool: torch.Tensor, meter: EnergyMeter, batch_size: int, window: Window, label: str
    ) -> None:
        self.model, self.pool, self.meter, self.batch_size = model, pool, meter, batch_size
        self.window, self.label = window, label
        self.starts = list(range(0, len(pool) - batch_size + 1, batch_size))
        self.latencies_ms: list[float] = []
        self.windows: list[Measurement] = []

    def warm_up(self, batches: int) -> None:
        begin = time.perf_counter()
        for i in range(batches):
            if i and time.perf_counter() - begin >= self.window.fill_s:
                break
            s = self.starts[i % len(self.starts)]
            self.model(self.pool[s : s + self.batch_size])

    def one(self) -> float:
        """One window; returns its energy (above idle) per 1,000 predictions."""
        batch_size, starts, pool = self.batch_size, self.starts, self.pool
        with self.meter.window(f"{self.label} {len(self.windows) + 1}") as window:
            begin = time.perf_counter()
            n = 0
            fill_s = max(self.window.min_s, self.window.fill_s)
            while (
                n < 1
                or time.perf_counter() - begin < self.window.min_s
                or (n < self.window.min_batches and time.perf_counter() - begin < fill_s)
            ):
                s = starts[n % len(starts)]
                t0 = time.perf_counter()
                self.model(pool[s : s + batch_size])
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
                n += 1
        self.windows.append(window.measurement)
        idle_j = self.window.idle_power_w * window.measurement.duration_s
        above_idle_j = max(window.measurement.energy_j - idle_j, 0.0)
        return above_idle_j / (n * batch_size) * 1000

    def report(self, stats: Repeated) -> InferenceReport:
        latencies_ms, windows, batch_size = self.latencies_ms, self.windows, self.batch_size
        q = statistics.quantiles(latencies_ms, n=4) if len(latencies_ms) > 1 else [latencies_ms[0]] * 3
        return InferenceReport(
            energy_j_per_1k=stats.mean,
            energy_sem_j_per_1k=stats.sem,
            energy_ci95_j_per_1k=stats.ci95 if stats.n > 1 else 0.0,
            repeats=stats.n,
            latency_ms_per_batch=statistics.median(latencies_ms),
            latency_ms_spread=q[2] - q[0],
            batch_size=batch_size,
            samples=len(latencies_ms) * batch_size,
            total_energy_j=sum(w.energy_j for w in windows),
            measurement=windows[-1],
        )


def measure_inference_paired(
    model: nn.Module,
    reference: nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    batch_size: int,
    window: Window,
    pairs: Repeats = SOME_PAIRS,
    label: str = "inference",
) -> tuple[InferenceReport, InferenceReport, PairedRatio]:
    """`model` and `reference` measured in alternating ABBA windows (see `tasks.meters.paired`):
    the report of each, and the paired ratio model / reference the gates judge."""
    pool = batch_pool(data.x_test, batch_size)
    mine = _Windows(model, pool, meter, batch_size, window, label)
    theirs = _Windows(reference, pool, meter, batch_size, window, f"{label} reference")
    with torch.inference_mode():
        mine.warm_up(window.warmup_batches)
        theirs.warm_up(window.warmup_batches)
        paired = measure_paired(
            theirs.one, mine.one, pairs.at_least, pairs.at_most, pairs.target_rel_ci, budget_s=pairs.budget_s
        )
    return mine.report(Repeated(paired.candidate)), theirs.report(Repeated(paired.reference)), paired


def across_sizes(reports: list[InferenceReport]) -> InferenceReport:
    """Reports of one model at several serving batch sizes as one figure, as the gates judge them: the
    geometric mean of the per-size energies (its standard error by the delta method), the latency of the
    smallest size (online serving's), the windows and energy of all. One report: itself."""
    if len(reports) == 1:
        return reports[0]
    smallest = min(reports, key=lambda r: r.batch_size)
    energies = [r.energy_j_per_1k for r in reports]
    if min(energies) > 0:
        mean = math.exp(statistics.fmean(math.log(e) for e in energies))
        sem = mean * math.sqrt(sum((r.energy_sem_j_per_1k / r.energy_j_per_1k) ** 2 for r in reports)) / len(reports)
    else:  # a meter that reads nothing: no energy to average, the latency decides (`policy.cost`)
        mean, sem = 0.0, 0.0
    return InferenceReport(
        energy_j_per_1k=mean,
        energy_sem_j_per_1k=sem,
        energy_ci95_j_per_1k=1.96 * sem,
        repeats=sum(r.repeats for r in reports),
        latency_ms_per_batch=smallest.latency_ms_per_batch,
        latency_ms_spread=smallest.latency_ms_spread,
        batch_size=smallest.batch_size,
        samples=sum(r.samples for r in reports),
        total_energy_j=sum(r.total_energy_j for r in reports),
        measurement=reports[-1].measurement,
    )


def measure_idle_power_w(meter: EnergyMeter, window_s: float) -> float:
    """Power the machine draws doing nothing, to subtract from measured windows."""
    with meter.window("idle") as window:
        time.sleep(window_s)
    return window.measurement.power_w


def energy_by_batch_size(
    model: nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    batch_sizes: list[int],
    min_window_s: float,
    repeats: int = 2,
) -> dict[int, float]:
    """Inference energy per 1k samples at each batch size (the paper's batch-size adaptation)."""
    return {
        size: measure_inference(
            model, data, meter, size, Window(min_window_s), Repeats(repeats, repeats), label=f"batch {size}"
        ).energy_j_per_1k
        for size in batch_sizes
    }
