"""What each energy meter costs, how much identical windows spread, and whether two identical
models measure alike when paired.

    python benchmarks/meter_overhead.py [--meters null,fixed-power,codecarbon,...] [--windows 10] [--window-s 0.5]

For every meter this machine offers (default: all of them):

- overhead share: the same fixed inference workload (the paper's MLP, batch 4096, a batch count
  that takes about `--window-s` bare) is timed inside a meter window and without one, in
  alternating order (ABBA, so drift cancels); the share is (metered - bare) / metered wall time;
- spread of identical windows: energy per window of that same workload, as a coefficient of
  variation (std / mean) and as max / min - 1;
- same architecture: two identically built models measured in paired ABBA windows
  (`tasks.models.evaluate.measure_inference_paired`): the ratio and its 95 % interval, which should hold 1.

Figures are from one run on this machine; machine-level meters count every process, so run it
alone. Prints a table, then one JSON object on the last line with the keys `meters` and
`max_overhead_share`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)

IN_FEATURES, OUT_FEATURES, BATCH = 40, 10, 4096


def _usable_meters() -> list[str]:
    from tasks.meters.select import available_meters

    offered = available_meters()
    return [
        name
        for name in ("null", "fixed-power", "codecarbon", "rapl", "nvml")
        if offered.get(name, "").startswith("available")
    ]


def _workload(window_s: float) -> tuple[Any, int]:
    """(one-batch callable, batches per window) for a window of about `window_s` bare."""
    import torch

    from tasks.models import factory as models

    torch.manual_seed(0)
    model = models.build(models.ModelSpec(in_features=IN_FEATURES, out_features=OUT_FEATURES)).eval()
    x = torch.randn(BATCH, IN_FEATURES)

    def one_batch() -> None:
        with torch.inference_mode():
            model(x)

    for _ in range(20):
        one_batch()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        one_batch()
        n += 1
    per_batch_s = (time.perf_counter() - start) / n
    return one_batch, max(1, round(window_s / per_batch_s))


def _measure_meter(name: str, windows: int, window_s: float) -> dict[str, Any]:
    from tasks.meters.select import make_meter

    meter = make_meter(name)
    one_batch, batches = _workload(window_s)

    def bare() -> float:
        start = time.perf_counter()
        for _ in range(batches):
            one_batch()
        return time.perf_counter() - start

    def metered() -> tuple[float, float]:
        start = time.perf_counter()
        with meter.window("overhead") as handle:
            for _ in range(batches):
                one_batch()
        return time.perf_counter() - start, handle.measurement.energy_j

    try:
        with meter.window("warm-up"):  # lazy start of trackers must not land in a measured window
            one_batch()
        bare_s: list[float] = []
        metered_s: list[float] = []
        energies_j: list[float] = []
        for i in range(windows):
            order = ("bare", "metered") if i % 4 in (0, 3) else ("metered", "bare")
            for kind in order:
                if kind == "bare":
                    bare_s.append(bare())
                else:
                    wall_s, energy_j = metered()
                    metered_s.append(wall_s)
                    energies_j.append(energy_j)
        same = _same_architecture(meter, window_s) if statistics.fmean(energies_j) > 0 else None
    finally:
        meter.close()
    mean_metered, mean_bare = statistics.fmean(metered_s), statistics.fmean(bare_s)
    mean_j = statistics.fmean(energies_j)
    return {
        "source": meter.source,
        "estimated": meter.estimated,
        "windows": windows,
        "batches_per_window": batches,
        "bare_window_s": round(mean_bare, 4),
        "metered_window_s": round(mean_metered, 4),
        "overhead_share": round(max(0.0, (mean_metered - mean_bare) / mean_metered), 4),
        "window_energy_j": round(mean_j, 6),
        "window_cv": round(statistics.stdev(energies_j) / mean_j, 4) if mean_j > 0 and windows > 1 else None,
        "window_spread": round(max(energies_j) / min(energies_j) - 1, 4) if min(energies_j) > 0 else None,
        **(same or {"same_architecture_ratio": None, "same_architecture_ci95": None}),
    }


def _same_architecture(meter: Any, window_s: float) -> dict[str, Any]:
    """Two identically built MLPs (different seeds) in paired ABBA windows: the ratio should be 1."""
    import torch

    from tasks.data.datasets import CachedData
    from tasks.models import factory as models
    from tasks.models.evaluate import Repeats, Window, measure_inference_paired

    spec = models.ModelSpec(in_features=IN_FEATURES, out_features=OUT_FEATURES)
    torch.manual_seed(1)
    first = models.build(spec).eval()
    torch.manual_seed(2)
    second = models.build(spec).eval()
    data = cast(
        CachedData, SimpleNamespace(x_test=torch.randn(BATCH, IN_FEATURES))
    )  # the windows read only the test inputs
    _, _, paired = measure_inference_paired(
        second,
        first,
        data,
        meter,
        BATCH,
        Window(window_s),
        Repeats(at_least=4, at_most=8, target_rel_ci=0.02),
    )
    low, high = paired.ci95
    return {
        "same_architecture_ratio": round(paired.ratio, 4),
        "same_architecture_ci95": [round(low, 4), round(high, 4)],
        "same_architecture_pairs": paired.n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--meters", default=None, help="comma-separated meter names (default: every meter this machine offers)"
    )
    parser.add_argument("--windows", type=int, default=10, help="metered windows per meter (as many bare ones)")
    parser.add_argument("--window-s", type=float, default=0.5, help="seconds of work per window")
    args = parser.parse_args()
    usable = _usable_meters()
    names = args.meters.split(",") if args.meters else usable
    for name in names:
        if name not in usable:
            print(
                f"meter_overhead.py: error: --meters = {name!r}: expected one of {', '.join(usable)} (offered here)",
                file=sys.stderr,
            )
            return 2
    if not 2 <= args.windows <= 1000 or not 0 < args.window_s <= 60 or not math.isfinite(args.window_s):
        print(
            f"meter_overhead.py: error: --windows = {args.windows}, --window-s = {args.window_s}: expected 2..1000 "
            "windows of (0, 60] s",
            file=sys.stderr,
        )
        return 2
    from tasks.meters.runtime import stabilise_allocator

    stabilise_allocator()
    meters = {name: _measure_meter(name, args.windows, args.window_s) for name in names}
    print(
        "| meter | source | overhead share | window s (bare / metered) | window J | CV | max/min-1 | "
        "same-architecture ratio (95 % CI) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, m in meters.items():
        same = (
            "-"
            if m["same_architecture_ratio"] is None
            else f"{m['same_architecture_ratio']} {m['same_architecture_ci95']}"
        )
        print(
            f"| {name} | {m['source']}{' (estimated)' if m['estimated'] else ''} | {m['overhead_share']:.2%} | "
            f"{m['bare_window_s']} / {m['metered_window_s']} | {m['window_energy_j']} | {m['window_cv']} | "
            f"{m['window_spread']} | {same} |"
        )
    emit({"meters": meters, "max_overhead_share": max(m["overhead_share"] for m in meters.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
