"""What the energy loop writes to MLflow: one nested run per candidate, its version tags, the
machine's calibration, and the loop's close through the registry core (`registry/core.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from registry import keys, mlflow_model
from registry.core import (
    LoopRecord,
    NestedRun,
    RunFiles,
    VersionSpec,
    champion_version,
    log_nested_run,
    move_champion,
    version_figures,
)
from registry.core import close_loop as close_any_loop
from registry.store import client
from thresholds.core import Final
from thresholds.energy import keys as detail
from thresholds.energy.policy import Calibration, CandidateResult, ChampionFigures, RescoredChampion, beats_champion

EXPERIMENT = "energy-loop"


def figures(c: CandidateResult) -> dict[str, float]:
    """A candidate's figures: its version's tags, and its run's and logged model's metrics."""
    metrics: dict[str, float | int | None] = {
        keys.ACCURACY: c.accuracy,
        keys.RMSE: c.rmse,
        keys.INFERENCE_ENERGY_J_PER_1K: c.inference_energy_j_per_1k,
        keys.INFERENCE_ENERGY_SEM_J_PER_1K: c.inference_energy_sem_j_per_1k if c.inference_repeats else None,
        keys.ANALYTIC_INFERENCE_ENERGY_J_PER_1K: c.analytic_inference_energy_j_per_1k,
        keys.TRAIN_ENERGY_J: c.train_energy_j,
        keys.TRAIN_ENERGY_SEM_J: c.train_energy_sem_j if c.train_energy_j is not None else None,
        keys.LATENCY_MS_PER_BATCH: c.latency_ms_per_batch,
        keys.PARAMS: c.params,
        keys.MACS: c.macs,
        keys.INFERENCE_RATIO_VS_BASELINE: c.inference_ratio_vs_baseline,
        keys.INFERENCE_RATIO_CI95_HIGH: c.inference_ratio_ci95_high,
        # priced by work (thresholds/energy/training_cost.py)
        keys.TRAIN_RATIO_VS_BASELINE: c.train_ratio_vs_baseline,
        keys.TRAIN_RATIO_SEM: c.train_ratio_sem if c.train_ratio_vs_baseline is not None else None,
    }
    return {k: v for k, v in metrics.items() if v is not None}


CHAMPION_FIGURES = (
    keys.INFERENCE_ENERGY_J_PER_1K,
    keys.INFERENCE_ENERGY_SEM_J_PER_1K,
    keys.ACCURACY,
    keys.RMSE,
    keys.PARAMS,
    keys.TRAIN_ENERGY_J,
    keys.TRAIN_ENERGY_SEM_J,
)


def champion_figures(mc: Any, version: Any | None) -> ChampionFigures | None:
    """What the champion rule compares, from the champion version's run metrics (its tags for a version registered
    without them); None when there is no champion."""
    if version is None:
        return None
    found = version_figures(mc, version, CHAMPION_FIGURES)
    return ChampionFigures(
        energy_source=version.tags.get(keys.ENERGY_SOURCE),
        inference_energy_j_per_1k=found.get(keys.INFERENCE_ENERGY_J_PER_1K),
        inference_energy_sem_j_per_1k=found.get(keys.INFERENCE_ENERGY_SEM_J_PER_1K, 0.0),
        accuracy=found.get(keys.ACCURACY),
        rmse=found.get(keys.RMSE),
        params=int(found.get(keys.PARAMS, 0)),
        train_energy_j=found.get(keys.TRAIN_ENERGY_J),
        train_energy_sem_j=found.get(keys.TRAIN_ENERGY_SEM_J, 0.0),
    )


def version_tags(c: CandidateResult, verdict: str, extra: dict[str, str]) -> dict[str, str]:
    """A candidate's figures as tags: on its nested run, and on its model version."""
    tags = {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in figures(c).items()}
    tags.update(
        {
            keys.ENERGY_SOURCE: c.energy_source,
            keys.ENERGY_ESTIMATED: str(c.estimated).lower(),
            keys.COMPRESSION_STEPS: "+".join(c.lineage) or "none",
            keys.CANDIDATE: str(c.index),
            keys.VERDICT: verdict[:4000],
        }
    )
    # How a training figure was attributed when it was not a plain reading (candidates trained in parallel),
    # and which runtime, precision and batch sizes the inference figures belong to (`serving.runtime`, ...).
    copied = (detail.TRAIN_ENERGY_ATTRIBUTION, detail.SERVING_PREFIX)
    tags.update({k: v for k, v in c.tags.items() if k.startswith(copied)})
    tags.update(extra)
    return tags


class Serving(NamedTuple):
    """What makes a candidate's folder a standard MLflow model: the models-from-code file that serves it,
    and a few raw input rows with the model's output for them (the input example and the signature)."""

    code_path: Path
    example: Any
    example_output: Any
    requirements: tuple[str, ...] = ()  # packages the served runtime needs beyond torch's (e.g. onnxruntime)
    onnx_path: Path | None = None  # the graph an onnxruntime version serves: logged with MLflow's onnx flavour too


def log_candidate(loop_run_id: str, c: CandidateResult, verdict: str, serving: Serving | None = None) -> str:
    """Nested run with params, metrics, per-epoch curves and tags; the model folder as an MLflow model when
    `serving` says how it is served, else as plain files."""
    params = {
        keys.STEP: c.step.label,
        keys.PARENT: str(c.step.parent),
        keys.COMPRESSION_STEPS: "+".join(c.lineage) or "none",
    }
    metrics = {
        keys.ACCURACY: c.accuracy,
        keys.RMSE: c.rmse,
        keys.TRAIN_ENERGY_J: c.train_energy_j,
        keys.INFERENCE_ENERGY_J_PER_1K: c.inference_energy_j_per_1k,
        keys.INFERENCE_ENERGY_SEM_J_PER_1K: c.inference_energy_sem_j_per_1k,
        keys.INFERENCE_ENERGY_CI95_J_PER_1K: c.inference_energy_ci95_j_per_1k,
        keys.INFERENCE_REPEATS: c.inference_repeats,
        keys.ANALYTIC_INFERENCE_ENERGY_J_PER_1K: c.analytic_inference_energy_j_per_1k,
        keys.TRAIN_ENERGY_SEM_J: c.train_energy_sem_j,
        keys.LATENCY_MS_PER_BATCH: c.latency_ms_per_batch,
        keys.SPENT_ENERGY_J: c.spent_energy_j,
        keys.PARAMS: c.params,
        keys.MACS: c.macs,
        keys.EPOCHS_RUN: c.epochs_run,
        keys.EPOCHS_SAVED: c.epochs_saved,
        keys.TRAIN_S: c.train_s,
        keys.MEASURE_S: c.measure_s,
        keys.INFERENCE_RATIO_VS_BASELINE: c.inference_ratio_vs_baseline,
        keys.INFERENCE_RATIO_CI95_LOW: c.inference_ratio_ci95_low,
        keys.INFERENCE_RATIO_CI95_HIGH: c.inference_ratio_ci95_high,
        keys.INFERENCE_PAIRS: c.inference_pairs or None,
        keys.TRAIN_RATIO_VS_BASELINE: c.train_ratio_vs_baseline,
        keys.TRAIN_RATIO_SEM: c.train_ratio_sem if c.train_ratio_vs_baseline is not None else None,
    }
    tags = {**version_tags(c, verdict, {}), **{keys.DETAIL_PREFIX + k: v for k, v in c.tags.items()}}
    if c.rejected_reason:
        tags[keys.REJECTED_REASON] = c.rejected_reason[:4000]
    log_model = None
    if serving is not None and c.model_dir:
        model_dir = Path(c.model_dir)
        shown = (
            keys.ENERGY_SOURCE,
            keys.ENERGY_ESTIMATED,
            keys.COMPRESSION_STEPS,
            keys.CANDIDATE,
            detail.SERVING_RUNTIME,
            detail.SERVING_PRECISION,
        )
        model_tags: dict[str, str] = {k: tags[k] for k in shown if k in tags}

        def log_model(mc: Any, run_id: str) -> None:  # the run's step-0 metrics become the logged model's metrics
            mlflow_model.log_model(
                mc,
                run_id,
                model_dir,
                model_tags,
                serving.code_path,
                serving.example,
                serving.example_output,
                serving.requirements,
            )
            if serving.onnx_path is not None:
                mlflow_model.log_onnx(mc, run_id, serving.onnx_path, model_tags)

    return log_nested_run(
        loop_run_id,
        NestedRun(f"#{c.index} {c.step.label}", params, metrics, c.series, tags),
        RunFiles(c.model_dir, "model", log_model),
        c.ok,
    )


def move_champion_if_better(
    mc: Any, model_name: str, version: str, candidate: CandidateResult, sigmas: float, owner: str
) -> tuple[bool, str]:
    """Under the champion lock: re-read the champion, judge, move the alias only if `candidate` beats it."""
    return move_champion(
        mc,
        model_name,
        version,
        lambda mc, champion: beats_champion(candidate, champion_figures(mc, champion), sigmas),
        owner,
    )


class Extras(NamedTuple):
    """What the closing stage adds: the deployment hints for the chosen candidate's version, and the champion
    re-scored as this run judged its candidates (None: its record is comparable, or there is none)."""

    hints: dict[str, str] | None = None
    champion: RescoredChampion | None = None


def champion_model(model_name: str, dst: Path) -> tuple[str, dict[str, str], ChampionFigures, Path] | None:
    """The champion's version, its tags, its recorded figures and its model folder downloaded to `dst`; None without
    a champion."""
    mc = client()
    version = champion_version(mc, model_name)
    if version is None:
        return None
    recorded = champion_figures(mc, version)
    assert recorded is not None  # a version was given
    model_dir = mlflow_model.download_model_dir(mc, model_name, str(version.version), dst)
    return str(version.version), dict(version.tags), recorded, model_dir


class LoopReport(NamedTuple):
    """The loop's report: per candidate its verdict and whether it met every gate; the iteration table (markdown) and
    the Pareto plot (None: none drawn)."""

    verdicts: list[str]
    gates_passed: list[bool]
    table_md: str
    plot_path: Path | None


def close_loop(
    loop_run_id: str,
    model_name: str,
    final: Final,
    history: list[CandidateResult],
    sigmas: float,
    report: LoopReport,
    common_tags: dict[str, str],
    extras: Extras | None = None,
) -> LoopRecord:
    """Register every candidate that produced a model, end the run, move `champion` if earned (judged against the
    champion as this run re-scored it, where it did)."""
    verdicts, gates_passed, table_md, plot_path = report
    hints, rescored = extras or Extras()
    files = [plot_path] if plot_path is not None else []
    chosen_run = history[final.chosen].run_id if final.chosen is not None else None
    if plot_path is not None and plot_path.exists() and chosen_run:
        # The version page links to its source run: put the Pareto plot there too for the chosen model.
        client().log_artifact(chosen_run, str(plot_path))
    versions = []
    for c, verdict, passed in zip(history, verdicts, gates_passed, strict=True):
        if not (c.ok and c.run_id is not None and c.model_dir is not None):
            continue
        loop_tags = {
            **common_tags,
            keys.GATES_PASSED: str(passed).lower(),
            keys.LOOP_RUN_ID: loop_run_id,
            keys.LOOP_STATE_AT_CLOSE: final.state.value,
            keys.PARETO_PLOT: f"runs:/{loop_run_id}/pareto.png",
        }
        if hints and hints.get(keys.CANDIDATE) == str(c.index):
            loop_tags.update({k: v[:4000] for k, v in hints.items() if k != keys.CANDIDATE})
        model_id = mlflow_model.logged_model_id(client(), c.run_id)  # None: logged as plain files
        versions.append(
            VersionSpec(
                index=c.index, run_id=c.run_id, model_dir=c.model_dir, artifact_path="model",
                tags=version_tags(c, verdict, loop_tags), model_id=model_id,
                figures=figures(c),
            )
        )  # fmt: skip
    chosen = history[final.chosen] if final.chosen is not None else None
    return close_any_loop(
        loop_run_id,
        model_name,
        "Models produced by the energy feedback loop.",
        final,
        {"iterations.md": f"# Energy loop: {final.state.value}\n\n{final.reason}\n\n{table_md}\n"},
        files,
        versions,
        lambda mc, champion: (
            beats_champion(chosen, _reference(mc, champion, rescored), sigmas)
            if chosen is not None
            else (False, "no candidate chosen")
        ),
    )


def _reference(mc: Any, champion: Any | None, rescored: RescoredChampion | None) -> ChampionFigures | None:
    """The champion's figures as the rule compares them: as this run re-scored them when it re-scored this very
    version (the alias may have moved meanwhile), else as recorded."""
    if champion is not None and rescored is not None and str(champion.version) == rescored.version:
        return rescored.figures
    return champion_figures(mc, champion)


def log_rescored_champion(loop_run_id: str, rescored: RescoredChampion, figures: dict[str, float]) -> None:
    """Which champion the run re-scored, why, and its figures as this run judged them, on the loop run."""
    mc = client()
    mc.set_tag(loop_run_id, keys.CHAMPION_RESCORED_VERSION, rescored.version)
    mc.set_tag(loop_run_id, keys.CHAMPION_RESCORED_REASON, rescored.reason[:4000])
    for name, value in figures.items():
        mc.log_metric(loop_run_id, f"{keys.CHAMPION_RESCORED_PREFIX}{name}", value)


def log_calibration(loop_run_id: str, table: Calibration) -> None:
    """The machine's rung table as tags of the loop run (and a JSON artifact)."""
    mc = client()
    mc.set_tag(loop_run_id, keys.CALIBRATION_MACHINE, table.machine[:4000])
    for group, values in (("inference_ratio", table.inference_ratio), ("train_ratio", table.train_ratio)):
        for key, value in values.items():
            mc.set_tag(loop_run_id, f"{keys.CALIBRATION_PREFIX}{group}.{key}", f"{value:.4f}")
    mc.log_dict(loop_run_id, table.model_dump(), "calibration.json")


def log_parallel(loop_run_id: str, choice: dict[str, Any], table: dict[str, Any] | None) -> None:
    """The loop's width and why as tags of the loop run; the parallel calibration as a JSON artifact."""
    mc = client()
    for key in ("width", "threads_per_worker", "why", "idle_power_w"):
        mc.set_tag(loop_run_id, keys.PARALLEL_PREFIX + key, str(choice[key])[:4000])
    if table is not None:
        mc.log_dict(loop_run_id, table, "parallel-calibration.json")


def log_loop_tags(loop_run_id: str, tags: dict[str, str]) -> None:
    """Tags of the loop run set once the loop knows them (the batch sizes it measures at)."""
    mc = client()
    for key, value in tags.items():
        mc.set_tag(loop_run_id, key, value[:4000])


def log_loop_energy(loop_run_id: str, figures: dict[str, float]) -> None:
    """Where the loop's own energy and wall time went, as metrics of the loop run (`loop_energy_j`, its parts)."""
    from mlflow.entities import Metric

    client().log_batch(loop_run_id, metrics=[Metric(key, float(value), 0, 0) for key, value in figures.items()])


_MLFLOW_TYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean", "M": "datetime"}  # else string


def _mlflow_type(dtype: str) -> str:
    """MLflow's column type for a pandas dtype's name (`int64` -> long); pandas' own dtypes are strings."""
    import numpy as np

    if dtype.startswith("datetime64"):  # tz-aware ones too (`datetime64[ns, UTC]`), which numpy does not know
        return "datetime"
    try:
        kind = np.dtype(dtype.lower()).kind  # lower: nullable `Int64`, `Float64`
    except TypeError:  # category, string
        kind = "O"
    return _MLFLOW_TYPES.get(kind, "string")


def log_data_source(loop_run_id: str, record: dict[str, Any]) -> None:
    """The table the loop read (`tasks.data.sources.TableRead.record()`) as the loop run's training dataset input:
    its source, rows, columns and content digest (our digest of every row, not MLflow's of the first 10,000), and as
    tags to search runs by."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    columns: dict[str, str] = record["columns"]
    schema = {"mlflow_colspec": [{"name": name, "type": _mlflow_type(dtype)} for name, dtype in columns.items()]}
    profile = {"num_rows": record["rows"], "num_elements": record["rows"] * len(columns)}
    dataset = Dataset(
        name=record["name"],
        digest=record["digest"],
        source_type=record["source_type"],
        source=json.dumps({"uri": record["source"]}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    mc = client()
    mc.log_inputs(loop_run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])])
    for key, value in (
        (keys.DATA_SOURCE, record["source"]),
        (keys.DATA_DIGEST, record["digest"]),
        (keys.DATA_ROWS, record["rows"]),
    ):
        mc.set_tag(loop_run_id, key, str(value)[:4000])
