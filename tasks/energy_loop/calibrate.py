"""Measure once per machine which rungs save energy here, and cache the table.

The probe is the loop's own architecture (the scenario's MLP or CNN for the data, or the user's
model from its factory; random weights) at the scenario's inference batch size: inference at
fp32 / int8 / fp16 / bf16, and training steps at fp32 and under bf16 autocast. Which precision
pays depends on the model as much as on the machine: on one 2-core CPU with AMX, bf16 slowed the
paper's small MLP and sped a Transformer encoder up by an eighth. Ratios are energy relative to
fp32, from the loop's own meter; the policy skips a rung whose ratio shows no saving. The cache
key is the machine, the CPU, the torch version, the meter, the batch size and the architecture (the
factory, its arguments and the layers it builds), so another machine, GPU or model calibrates afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from tasks.common.progress import say
from tasks.meters import analytic
from tasks.meters.base import EnergyMeter
from tasks.meters.runtime import stabilise_allocator, torch_threads
from tasks.meters.stats import over_budget
from tasks.models import factory as models
from thresholds.energy.policy import Calibration

PRECISIONS = ("fp32", "int8", "fp16", "bf16")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} | {cpu} | {torch.get_num_threads()} threads | torch {torch.__version__}"


PROBE_BUDGET_S = 5.0  # seconds per probe (one precision or training mode) past which no further window is begun


def _energy_per_call(meter: EnergyMeter, fn: object, window_s: float, repeats: int) -> float:
    call = fn  # a zero-argument callable
    # Warm-up, so lazy initialisation and thread pools do not land in a window: ten calls, or one when it takes longer
    # than two windows. A window lasts `window_s`, one call at least; a probe begins no window past `PROBE_BUDGET_S`
    # (one window at least). A precision that takes seconds per call (fp16 of a ResNet on an AVX2-only CPU) made one
    # calibration take 13 minutes here with a fixed number of calls.
    start, n = time.perf_counter(), 0
    while n < 1 or (n < 10 and time.perf_counter() - start < 2 * window_s):
        call()  # type: ignore[operator]
        n += 1
    per_call = []
    started = time.perf_counter()
    for r in range(repeats):
        if r and over_budget(time.perf_counter() - started, r, 1, PROBE_BUDGET_S):
            break
        with meter.window(f"calibration {r}") as window:
            start, n = time.perf_counter(), 0
            while n < 1 or time.perf_counter() - start < window_s:
                call()  # type: ignore[operator]
                n += 1
        per_call.append(
            window.measurement.energy_j / n if window.measurement.energy_j else window.measurement.duration_s / n
        )
    return sorted(per_call)[len(per_call) // 2]  # median: robust to one disturbed window


def machine_cache_dir() -> Path:
    """Where calibrations are kept for every loop on this machine (whatever its work dir):
    `$ENERGY_LOOP_CACHE_DIR`, else `$XDG_CACHE_HOME/energy-loop`, else `~/.cache/energy-loop`."""
    if os.environ.get("ENERGY_LOOP_CACHE_DIR"):
        return Path(os.environ["ENERGY_LOOP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "energy-loop"


PAPER_MLP = models.ModelSpec(in_features=40, out_features=10)  # the probe when no architecture is given


def calibrate(
    meter: EnergyMeter,
    cache_dir: Path,
    batch_size: int,
    window_s: float = 0.3,
    repeats: int = 3,
    shared_dir: Path | None = None,
    spec: models.ModelSpec = PAPER_MLP,
    threads: int = 0,
) -> Calibration:
    """The calibration table of `spec`'s architecture on this machine, read from `cache_dir` or the
    machine-wide `shared_dir`, else measured now and written to both (the shared one best effort)."""
    stabilise_allocator()
    machine = _machine()
    # The factory's name and arguments, and the module it builds now: a user who edits the model's code calibrates
    # afresh.
    torch.manual_seed(0)
    base = models.build(spec).eval()
    architecture = f"{spec.model_dump_json(include={'factory', 'input_shape', 'out_features', 'kwargs'})}|{base!r}"
    key = hashlib.sha256(
        f"{machine}|{meter.source}|{batch_size}|{architecture}|inference threads {threads}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"calibration-{key}.json"
    shared = shared_dir / path.name if shared_dir is not None else None
    for known in (path, shared):
        if known is not None and known.exists():
            try:
                table = Calibration.model_validate_json(known.read_text())
            except (OSError, ValueError):
                continue  # unreadable or from an older schema: measure afresh
            if known != path:
                cache_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(known.read_text())
            return table
    x = torch.randn(batch_size, *spec.input_shape)
    inference: dict[str, float] = {}
    with (
        torch.inference_mode(),
        torch_threads(threads),
    ):  # inference is measured at these (measurement.inference_threads)
        for precision in PRECISIONS:
            predictor = models.to_precision(base, precision)  # type: ignore[arg-type]
            inference[precision] = _energy_per_call(meter, lambda p=predictor: p(x), window_s, repeats)
            say("setup", f"calibrated {precision}")
    train: dict[str, float] = {}
    xb = torch.randn(64, *spec.input_shape)
    for mode in ("fp32", "autocast"):
        model = models.build(spec)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(m: nn.Module = model, opt: torch.optim.Optimizer = optimizer, amp: bool = mode == "autocast") -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=amp):
                out = m(xb)
            out.float().square().mean().backward()  # any output shape: the loss costs nothing beside the model
            opt.step()

        train[mode] = _energy_per_call(meter, step, window_s, repeats)
        say("setup", f"calibrated training {mode}")
    table = Calibration(
        machine=machine,
        inference_ratio={p: round(inference[p] / inference["fp32"], 4) for p in PRECISIONS if p != "fp32"},
        train_ratio={"autocast": round(train["autocast"] / train["fp32"], 4)},
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table.model_dump(), indent=2))
    if shared is not None:
        try:
            shared.parent.mkdir(parents=True, exist_ok=True)
            shared.write_text(path.read_text())
        except OSError:
            pass  # a read-only home: the work dir's copy still serves this work dir
    return table


def analytic_calibration(batch_size: int) -> Calibration:
    """The rung table of a 45 nm target device, from the analytic model instead of a measurement."""
    model = models.build(PAPER_MLP)
    fp32 = analytic.inference_energy(model, "fp32", batch_size).energy_j_per_1k
    return Calibration(
        machine=f"analytic:{analytic.TABLE}",
        inference_ratio={
            p: round(analytic.inference_energy(model, p, batch_size).energy_j_per_1k / fp32, 4)
            for p in PRECISIONS
            if p != "fp32"
        },
    )
