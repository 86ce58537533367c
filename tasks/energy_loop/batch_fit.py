"""The batch sizes the loop measures at: the scenario's, or smaller ones where a call at its size is slow.

A window of `min_window_s` holds a few calls of a large model at batch 4096 at most (a user's small ResNet took
1.6 s per call on the development machine), so its energy reads one or two calls and a loop measures for hours.
Before the loop, one call of the loop's architecture (random weights, fp32, the inference threads) is timed at each
batch size the scenario judges; a size whose call takes longer than `max_call_window_share` of a window is replaced
by the largest power of two whose call fits, and every candidate of the loop is measured and judged at the sizes
chosen once here (the same sizes for all, so the paired ratios compare like with like).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tasks.data.datasets import CachedData
from tasks.energy_loop.production import model_spec
from tasks.meters.runtime import torch_threads
from tasks.models import factory as models
from tasks.models.evaluate import batch_pool
from thresholds.energy.schema import Scenario

PROBE_ROWS = 16  # the first call times this many rows: a call at 4096 of a user's ResNet took 32 s here
PROBES = 8  # timed calls per size at most, after the first (16 to 4096 rows doubling: 8)


def suited_batch_size(batch_size: int, call_s: float, limit_s: float) -> int:
    """The largest power of two at most `batch_size` whose call, scaled linearly from `call_s` at `batch_size`,
    takes `limit_s` at most (1 at least); `batch_size` itself where its call fits."""
    if call_s <= limit_s:
        return batch_size
    fitting = batch_size * limit_s / call_s
    return max(1, min(batch_size, 2 ** math.floor(math.log2(fitting)) if fitting >= 1 else 1))


@dataclass(frozen=True)
class BatchFit:
    """The sizes chosen for one scenario size: `chosen` after timing a call of `call_s` at it."""

    asked: int
    asked_call_s: float
    chosen: int
    call_s: float  # the last timed call, at `chosen`


def fit_size(time_call: Callable[[int], float], batch_size: int, limit_s: float) -> BatchFit:
    """The size to measure at in place of `batch_size`: a call at `PROBE_ROWS` rows is timed, `batch_size`'s call
    estimated from it (linearly: an upper bound, as rows cost less in bigger batches), then the suited size is timed
    and made smaller while its call is over `limit_s`, or doubled (up to `batch_size`) while its call fits; the
    largest size timed within `limit_s` is chosen (1 where none was)."""
    probe = min(batch_size, PROBE_ROWS)
    probe_s = time_call(probe)
    asked_s = probe_s * batch_size / probe
    size = suited_batch_size(batch_size, asked_s, limit_s)
    call_s = probe_s if size == probe else time_call(size)
    fitting = (size, call_s) if call_s <= limit_s else None
    for _ in range(PROBES):
        if call_s > limit_s and size > 1:  # over: smaller, until one fits
            if fitting is not None:
                break
            size = suited_batch_size(size, call_s, limit_s)
        elif call_s <= limit_s and size < batch_size:  # it fits: try twice the rows (back to this one if over)
            size = min(2 * size, batch_size)
        else:
            break
        call_s = time_call(size)
        if call_s <= limit_s:
            fitting = (size, call_s)
    chosen, chosen_s = fitting if fitting is not None else (size, call_s)
    return BatchFit(batch_size, asked_s if chosen != batch_size else chosen_s, chosen, chosen_s)


def timer(model: torch.nn.Module, data: CachedData) -> Callable[[int], float]:
    """Seconds of one call of `model` at a batch size, on test inputs, after one unmeasured call."""

    def time_call(batch_size: int) -> float:
        x = batch_pool(data.x_test, batch_size)[:batch_size]
        with torch.inference_mode():
            model(x)
            started = time.perf_counter()
            model(x)
            return time.perf_counter() - started

    return time_call


def fitted_scenario(scenario: Scenario, data: CachedData) -> tuple[Scenario, list[BatchFit]]:
    """`scenario` with the batch sizes its loop measures at (itself where every call fits a window's share), and
    what was timed at each size the scenario names."""
    m = scenario.measurement
    limit_s = m.max_call_window_share * m.min_window_s
    torch.manual_seed(0)
    model = models.build(model_spec(scenario, data)).eval()
    with torch_threads(m.inference_threads):
        time_call = timer(model, data)
        fits = {b: fit_size(time_call, b, limit_s) for b in sorted({m.inference_batch_size, *m.batch_sizes_served})}
    if all(f.chosen == f.asked for f in fits.values()):
        return scenario, list(fits.values())
    served = sorted({fits[b].chosen for b in m.batch_sizes_served})
    measurement = m.model_copy(
        update={
            "inference_batch_size": fits[m.inference_batch_size].chosen,
            "serving_batch_sizes": served if m.serving_batch_sizes is not None else None,
        }
    )
    return scenario.model_copy(update={"measurement": measurement}), list(fits.values())


def fit_summary(fits: list[BatchFit], window_s: float, limit_s: float) -> str:
    """One line for the console and the run's tags: which sizes changed and why."""
    changed = [f for f in fits if f.chosen != f.asked]
    return "; ".join(
        f"measured at batch {f.chosen}, not {f.asked}: one call at {f.asked} takes about {f.asked_call_s:.2f} s, over "
        f"{limit_s:g} s of a {window_s:g} s window ({f.call_s * 1000:.0f} ms at {f.chosen})"
        for f in changed
    )
