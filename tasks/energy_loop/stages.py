"""The energy loop's stages (Prefect tasks): thin wrappers over the work in `tasks/` and `registry/energy.py`.

Caching is off everywhere (`NO_CACHE`): energy is a measurement, never a cached result. The
tracking calls do not retry yet: a blind retry of a half-done `create_run` + `log_batch` would
leave a duplicate run, so retries wait for idempotent logging (reliability issue).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from registry import energy as registry
from registry import keys
from tasks.common.progress import say
from tasks.common.stages import LoopOutcome, outcome
from tasks.compression import onnx_runtime
from tasks.data import datasets as data_mod
from tasks.energy_loop import inputs, ledger, report
from tasks.energy_loop import keys as flow_keys
from tasks.energy_loop.batch_fit import fit_summary, fitted_scenario
from tasks.energy_loop.calibrate import analytic_calibration, calibrate, machine_cache_dir
from tasks.energy_loop.calibrate_parallel import calibrate_parallel
from tasks.energy_loop.candidate import measure_step, model_spec, produce_step
from tasks.energy_loop.champion import rescore_champion
from tasks.energy_loop.parallel import Placement, ScaleOut, cluster_shape, cores
from tasks.meters.base import EnergyMeter
from tasks.meters.runtime import torch_threads
from tasks.meters.select import make_meter, resolve_meter_name, shared_meter
from tasks.meters.share import CpuTimeMeter, ProcessShareMeter
from tasks.models import factory as models
from tasks.models.evaluate import (
    energy_by_batch_size,
    measure_idle_power_w,
    quality,
    quality_tag,
    resolve_quality_metric,
)
from tasks.serving import scorer as serving
from thresholds.energy import keys as detail
from thresholds.energy.policy import (
    Calibration,
    CandidateResult,
    Final,
    FinalState,
    Next,
    RescoredChampion,
    Step,
    closest,
    confirm_on_full,
    judge,
    payback,
    plan_batch,
    price_training,
)
from thresholds.energy.request import LoopRequest
from thresholds.energy.schema import Scenario
from thresholds.errors import InputError
from thresholds.parallel import WidthChoice, parallel_width, requested_width
from thresholds.request import parse

log = logging.getLogger(__name__)


class CheckedInputs(BaseModel):
    """What the flow runs on once every input passed: the request, the scenario, the resolved meter, the data."""

    request: LoopRequest
    settings: Scenario
    meter: str
    data_path: str


@task(cache_policy=NO_CACHE)
def check_inputs(request: object) -> CheckedInputs | InputError:
    """The flow's first stage: the request (a `LoopRequest`, or the mapping a deployment or a Python caller
    passed) and every input it names checked, and the data prepared, before a run is opened.

    A problem comes back as the `InputError`, not raised, so no log holds a traceback; the flow ends
    Failed with its one line."""
    try:
        checked = parse(LoopRequest, request)
        settings = inputs.check_request(checked)
        meter_name = resolve_meter_name(checked.meter or settings.measurement.meter)
        prepared = inputs.prepare_checked(settings, checked)
    except InputError as exc:
        return exc
    return CheckedInputs(request=checked, settings=settings, meter=meter_name, data_path=prepared.data_path)


@task(cache_policy=NO_CACHE)
def data_tags(scenario: Scenario, data_path: str) -> dict[str, str]:
    """What preparing the data did and which quality metric the gates judge: loop-run and version tags."""
    data = data_mod.load_cached(data_path)
    metric, why = resolve_quality_metric(scenario.targets.quality_metric, data, scenario.model.metric)
    tags = {detail.QUALITY_METRIC: quality_tag(metric, data), flow_keys.QUALITY_METRIC_REASON: why[:4000],
            flow_keys.DATA_KEY: Path(data_path).name}  # fmt: skip
    tags.update({flow_keys.MODEL_HOOK_PREFIX + hook: value for hook, value in scenario.model.hooks.items()})
    if data.notes:
        tags[flow_keys.DATA_NOTES] = "; ".join(data.notes)[:4000]
    return tags


@task(cache_policy=NO_CACHE)
def log_data_source(loop_run_id: str, data_path: str) -> None:
    """The table the loop read (a file, a parts folder, a SQL source) as the loop run's training dataset input."""
    source = data_mod.load_cached(data_path).source
    if source:
        registry.log_data_source(loop_run_id, source)


@task(cache_policy=NO_CACHE)
def plan_next(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None, width: int = 1
) -> list[Next] | Final:
    """The next step(s): one, or up to `width` that can train at once."""
    return plan_batch(scenario, history, calibration, width)


@task(cache_policy=NO_CACHE)
def fit_batch_sizes(scenario: Scenario, data_path: str, loop_run_id: str) -> Scenario:
    """The scenario every candidate of the loop is measured and judged at: its own, or with smaller batch sizes
    where one call of the loop's architecture at its sizes takes longer than a share of a window (`batch_fit`);
    said in one console line and in the loop run's tags."""
    if scenario.measurement.inference_target != "this-machine":
        return scenario  # an estimate for a target device: nothing is timed here
    fitted, fits = fitted_scenario(scenario, data_mod.load_cached(data_path))
    m = scenario.measurement
    tags = {
        flow_keys.MEASURED_BATCH_SIZES: ",".join(str(b) for b in fitted.measurement.batch_sizes_served),
        flow_keys.CALL_S_AT_BATCH: ", ".join(f"{f.asked}: {f.asked_call_s:.4f}" for f in fits),
    }
    if fitted is not scenario:
        why = fit_summary(fits, m.min_window_s, m.max_call_window_share * m.min_window_s)
        tags[flow_keys.BATCH_SIZES_REASON] = why
        say("batch size", why, end=True)
    registry.log_loop_tags(loop_run_id, tags)
    return fitted


@task(cache_policy=NO_CACHE)
def calibrate_machine(
    scenario: Scenario, meter: str, cache_dir: str, loop_run_id: str, data_path: str
) -> Calibration | None:
    """Which rungs save energy for this loop's architecture on this machine (measured once, cached), logged to the
    loop's run.

    Not measured at all when the scenario switches calibration off: the policy would ignore it."""
    if not scenario.ladder.use_calibration:
        return None
    batch_size = scenario.measurement.inference_batch_size
    if scenario.measurement.inference_target == "analytic-45nm":
        table = analytic_calibration(batch_size)
    else:
        spec, threads = model_spec(scenario, data_mod.load_cached(data_path)), scenario.measurement.inference_threads
        table = calibrate(
            scenario_meter(scenario, meter),
            Path(cache_dir),
            batch_size,
            shared_dir=machine_cache_dir(),
            spec=spec,
            threads=threads,
        )
    registry.log_calibration(loop_run_id, table)
    return table


def scenario_meter(scenario: Scenario, meter: str) -> EnergyMeter:
    """The process's shared meter for `meter`, with the scenario's meter settings."""
    return shared_meter(meter, scenario.measurement.fixed_power_w, scenario.measurement.codecarbon_country)


@task(cache_policy=NO_CACHE)
def idle_power(scenario: Scenario, meter: str) -> float:
    """Idle power to subtract from inference windows, or 0 when the scenario does not ask for it."""
    if not scenario.measurement.subtract_idle:
        return 0.0
    return measure_idle_power_w(scenario_meter(scenario, meter), scenario.measurement.idle_window_s)


@task(cache_policy=NO_CACHE, task_run_name="train-#{index}-{step.label}")
def train_candidate(
    scenario: Scenario,
    step: Step,
    history: list[CandidateResult],
    index: int,
    data_path: str,
    work_dir: str,
    meter: str,
    placement: Placement | None = None,
) -> CandidateResult:
    """Build, train and save candidate `index` (on a Dask worker in parallel mode).

    `placement.phase_host`: other candidates train at the same time and the flow on that host reads the
    machine over the whole phase; a worker there times its windows in CPU seconds (its share is
    computed afterwards, `tasks.energy_loop.parallel.attribute_phase`). A worker on another host counts its
    own machine's windows. `placement.threads`: torch threads for this worker (cores / workers)."""
    import socket

    threads, phase_host = (placement.threads, placement.phase_host) if placement else (None, None)
    energy_meter = scenario_meter(scenario, meter)
    tags: dict[str, str] = {}
    if threads:
        import torch

        torch.set_num_threads(threads)
    if phase_host is not None:
        host = socket.gethostname()
        tags[detail.TRAIN_HOST] = host
        if host == phase_host:
            energy_meter = CpuTimeMeter(energy_meter.source)
        else:
            tags[detail.TRAIN_ENERGY_ATTRIBUTION] = (
                f"worker-host-windows: {host}'s machine-level meter, whole machine counted"
            )
    elif attribute_by_process(scenario, energy_meter):  # serial, but other processes share the machine-level reading
        energy_meter = ProcessShareMeter(energy_meter)
    produced = produce_step(scenario, step, history, index, data_path, Path(work_dir), energy_meter)
    tags[detail.TRAIN_PID] = str(os.getpid())
    if isinstance(energy_meter, CpuTimeMeter):  # its training windows, for its share of the phase
        tags.update(
            {detail.TRAIN_CPU_S: f"{energy_meter.cpu_s:.4f}", detail.TRAIN_WALL_S: f"{energy_meter.wall_s:.4f}"}
        )
    return produced.model_copy(update={"tags": {**produced.tags, **tags}})


def choose_width(
    scenario: Scenario, requested: int | str, meter: str, data_path: str, loop_run_id: str, address: str | None
) -> ScaleOut:
    """How many candidates of a rung train at once: forced, the slots of the given cluster, or
    (`auto`) the width calibration measured to save both wall time and energy here.

    Not a task itself: its calibration trains through the loop's own task (`train_candidate`)
    and task runner, as nested Prefect task runs of the flow."""
    wanted = requested_width(requested)
    n_cores = cores()
    energy_meter = scenario_meter(scenario, meter)
    table = None
    if address:
        slots, threads = cluster_shape(address)
        choice = WidthChoice(
            width=wanted or slots,
            threads_per_worker=threads,
            why=f"{wanted or slots} at once on the Dask cluster at {address}",
        )
    elif wanted is None and scenario.ladder.use_calibration and n_cores > 1:
        # A meter of its own reads the machine over each probe rung; the candidates' windows use the shared one.
        machine_meter = make_meter(meter, scenario.measurement.fixed_power_w, scenario.measurement.codecarbon_country)
        try:
            table = calibrate_parallel(machine_meter, scenario, data_path, train_candidate, meter)
        finally:
            machine_meter.close()
        m = scenario.measurement
        choice = parallel_width(
            table, None, n_cores, sigmas=m.significance_sigmas, min_gain_pct=scenario.ladder.min_gain_pct
        )
    else:
        choice = parallel_width(None, wanted, n_cores)
    idle_w = 0.0
    if choice.width > 1 or address:
        idle_w = (
            table.idle_power_w
            if table is not None
            else measure_idle_power_w(energy_meter, scenario.measurement.idle_window_s)
        )
    scale = ScaleOut(**choice.model_dump(), idle_power_w=idle_w, address=address)
    registry.log_parallel(
        loop_run_id, scale.model_dump(mode="json"), None if table is None else table.model_dump(mode="json")
    )
    return scale


def attribute_by_process(scenario: Scenario, meter: EnergyMeter) -> bool:
    """Whether training energy is this process's CPU share of the reading: machine-level meters
    (CodeCarbon, RAPL, fixed power) count every process on the machine; NVML reads the GPU."""
    setting = scenario.measurement.train_attribution
    if setting != "auto":
        return setting == "process"
    return meter.source.startswith(("codecarbon", "rapl", "fixed-power"))


@task(cache_policy=NO_CACHE, task_run_name="measure-#{produced.index}-{produced.step.label}")
def measure_candidate(
    scenario: Scenario,
    produced: CandidateResult,
    data_path: str,
    meter: str,
    idle_power_w: float,
    reference_dir: str | None = None,
) -> CandidateResult:
    """Quality and inference energy, measured serially in the flow's process (paired with the
    reference model, the baseline, in ABBA windows when given)."""
    return measure_step(scenario, produced, data_path, scenario_meter(scenario, meter), idle_power_w, reference_dir)


@task(cache_policy=NO_CACHE)
def log_candidate(
    scenario: Scenario, loop_run_id: str, history: list[CandidateResult], candidate: CandidateResult
) -> CandidateResult:
    """Price the candidate's training by work against what the loop has run so far, judge it, log it."""
    candidate = price_training(history, candidate)
    verdict = report.verdicts(scenario, [*history, candidate])[-1]
    run_id = registry.log_candidate(
        loop_run_id, candidate, verdict, serving.mlflow_serving(candidate.model_dir) if candidate.ok else None
    )
    return candidate.model_copy(update={"run_id": run_id})


@task(cache_policy=NO_CACHE)
def confirm_full_test(
    scenario: Scenario, final: Final, history: list[CandidateResult], data_path: str
) -> tuple[Final, list[CandidateResult]]:
    """Before promotion: the chosen candidate and the baseline on the full test split."""
    if not scenario.measurement.eval_subset or final.chosen is None:
        return final, history
    data = data_mod.load_cached(data_path)
    full: dict[int, tuple[float | None, float | None]] = {}
    for index in {0, final.chosen}:
        model_dir = Path(history[index].model_dir or "")
        model, spec = models.load(model_dir)
        metric, _ = resolve_quality_metric(scenario.targets.quality_metric, data, spec.hooks.get("metric"))
        q = quality(onnx_runtime.predictor(model_dir, model, spec), data, metric=metric)
        full[index] = (q.accuracy, q.rmse)
    return confirm_on_full(scenario, final, history, full)


BATCH_SIZES = [1, 16, 64, 256, 1024, 4096]


@task(cache_policy=NO_CACHE)
def deployment_hints(
    scenario: Scenario, final: Final, history: list[CandidateResult], data_path: str, meter: str
) -> dict[str, str]:
    """For the model the loop ended on: the energy-optimal inference batch size and the energy payback."""
    chosen = history[final.chosen] if final.chosen is not None else closest(scenario, history)
    if chosen is None or chosen.model_dir is None or len(history) < 2:
        return {}
    model, spec = models.load(Path(chosen.model_dir))
    # One short window per size: the sizes differ by orders of magnitude in energy per sample, so the
    # argmin needs no repeats (6 sizes x 2 windows x 0.5 s was 6 s of wall time outside training).
    window_s = min(scenario.measurement.min_window_s, 0.2)
    threads = scenario.measurement.inference_threads
    served = onnx_runtime.predictor(Path(chosen.model_dir), model, spec, threads)
    with torch_threads(threads):
        by_size = energy_by_batch_size(
            served, data_mod.load_cached(data_path), scenario_meter(scenario, meter), BATCH_SIZES, window_s, repeats=1
        )
    best = min(by_size, key=lambda size: by_size[size])
    back = payback(history, chosen)
    hints = {
        keys.CANDIDATE: str(chosen.index),
        keys.DEPLOYMENT_ENERGY_OPTIMAL_BATCH_SIZE: str(best),
        flow_keys.DEPLOYMENT_ENERGY_J_PER_1K_BY_BATCH_SIZE: ", ".join(f"{k}: {v:.4g}" for k, v in by_size.items()),
        flow_keys.PAYBACK: back.summary(),
        flow_keys.PAYBACK_LOOP_ENERGY_J: f"{back.loop_energy_j:.2f}",
    }
    if back.predictions_to_payback is not None:
        hints[flow_keys.PAYBACK_PREDICTIONS] = f"{back.predictions_to_payback:.0f}"
    return hints


class Closing(NamedTuple):
    """What the closing stage adds to the table and the run: the deployment hints, the loop's own cost
    (`ledger.loop_energy`; empty: not accounted), and the champion as this run re-scored it (None: not needed)."""

    hints: dict[str, str]
    loop_energy: dict[str, float] = {}
    champion: RescoredChampion | None = None


@task(cache_policy=NO_CACHE)
def champion_reference(
    scenario: Scenario, model_name: str, data_path: str, meter: str, idle_power_w: float, history: list[CandidateResult]
) -> RescoredChampion | None:
    """The champion measured as this run's candidates were, where its recorded figures are not comparable with
    theirs (`tasks/energy_loop/champion.py`); a champion that cannot be fetched or measured keeps its record."""
    if not history:
        return None
    try:
        return rescore_champion(
            scenario, model_name, data_path, scenario_meter(scenario, meter), idle_power_w, history[0]
        )
    except Exception as exc:  # the registry away, a model this checkout cannot load: judged on its record
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        log.warning(
            "champion of %s not re-scored (%s: %s): judged on its record", model_name, type(exc).__name__, first
        )
        return None


def loop_ledger(scenario: Scenario, meter: str) -> ledger.Ledger:
    """The loop's own meter (a separate instance of the loop's meter kind) over its stretches: this process's CPU
    share of a machine-level reading, as training is attributed (`attribute_by_process`), so what other processes
    on a shared machine draw is not the loop's."""
    m = scenario.measurement

    def make() -> EnergyMeter:
        inner = make_meter(meter, m.fixed_power_w, m.codecarbon_country)
        return ProcessShareMeter(inner) if attribute_by_process(scenario, inner) else inner

    return ledger.Ledger(ledger.loop_meter(make))


@task(cache_policy=NO_CACHE)
def close_loop(
    scenario: Scenario,
    final: Final,
    history: list[CandidateResult],
    loop_run_id: str,
    model_name: str,
    work_dir: str,
    common_tags: dict[str, str],
    closing: Closing,
) -> LoopOutcome:
    hints = closing.hints
    table = report.iteration_table(scenario, history)
    if hints:
        table += (
            f"\n\nCandidate #{hints[keys.CANDIDATE]}: {hints[flow_keys.PAYBACK]}. Energy-optimal inference batch size "
            f"here: {hints[keys.DEPLOYMENT_ENERGY_OPTIMAL_BATCH_SIZE]} (J/1k by batch size: "
            f"{hints[flow_keys.DEPLOYMENT_ENERGY_J_PER_1K_BY_BATCH_SIZE]})."
        )
    if closing.loop_energy:
        table += "\n\n" + ledger.table(closing.loop_energy)
        registry.log_loop_energy(loop_run_id, closing.loop_energy)
    if closing.champion is not None:
        c = closing.champion
        quality = f"accuracy {c.figures.accuracy:.4f}" if c.figures.accuracy is not None else f"rmse {c.figures.rmse}"
        table += (
            f"\n\nThe champion (version {c.version}) was re-scored as this run's candidates were ({c.reason}): "
            f"{c.figures.inference_energy_j_per_1k:.4g} J/1k, {quality}."
        )
        found = {"inference_energy_j_per_1k": c.figures.inference_energy_j_per_1k, "accuracy": c.figures.accuracy,
                 "rmse": c.figures.rmse}  # fmt: skip
        registry.log_rescored_champion(loop_run_id, c, {k: v for k, v in found.items() if v is not None})
    verdicts = report.verdicts(scenario, history)
    passed = [c.ok and judge(scenario, c, history[0]).passed for c in history] if history else []
    plot = (
        report.pareto_plot(history, Path(work_dir) / "pareto.png", f"{model_name}: {final.state.value}")
        if history
        else None
    )
    record = registry.close_loop(
        loop_run_id,
        model_name,
        final,
        history,
        scenario.measurement.significance_sigmas,
        registry.LoopReport(verdicts, passed, table, plot),
        common_tags,
        registry.Extras(hints, closing.champion),
    )
    if final.state != FinalState.PASSED:
        # An automation on this event notifies the team (README: "Alerts").
        emit_event(
            event=f"energy-loop.loop.{final.state.value.lower()}",
            resource={"prefect.resource.id": f"energy-loop.model.{model_name}", "prefect.resource.name": model_name},
            payload={"reason": final.reason, "mlflow_run_id": loop_run_id},
        )
    closed = outcome("Energy loop", f"energy-loop-{model_name}", final, record, model_name, loop_run_id, table, history)
    return closed.model_copy(update={"loop_energy": closing.loop_energy})
