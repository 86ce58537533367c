"""What serving observed for a version, read back from its run: the `serve` windows summed up beside the loop's figures.

Each `energy-loop serve` window is logged on the served version's run as metric series `observed.*` sharing one
timestamp and step (`tasks.serving.telemetry.WindowFigures.metrics`). `read_windows` gathers them back into one
record per window; `summarize` (pure) sums the windows up: J per 1k over every row served with an energy reading,
the rows per batch bucket (the observed mix), the last window's latency, the quality over labelled rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from registry import keys

Window = dict[str, float]  # one window: its series' values by key, and `timestamp_ms`
TIMESTAMP_MS = "timestamp_ms"


@dataclass(frozen=True)
class Observed:
    """A version's serving windows, summed up."""

    windows: int
    rows: int
    requests: int
    errors: int
    first_ms: int
    last_ms: int
    energy_j_per_1k: float | None  # over the windows with an energy reading and rows
    energy_j_per_1k_sem: float | None  # the last window's, over its recent windows
    latency_p95_ms: float | None  # the last window's with requests
    quality: float | None  # over every labelled row (accuracy: weighted mean; RMSE: root of the weighted mean square)
    labelled_rows: int
    rows_by_batch: dict[int, int]


def summarize(windows: list[Window], metric: str) -> Observed | None:
    """The windows (any order) summed up; None without any. `metric` is "accuracy" or "rmse"."""
    if not windows:
        return None
    ordered = sorted(windows, key=lambda w: w[TIMESTAMP_MS])
    total = lambda key: sum(w.get(key, 0.0) for w in ordered)  # noqa: E731
    metered = [w for w in ordered if keys.OBSERVED_WINDOW_ENERGY_J in w and w.get(keys.OBSERVED_WINDOW_ROWS, 0) > 0]
    metered_rows = sum(w[keys.OBSERVED_WINDOW_ROWS] for w in metered)
    labelled = [w for w in ordered if keys.OBSERVED_WINDOW_QUALITY in w and w.get(keys.OBSERVED_WINDOW_LABELLED_ROWS)]
    labelled_rows = sum(w[keys.OBSERVED_WINDOW_LABELLED_ROWS] for w in labelled)
    quality = None
    if labelled_rows:
        q = lambda w: w[keys.OBSERVED_WINDOW_QUALITY]  # noqa: E731
        n = lambda w: w[keys.OBSERVED_WINDOW_LABELLED_ROWS]  # noqa: E731
        quality = (
            sum(q(w) * n(w) for w in labelled) / labelled_rows
            if metric == "accuracy"
            else math.sqrt(sum(q(w) ** 2 * n(w) for w in labelled) / labelled_rows)
        )
    with_latency = [w for w in ordered if keys.OBSERVED_WINDOW_LATENCY_P95_MS in w]
    with_sem = [w for w in ordered if keys.OBSERVED_WINDOW_ENERGY_SEM_J_PER_1K in w]
    by_batch: dict[int, int] = {}
    pattern = re.compile(re.escape(keys.OBSERVED_ROWS_AT_BATCH_PREFIX) + r"(\d+)$")
    for w in ordered:
        for key, value in w.items():
            if found := pattern.match(key):
                by_batch[int(found[1])] = by_batch.get(int(found[1]), 0) + int(value)
    return Observed(
        windows=len(ordered),
        rows=int(total(keys.OBSERVED_WINDOW_ROWS)),
        requests=int(total(keys.OBSERVED_WINDOW_REQUESTS)),
        errors=int(total(keys.OBSERVED_WINDOW_ERRORS)),
        first_ms=int(ordered[0][TIMESTAMP_MS]),
        last_ms=int(ordered[-1][TIMESTAMP_MS]),
        energy_j_per_1k=sum(w[keys.OBSERVED_WINDOW_ENERGY_J] for w in metered) / metered_rows * 1000
        if metered_rows
        else None,
        energy_j_per_1k_sem=with_sem[-1][keys.OBSERVED_WINDOW_ENERGY_SEM_J_PER_1K] if with_sem else None,
        latency_p95_ms=with_latency[-1][keys.OBSERVED_WINDOW_LATENCY_P95_MS] if with_latency else None,
        quality=quality,
        labelled_rows=int(labelled_rows),
        rows_by_batch=dict(sorted(by_batch.items())),
    )


def read_windows(mc: Any, run_id: str, series: Iterable[str]) -> list[Window]:
    """The run's serving windows: every `observed.*` series among `series`, grouped by (timestamp, step)."""
    windows: dict[tuple[int, int], Window] = {}
    for key in series:
        for m in mc.get_metric_history(run_id, key):
            window = windows.setdefault((m.timestamp, m.step), {TIMESTAMP_MS: float(m.timestamp)})
            window[key] = float(m.value)
    return list(windows.values())


def observed(mc: Any, run_id: str | None, metric: str) -> Observed | None:
    """What serving observed for the version of run `run_id` (None if it was never served by `serve`)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        names = [k for k in mc.get_run(run_id).data.metrics if k.startswith(keys.OBSERVED_PREFIX)]
        return summarize(read_windows(mc, run_id, names), metric)
    except MlflowException:
        return None
