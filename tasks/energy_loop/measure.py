"""The measurement of a produced candidate, alone on the machine: its quality on the test split (or a
representative subset), its inference energy and latency at the scenario's serving batch sizes (paired with the
baseline's where the scenario asks for it), and the analytic estimate for a target device."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from tasks.compression import onnx_runtime
from tasks.data.datasets import CachedData, load_cached
from tasks.meters import analytic, contention
from tasks.meters.base import EnergyMeter, MeterError
from tasks.meters.paired import AcrossSizes
from tasks.meters.runtime import stabilise_allocator, torch_threads
from tasks.models import factory as models
from tasks.models.evaluate import (
    InferenceReport,
    Repeats,
    Window,
    across_sizes,
    measure_inference,
    measure_inference_paired,
    quality,
    quality_tag,
    representative_subset,
    resolve_quality_metric,
)
from thresholds.energy import keys
from thresholds.energy.policy import CandidateResult
from thresholds.energy.schema import Scenario

log = logging.getLogger(__name__)


def share_left(deadline: float, sizes_left: int) -> float:
    """The seconds of the budget left to the next of `sizes_left` batch sizes: an even share of what is left (a size
    that stopped early leaves its rest to the next)."""
    return max(deadline - time.perf_counter(), 0.0) / sizes_left


def _measure_inference(
    scenario: Scenario,
    predictor: torch.nn.Module,
    data: CachedData,
    meter: EnergyMeter,
    label: str,
    idle_power_w: float,
    reference_dir: str | None,
) -> tuple[InferenceReport, dict[str, object], float]:
    """The candidate's inference report at the scenario's serving batch sizes (one figure across them:
    `across_sizes`); with a reference model (the baseline) and `measurement.paired`, measured in ABBA
    windows interleaved with it at each size, plus the paired-ratio fields of the result and the energy
    the reference's windows spent. Several sizes share the windows one size would get (at least two
    pairs each), so measuring at more sizes costs little more time."""
    m = scenario.measurement
    sizes = m.batch_sizes_served
    # A window holds the calls that fit in it (one at least): never a fixed number that a big model turns into minutes.
    window = Window(m.min_window_s, idle_power_w=idle_power_w, fill_s=m.min_window_s)
    deadline = time.perf_counter() + m.measure_budget_s  # the whole candidate's: every size, warm-ups included

    def at(b: int) -> str:
        return label if len(sizes) == 1 else f"{label} b{b}"

    if m.paired and reference_dir and m.inference_target == "this-machine" and meter.source != "null":
        ref_model, ref_spec = models.load(Path(reference_dir))
        reference = onnx_runtime.predictor(Path(reference_dir), ref_model, ref_spec, m.inference_threads)
        per_size_min = math.ceil(m.repeats_min / len(sizes))
        pairs_min = max(2, per_size_min + per_size_min % 2)  # whole ABBA blocks
        pairs_max = max(pairs_min, math.ceil(m.repeats_max / len(sizes)))
        try:
            measured = []
            for i, b in enumerate(sizes):
                repeats = Repeats(pairs_min, pairs_max, m.target_rel_ci, share_left(deadline, len(sizes) - i))
                measured.append(measure_inference_paired(predictor, reference, data, meter, b, window, repeats, at(b)))
        except ValueError as exc:  # a window read no energy above idle: nothing to pair
            log.warning("%s: paired measurement unavailable (%s); measured alone", label, exc)
        else:
            paired = AcrossSizes(tuple(r for _, _, r in measured))
            theirs = across_sizes([t for _, t, _ in measured])
            low, high = paired.ci95
            tags = {
                keys.INFERENCE_PAIRED_WITH: reference_dir,
                keys.INFERENCE_REFERENCE_J_PER_1K: f"{theirs.energy_j_per_1k:.6g}",
            }
            if len(sizes) > 1:
                tags[keys.INFERENCE_RATIO_WORST_SIZE] = f"{paired.worst:.6g}"
                tags.update(
                    {
                        f"{keys.INFERENCE_RATIO_AT_BATCH_PREFIX}{b}": f"{r.ratio:.6g}"
                        for b, (_, _, r) in zip(sizes, measured, strict=True)
                    }
                )
                tags.update(
                    {
                        f"{keys.INFERENCE_J_PER_1K_AT_BATCH_PREFIX}{b}": f"{mine.energy_j_per_1k:.6g}"
                        for b, (mine, _, _) in zip(sizes, measured, strict=True)
                    }
                )
            fields: dict[str, object] = {
                "inference_ratio_vs_baseline": paired.ratio,
                "inference_ratio_log_sem": paired.log_sem,
                "inference_ratio_ci95_low": low,
                "inference_ratio_ci95_high": high,
                "inference_pairs": paired.n,
                "tags": tags,
            }
            return across_sizes([mine for mine, _, _ in measured]), fields, theirs.total_energy_j
    repeats_max = max(m.repeats_min, math.ceil(m.repeats_max / len(sizes)))
    alone = []
    for i, b in enumerate(sizes):
        repeats = Repeats(m.repeats_min, repeats_max, m.target_rel_ci, share_left(deadline, len(sizes) - i))
        alone.append(measure_inference(predictor, data, meter, b, window, repeats, at(b)))
    per_size_tags = (
        {
            f"{keys.INFERENCE_J_PER_1K_AT_BATCH_PREFIX}{b}": f"{r.energy_j_per_1k:.6g}"
            for b, r in zip(sizes, alone, strict=True)
        }
        if len(sizes) > 1
        else {}
    )
    return across_sizes(alone), {"tags": per_size_tags} if per_size_tags else {}, 0.0


def measure_step(
    scenario: Scenario,
    produced: CandidateResult,
    data_path: str,
    meter: EnergyMeter,
    idle_power_w: float = 0.0,
    reference_dir: str | None = None,
) -> CandidateResult:
    """Score a produced candidate and measure its inference energy (alone on the machine)."""
    if not produced.ok or produced.model_dir is None:
        return produced
    stabilise_allocator()  # also here: in parallel mode this process did not train the model
    started = time.perf_counter()
    try:
        with torch_threads(scenario.measurement.inference_threads):
            return _scored(
                scenario, produced, Path(produced.model_dir), data_path, meter, idle_power_w, reference_dir, started
            )
    except MeterError as exc:
        log.warning("candidate #%d (%s) rejected: %s", produced.index, produced.step.label, exc)
        partial_j = getattr(exc, "partial_energy_j", 0.0)
        return produced.model_copy(
            update={"rejected_reason": str(exc), "spent_energy_j": produced.spent_energy_j + partial_j}
        )


def _scored(
    scenario: Scenario,
    produced: CandidateResult,
    model_dir: Path,
    data_path: str,
    meter: EnergyMeter,
    idle_power_w: float,
    reference_dir: str | None,
    started: float,
) -> CandidateResult:
    """`measure_step`'s work, run at the scenario's inference threads. They are recorded in the folder's
    runtime.json: the served model runs at the threads its figures were measured at."""
    index, step = produced.index, produced.step
    data = load_cached(data_path)
    training = scenario.training
    tags: dict[str, str] = dict(produced.tags)
    result = produced
    threads = scenario.measurement.inference_threads
    model, spec = models.load(model_dir)
    predictor = onnx_runtime.predictor(model_dir, model, spec, threads)
    runtime = onnx_runtime.record(model_dir, onnx_runtime.runtime_of(model_dir).model_copy(update={"threads": threads}))
    tags.update(
        {
            keys.SERVING_RUNTIME: runtime.runtime,
            keys.SERVING_PRECISION: runtime.precision,
            keys.SERVING_THREADS: str(threads or "default"),
        }
    )
    tags[keys.SERVING_BATCH_SIZES] = ",".join(str(b) for b in scenario.measurement.batch_sizes_served)
    if runtime.runtime == "torch" and spec.precision == "int8":
        tags[keys.INT8_BACKEND] = models.int8_backend()
    subset = (
        representative_subset(data.y_test, scenario.measurement.eval_subset, training.seed)
        if scenario.measurement.eval_subset
        else None
    )
    metric, _ = resolve_quality_metric(
        scenario.targets.quality_metric, data, spec.hooks.get("metric")
    )  # the metric the model was saved with
    q = quality(predictor, data, subset, metric)
    tags[keys.EVAL_SAMPLES] = str(q.samples)
    tags[keys.QUALITY_METRIC] = quality_tag(metric, data)
    if q.accuracy_bound95 is not None:
        tags[keys.ACCURACY_BOUND95_PT] = f"{q.accuracy_bound95 * 100:.2f}"
    measure_start = time.perf_counter()
    with contention.watched() as others:
        inference, paired_fields, reference_j = _measure_inference(
            scenario, predictor, data, meter, f"#{index} {step.label} inference", idle_power_w, reference_dir
        )
    tags[keys.MEASUREMENT_OTHER_CPU_SHARE] = f"{others.share:.3f}"
    busy = contention.busy_warning(
        f"candidate #{index} ({step.label})", others.share, scenario.measurement.max_other_cpu_share
    )
    if busy:
        log.warning(busy)
        tags[keys.MEASUREMENT_WARNING] = busy
    tags.update(paired_fields.pop("tags", {}))  # type: ignore[call-overload]
    result = result.model_copy(update=paired_fields)
    measure_s = time.perf_counter() - measure_start
    inference_j, inference_sem_j = inference.energy_j_per_1k, inference.energy_sem_j_per_1k
    if spec.kind == "mlp":
        estimate = analytic.inference_energy(model, runtime.precision, scenario.measurement.inference_batch_size)
        tags[keys.ANALYTIC_TABLE] = estimate.table
        result = result.model_copy(update={"analytic_inference_energy_j_per_1k": estimate.energy_j_per_1k})
        if scenario.measurement.inference_target == "analytic-45nm":
            # Targeting an edge device: the gates judge the estimate; the local reading stays on record.
            tags[keys.MEASURED_INFERENCE_ENERGY_J_PER_1K] = f"{inference_j:.6g}"
            inference_j, inference_sem_j = estimate.energy_j_per_1k, 0.0
            result = result.model_copy(
                update={"energy_source": f"{meter.source}+analytic:{estimate.table}", "estimated": True}
            )
    if idle_power_w:
        tags[keys.IDLE_POWER_W_SUBTRACTED] = f"{idle_power_w:.3f}"
    tags.update({keys.ENERGY_DETAIL_PREFIX + k: v for k, v in inference.measurement.details.items()})
    tags[keys.INFERENCE_LATENCY_MS_IQR] = f"{inference.latency_ms_spread:.4f}"
    tags[keys.INFERENCE_SAMPLES_MEASURED] = str(inference.samples)
    return result.model_copy(
        update={
            "accuracy": q.accuracy,
            "rmse": q.rmse,
            "inference_energy_j_per_1k": inference_j,
            "inference_energy_sem_j_per_1k": inference_sem_j,
            "inference_energy_ci95_j_per_1k": inference.energy_ci95_j_per_1k if inference_sem_j else None,
            "inference_repeats": inference.repeats,
            "latency_ms_per_batch": inference.latency_ms_per_batch,
            "spent_energy_j": produced.spent_energy_j + inference.total_energy_j + reference_j,
            "measure_energy_j": inference.total_energy_j + reference_j,
            "params": models.count_params(model),
            "macs": models.count_macs(model, spec.input_shape),
            "measure_s": measure_s,
            "wall_s": produced.wall_s + time.perf_counter() - started,
            "tags": tags,
        }
    )
