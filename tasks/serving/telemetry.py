"""What a serving process observes: traffic, latency, errors and energy, in reporting windows.

`Traffic` counts the requests of the open window (thread-safe: the server answers from a thread pool);
`close_window` turns it and the window's energy reading into a `WindowFigures` record, a pure function over
plain numbers. `Exposition` keeps the same figures as Prometheus metrics for `/metrics` (names and units as
Prometheus asks: `_total`, `_seconds`, `_joules`).

Energy is read in windows over the real traffic: one meter window per reporting interval, this process's
CPU share of the machine's reading above its idle draw (`tasks.meters.share.ProcessShareMeter`; idle measured
when the server starts), as the loop counts energy above idle in its own windows.
J per 1k predictions is that energy over the window's rows; its standard error
is taken over the last `SEM_WINDOWS` windows that served rows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from registry.keys import OBSERVED_PREFIX, OBSERVED_ROWS_AT_BATCH_PREFIX

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
SEM_WINDOWS = 10
PREFIX = "energy_loop_serving"


def batch_bucket(rows: int) -> int:
    """The smallest bucket bound that holds a request of `rows` rows (the last one holds any larger request)."""
    return next((b for b in BATCH_BUCKETS if rows <= b), BATCH_BUCKETS[-1])


def percentile_ms(latencies_s: list[float], q: float) -> float | None:
    """The `q`-quantile (0-1, nearest rank) of the latencies, in milliseconds; None without requests."""
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank] * 1000


def mean_sem(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error of the mean (None where undefined)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


@dataclass
class Traffic:
    """The open window's requests: counted from the threads that answer them."""

    started_s: float = field(default_factory=time.time)
    requests: int = 0
    rows: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    batch_mix: dict[int, int] = field(default_factory=dict)  # requests per batch bucket
    batch_rows: dict[int, int] = field(default_factory=dict)  # rows per batch bucket
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answered(self, rows: int, latency_s: float) -> None:
        with self._lock:
            self.requests += 1
            self.rows += rows
            self.latencies_s.append(latency_s)
            bucket = batch_bucket(rows)
            self.batch_mix[bucket] = self.batch_mix.get(bucket, 0) + 1
            self.batch_rows[bucket] = self.batch_rows.get(bucket, 0) + rows

    def failed(self) -> None:
        with self._lock:
            self.requests += 1
            self.errors += 1

    def take(self) -> Traffic:
        """The window so far, and a fresh one in its place."""
        with self._lock:
            closed = Traffic(
                self.started_s, self.requests, self.rows, self.errors, self.latencies_s, self.batch_mix, self.batch_rows
            )
            self.started_s, self.requests, self.rows, self.errors = time.time(), 0, 0, 0
            self.latencies_s, self.batch_mix, self.batch_rows = [], {}, {}
        return closed


@dataclass(frozen=True)
class EnergyReading:
    """A window's energy, attributed to this process, with its provenance."""

    energy_j: float
    duration_s: float
    source: str
    estimated: bool
    attribution: str
    idle_power_w: float = 0.0  # subtracted over the window before the share was taken


@dataclass(frozen=True)
class WindowFigures:
    """One reporting window, as logged and exposed."""

    started_s: float
    duration_s: float
    requests: int
    rows: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    batch_mix: dict[int, int]
    batch_rows: dict[int, int]
    energy_j: float | None
    energy_j_per_1k: float | None
    energy_j_per_1k_sem: float | None
    quality: float | None
    labelled_rows: int
    energy_source: str = ""  # provenance of energy_j: the meter, measured or estimated, how it was attributed
    energy_estimated: str = ""
    energy_attribution: str = ""
    idle_power_w: float | None = None

    def metrics(self) -> dict[str, float]:
        """The figures MLflow plots over time (one series each): those that were observed in this window."""
        found = {k: v for k, v in asdict(self).items() if isinstance(v, (int, float)) and k != "started_s"}
        by_batch = {f"{OBSERVED_ROWS_AT_BATCH_PREFIX}{b}": float(rows) for b, rows in self.batch_rows.items()}
        return {f"{OBSERVED_PREFIX}{k}": float(v) for k, v in found.items() if v is not None} | by_batch

    def tags(self) -> dict[str, str]:
        """The energy figures' provenance, as tags of the version's run (empty without an energy reading)."""
        found = {k: v for k, v in asdict(self).items() if isinstance(v, str) and v}
        return {f"{OBSERVED_PREFIX}{k}": v for k, v in found.items()}


def close_window(
    traffic: Traffic, reading: EnergyReading | None, history_j_per_1k: deque[float], quality: tuple[float | None, int]
) -> WindowFigures:
    """The window's figures. `history_j_per_1k` holds the earlier windows' J per 1k (the standard error is taken
    over them and this one; this window's figure is appended); `quality` is the labelled-window metric and how many
    labelled rows it is over."""
    per_1k = None
    if reading is not None and traffic.rows:
        per_1k = reading.energy_j / traffic.rows * 1000
        history_j_per_1k.append(per_1k)
    _, sem = mean_sem(list(history_j_per_1k)) if per_1k is not None else (None, None)
    return WindowFigures(
        started_s=traffic.started_s,
        duration_s=reading.duration_s if reading is not None else time.time() - traffic.started_s,
        requests=traffic.requests,
        rows=traffic.rows,
        errors=traffic.errors,
        latency_p50_ms=percentile_ms(traffic.latencies_s, 0.50),
        latency_p95_ms=percentile_ms(traffic.latencies_s, 0.95),
        latency_p99_ms=percentile_ms(traffic.latencies_s, 0.99),
        batch_mix=dict(sorted(traffic.batch_mix.items())),
        batch_rows=dict(sorted(traffic.batch_rows.items())),
        energy_j=reading.energy_j if reading is not None else None,
        energy_j_per_1k=per_1k,
        energy_j_per_1k_sem=sem,
        quality=quality[0],
        labelled_rows=quality[1],
        energy_source=reading.source if reading is not None else "",
        energy_estimated=str(reading.estimated).lower() if reading is not None else "",
        energy_attribution=reading.attribution if reading is not None else "",
        idle_power_w=reading.idle_power_w if reading is not None else None,
    )


class Exposition:
    """The Prometheus metrics of one serving process, in its own registry (served at /metrics)."""

    def __init__(self, model: str, metric_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(f"{PREFIX}_requests", "Scoring requests answered", ["outcome"], registry=self.registry)
        self.predictions = Counter(f"{PREFIX}_predictions", "Rows scored", registry=self.registry)
        self.latency = Histogram(
            f"{PREFIX}_request_latency_seconds",
            "Time to answer a scoring request",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            f"{PREFIX}_request_rows", "Rows per scoring request (the batch-size mix)", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.energy = Counter(
            f"{PREFIX}_energy_joules", "Energy attributed to scoring, over closed windows", registry=self.registry
        )
        self.per_1k = Gauge(
            f"{PREFIX}_energy_per_1k_predictions_joules", "Last window: J per 1,000 predictions", registry=self.registry
        )
        self.per_1k_sem = Gauge(
            f"{PREFIX}_energy_per_1k_predictions_sem_joules",
            "Standard error of J per 1,000 predictions over the recent windows",
            registry=self.registry,
        )
        self.quality = Gauge(
            f"{PREFIX}_quality", "The scenario's quality metric over labelled predictions", ["metric"],
            registry=self.registry,
        )  # fmt: skip
        self.metric_name = metric_name
        self.serving = Gauge(
            f"{PREFIX}_model_info", "The version being served (1)", ["model", "version"], registry=self.registry
        )
        self.model = model
        self._version: str | None = None
        self.provenance = Gauge(
            f"{PREFIX}_energy_info", "Where the energy figures come from (1)", ["source", "estimated", "attribution"],
            registry=self.registry,
        )  # fmt: skip

    def served(self, version: str) -> None:
        if self._version is not None:
            self.serving.remove(self.model, self._version)
        self.serving.labels(self.model, version).set(1)
        self._version = version

    def answered(self, rows: int, latency_s: float) -> None:
        self.requests.labels("ok").inc()
        self.predictions.inc(rows)
        self.latency.observe(latency_s)
        self.batch_rows.observe(rows)

    def failed(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def window(self, figures: WindowFigures) -> None:
        if figures.energy_j is not None:
            self.energy.inc(figures.energy_j)
            self.provenance.clear()
            self.provenance.labels(figures.energy_source, figures.energy_estimated, figures.energy_attribution).set(1)
        if figures.energy_j_per_1k is not None:
            self.per_1k.set(figures.energy_j_per_1k)
        if figures.energy_j_per_1k_sem is not None:
            self.per_1k_sem.set(figures.energy_j_per_1k_sem)
        if figures.quality is not None:
            self.quality.labels(self.metric_name).set(figures.quality)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))
