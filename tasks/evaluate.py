"""Quality on the test split, and inference energy / latency at a fixed batch size."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from tasks.data import CachedData
from tasks.energy.base import EnergyMeter, Measurement


@dataclass(frozen=True)
class Quality:
    accuracy: float | None  # classification, in [0, 1]
    rmse: float | None  # regression, in target units
    loss: float


@dataclass(frozen=True)
class InferenceReport:
    energy_j_per_1k: float
    latency_ms_per_batch: float
    latency_ms_spread: float  # inter-quartile range of per-batch latencies
    batch_size: int
    batches: int
    samples: int
    measurement: Measurement


def quality(model: nn.Module, data: CachedData) -> Quality:
    with torch.no_grad():
        out = model(data.x_test)
    if data.task == "classification":
        loss = nn.functional.cross_entropy(out, data.y_test).item()
        accuracy = (out.argmax(dim=1) == data.y_test).float().mean().item()
        return Quality(accuracy=accuracy, rmse=None, loss=loss)
    mse = nn.functional.mse_loss(out.squeeze(1), data.y_test).item()
    return Quality(accuracy=None, rmse=math.sqrt(mse) * data.target_std, loss=mse)


def _batch_pool(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Test inputs tiled so every measured batch has exactly `batch_size` rows."""
    reps = max(1, math.ceil(batch_size * 4 / len(x)))
    return x.repeat(reps, 1)


def measure_inference(
    model: nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    batch_size: int,
    min_window_s: float,
    label: str = "inference",
    warmup_batches: int = 5,
    min_batches: int = 20,
) -> InferenceReport:
    """Run batches until the window lasts `min_window_s` so short runs are not lost in meter noise."""
    pool = _batch_pool(data.x_test, batch_size)
    starts = list(range(0, len(pool) - batch_size + 1, batch_size))
    latencies_ms: list[float] = []
    with torch.inference_mode():
        for i in range(warmup_batches):
            model(pool[starts[i % len(starts)] :][:batch_size])
        with meter.window(label) as window:
            begin = time.perf_counter()
            n = 0
            while n < min_batches or time.perf_counter() - begin < min_window_s:
                s = starts[n % len(starts)]
                t0 = time.perf_counter()
                model(pool[s : s + batch_size])
                latencies_ms.append((time.perf_counter() - t0) * 1000)
                n += 1
    measurement = window.measurement
    samples = n * batch_size
    q = statistics.quantiles(latencies_ms, n=4)
    return InferenceReport(
        energy_j_per_1k=measurement.energy_j / samples * 1000,
        latency_ms_per_batch=statistics.median(latencies_ms),
        latency_ms_spread=q[2] - q[0],
        batch_size=batch_size,
        batches=n,
        samples=samples,
        measurement=measurement,
    )
