"""Candidates as standard MLflow models (MLflow 3 logged models), and scoring a registered version.

Each candidate's run logs one logged model: the pyfunc flavour written as models-from-code
(`tasks/serving/pyfunc_model.py`, passed in by the caller: nothing unpickled on load), the model folder as its `model`
artifact (state dict, JSON specs, optional preprocessing), a signature and an input example.
The run's figures (logged at step 0) are linked to the logged model by MLflow, so the UI shows
them as the model's metrics; where a figure changed after the run (the full-split confirmation)
`attach_figures` writes the registry's value. Versions are registered from `models:/<model_id>`.
"""

from __future__ import annotations

from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

from registry import keys
from registry.store import IncompleteArtifact, client, log_benchmark

PYFUNC_CODE_NAME = "pyfunc_model.py"  # the models-from-code file (tasks/serving/pyfunc_model.py) as stored in the model
ARTIFACT = "model"  # the model folder's name among the pyfunc's artifacts
# Pinned to what logged the model. The project itself (tasks.serving.scorer) must be installed where it is served.
REQUIREMENTS = ("torch", "mlflow", "pandas", "numpy", "pydantic")


def _use(mc: Any) -> None:
    """Point MLflow's fluent API (used by `Model.log` and `pyfunc.load_model`) at the client's store."""
    import mlflow

    mlflow.set_tracking_uri(mc.tracking_uri)


def _new_logged_model(mc: Any, run_id: str, name: str, tags: dict[str, str]) -> str:
    """A logged model in the run's experiment (left to `Model.log`, it lands in the default experiment)."""
    _use(mc)
    run = mc.get_run(run_id)
    return str(
        mc.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=run_id, tags=tags, params=run.data.params
        ).model_id
    )


def log_model(
    mc: Any,
    run_id: str,
    model_dir: Path,
    tags: dict[str, str],
    code_path: Path,
    example: Any,
    example_output: Any,
    requirements: tuple[str, ...] = (),
) -> str:
    """Log `model_dir` as the run's MLflow model served by `code_path`, with the signature of `example` ->
    `example_output` (raw input rows and what the model returns for them) and `requirements` beyond torch's; return the
    logged model's ID."""
    import mlflow
    from mlflow.models import Model, infer_signature

    info = Model.log(
        artifact_path=None,
        name=ARTIFACT,
        flavor=mlflow.pyfunc,
        run_id=run_id,
        model_id=_new_logged_model(mc, run_id, ARTIFACT, tags),
        python_model=str(code_path),
        artifacts={ARTIFACT: str(model_dir)},
        signature=infer_signature(example, example_output),
        input_example=example,
        pip_requirements=[f"{name}=={installed(name)}" for name in (*REQUIREMENTS, *requirements)],
    )
    return str(info.model_id)


def log_onnx(mc: Any, run_id: str, onnx_path: Path, tags: dict[str, str]) -> str:
    """An exported ONNX graph as a second logged model of the run (MLflow's onnx flavour); return its ID."""
    import mlflow.onnx
    import onnx
    from mlflow.models import Model

    info = Model.log(
        artifact_path=None,
        name="onnx",
        flavor=mlflow.onnx,
        run_id=run_id,
        model_id=_new_logged_model(mc, run_id, "onnx", tags),
        onnx_model=onnx.load(str(onnx_path)),
        pip_requirements=[f"{name}=={installed(name)}" for name in ("onnx", "onnxruntime", "mlflow", "numpy")],
    )
    return str(info.model_id)


def logged_model_id(mc: Any, run_id: str) -> str | None:
    """The logged model a candidate's run produced, or None."""
    outputs = mc.get_run(run_id).outputs
    models = [] if outputs is None else outputs.model_outputs
    pyfuncs = [m.model_id for m in models if mc.get_logged_model(m.model_id).name == ARTIFACT]
    return str(pyfuncs[-1]) if pyfuncs else None


def check_logged(mc: Any, model_id: str, model_dir: Path) -> None:
    """The logged model's MLmodel, its code and every file of the model folder are in the store at full size."""
    stored = {f.path: f.file_size for f in mc.list_logged_model_artifacts(model_id)}
    # pyfunc keeps an artifact folder under its own name: artifacts/<folder name>/...
    nested = {
        Path(f.path).name: f.file_size for f in mc.list_logged_model_artifacts(model_id, f"artifacts/{model_dir.name}")
    }
    for required in ("MLmodel", PYFUNC_CODE_NAME):
        if required not in stored:
            raise IncompleteArtifact(
                f"logged model {model_id}: {required} is missing from the store: nothing registered"
            )
    for local in model_dir.iterdir():
        size = local.stat().st_size
        if nested.get(local.name) != size:
            stored_size = nested.get(local.name)
            raise IncompleteArtifact(
                f"logged model {model_id}: {model_dir.name}/{local.name} is {stored_size} bytes in the store, expected "
                f"{size}: nothing registered"
            )


def attach_figures(mc: Any, run_id: str, model_id: str | None, figures: dict[str, float]) -> None:
    """The version's figures as the latest step-0 metrics of its run, and of its logged model when it has one, where
    they differ from what is there."""
    import time

    from mlflow.entities import Metric

    if model_id is not None:
        current = {m.key: m.value for m in mc.get_logged_model(model_id).metrics or []}
    else:
        current = dict(mc.get_run(run_id).data.metrics)
    now = int(time.time() * 1000)
    changed = [
        Metric(k, float(v), now, 0, run_id=run_id, model_id=model_id)
        for k, v in figures.items()
        if current.get(k) != float(v)
    ]
    if changed:
        mc.log_batch(run_id, metrics=changed)


def parse_ref(ref: str) -> tuple[str, str]:
    """`NAME@ALIAS`, `NAME/VERSION` or `NAME` (its champion) as (name, "@alias" or "version")."""
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        return name, f"@{alias}"
    name, sep, number = ref.rpartition("/")
    if sep and number.isdigit():
        return name, number
    return ref, "@champion"


def model_uri(name: str, ref: str) -> str:
    return f"models:/{name}@{ref[1:]}" if ref.startswith("@") else f"models:/{name}/{ref}"


def resolve_version(mc: Any, name: str, ref: str) -> Any:
    """The registered version `ref` names; raises LookupError with one line when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return mc.get_model_version_by_alias(name, ref[1:]) if ref.startswith("@") else mc.get_model_version(name, ref)
    except MlflowException:
        pass
    try:
        known = [str(v.version) for v in mc.search_model_versions(f"name='{name}'", max_results=20)]
    except MlflowException:
        known = []
    if not known:
        raise LookupError(f"model = {name!r}: expected a registered model name (none by that name has versions)")
    what = f"alias {ref[1:]!r}" if ref.startswith("@") else f"version {ref!r}"
    raise LookupError(f"{what} of {name}: not found (versions: {', '.join(sorted(known, key=int))})")


def load_pyfunc(mc: Any, name: str, ref: str) -> Any:
    """`mlflow.pyfunc.load_model` of a registered version."""
    import mlflow

    _use(mc)
    return mlflow.pyfunc.load_model(model_uri(name, ref))


def download_model_dir(mc: Any, name: str, ref: str, dst: Path) -> Path:
    """The model folder (state dict + specs) of a registered version, downloaded to `dst`."""
    import mlflow

    _use(mc)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri(name, ref), dst_path=str(dst)))
    found = next(local.rglob("spec.json"), None)
    if found is None:
        raise FileNotFoundError(f"{model_uri(name, ref)}: no spec.json in the model's artifacts")
    return found.parent


def record_observed(mc: Any, name: str, version: str, energy_j_per_1k: float, details: dict[str, str]) -> None:
    """What scoring for real measured, on the version beside the loop's figure."""
    mc.set_model_version_tag(name, version, keys.OBSERVED_INFERENCE_ENERGY_J_PER_1K, f"{energy_j_per_1k:.6g}")
    for key, value in details.items():
        mc.set_model_version_tag(name, version, keys.OBSERVED_PREFIX + key, value[:4000])


def log_onnx_benchmark(experiment: str, params: dict[str, str], graphs: dict[str, Path]) -> str:
    """A benchmark's run holding each ONNX graph as a logged model of MLflow's onnx flavour (tagged with its label)."""
    run_id = log_benchmark(experiment, params, [])
    mc = client()
    for label, path in graphs.items():
        log_onnx(mc, run_id, path, tags={keys.BENCHMARK_MODEL: label})
    return run_id


def log_observed_window(
    mc: Any, run_id: str, metrics: dict[str, float], tags: dict[str, str], timestamp_ms: int, step: int
) -> None:
    """One serving window's figures on the version's run: one metric series per figure, so the run's page plots the
    observed energy, latency and quality over time beside the loop's own figures; the energy's provenance as tags."""
    from mlflow.entities import Metric, RunTag

    mc.log_batch(
        run_id,
        metrics=[Metric(k, v, timestamp_ms, step) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def record_production_event(mc: Any, name: str, version: str, key: str, record: dict[str, Any]) -> None:
    """The last production breach (or recovery) on the version, as a JSON tag the MLflow UI shows."""
    import json

    mc.set_model_version_tag(name, version, key, json.dumps(record, sort_keys=True)[:4000])
