"""An onnxruntime version as a standard MLflow model: its pyfunc serves `model.onnx` with onnxruntime,
the graph is logged with MLflow's onnx flavour too, and the version records its runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from registry import energy, mlflow_model
from registry.store import client as tracking_client
from tasks.compression import onnx_runtime
from tasks.data import datasets as data_mod
from tasks.models import factory as models
from tasks.serving import scorer as serving
from thresholds.energy.policy import CandidateResult, Step, StepKind


def _saved_digits_model(tmp_path: Path) -> tuple[data_mod.CachedData, Path]:
    """The digits data and a saved, servable torch MLP folder (weights, input spec, preprocessing)."""
    import torch

    data = data_mod.load_cached(str(data_mod.prepare("digits", tmp_path / "cache")))
    spec = models.ModelSpec(in_features=data.n_features, out_features=data.out_features)
    torch.manual_seed(0)
    torch_dir = models.save(models.build(spec), spec, tmp_path / "torch")
    serving.save_input_spec(serving.input_spec(data), torch_dir)
    data.write_preprocessing(torch_dir)
    return data, torch_dir


def test_an_onnxruntime_version_loads_and_predicts_with_onnxruntime(mlflow_store: str, tmp_path: Path) -> None:
    import mlflow
    import torch

    from tests.conftest import require

    require(onnx_runtime.unavailable() is None, "the ONNX extra (pip install -e '.[onnx]')")
    data, torch_dir = _saved_digits_model(tmp_path)
    ort_dir = Path(shutil.copytree(torch_dir, tmp_path / "ort"))
    onnx_runtime.save_for_onnxruntime(ort_dir, "fp32")

    tags = {
        "serving.runtime": "onnxruntime",
        "serving.precision": "fp32",
        "serving.batch_sizes": "1,64",
        "energy.detail": "x",
    }
    candidate = CandidateResult(
        index=1,
        step=Step(kind=StepKind.ORT, value="fp32", parent=0),
        lineage=["ort:fp32"],
        model_dir=str(ort_dir),
        tags=tags,
    )
    assert {k: v for k, v in energy.version_tags(candidate, "kept", {}).items() if k.startswith("serving.")} == {
        "serving.runtime": "onnxruntime",
        "serving.precision": "fp32",
        "serving.batch_sizes": "1,64",
    }
    mc = tracking_client()
    loop = mc.create_run(mc.create_experiment("ort"))
    run_id = energy.log_candidate(loop.info.run_id, candidate, "kept", serving.mlflow_serving(str(ort_dir)))

    model_id = mlflow_model.logged_model_id(mc, run_id)
    assert model_id is not None
    mlflow_model.check_logged(mc, model_id, ort_dir)  # model.onnx and runtime.json travel with the weights
    logged = mc.get_logged_model(model_id)
    assert logged.tags["serving.runtime"] == "onnxruntime" and logged.tags["serving.precision"] == "fp32"
    requirements = (
        Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path / "req")))
        / "requirements.txt"
    ).read_text()
    assert "onnxruntime==" in requirements
    # The onnx flavour: a second logged model of the run, loadable on its own.
    outputs = [mc.get_logged_model(m.model_id) for m in mc.get_run(run_id).outputs.model_outputs]
    onnx_logged = next(m for m in outputs if m.name == "onnx")
    assert onnx_logged.tags["serving.runtime"] == "onnxruntime"
    x = data.x_test[:5].numpy()
    raw_graph = mlflow.pyfunc.load_model(f"models:/{onnx_logged.model_id}").predict({onnx_runtime.INPUT: x})
    torch_model, _ = models.load(torch_dir)
    with torch.no_grad():
        np.testing.assert_allclose(
            raw_graph[onnx_runtime.OUTPUT], torch_model(data.x_test[:5]).numpy(), rtol=1e-4, atol=1e-5
        )

    # The pyfunc: raw rows in, served by an onnxruntime session, the torch model's predictions out.
    loaded = mlflow.pyfunc.load_model(f"models:/{model_id}")
    assert isinstance(loaded.unwrap_python_model().scorer.model, onnx_runtime.OrtModule)
    frame = serving.Scorer(torch_dir).example()
    out = loaded.predict(frame)
    expected = serving.Scorer(torch_dir).predict(frame)
    assert list(out["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(
        out.filter(like="probability_").to_numpy(),
        expected.filter(like="probability_").to_numpy(),
        rtol=1e-4,
        atol=1e-6,
    )


def test_a_fused_version_serves_its_fused_form_through_the_pyfunc(mlflow_store: str, tmp_path: Path) -> None:
    import mlflow

    from tasks.models import fuse

    data, torch_dir = _saved_digits_model(tmp_path)
    fused_dir = Path(shutil.copytree(torch_dir, tmp_path / "fused"))
    onnx_runtime.record(fused_dir, onnx_runtime.Runtime(runtime="torch-fused"))

    tags = {"serving.runtime": "torch-fused", "serving.precision": "fp32", "serving.batch_sizes": "4096"}
    candidate = CandidateResult(
        index=1, step=Step(kind=StepKind.FUSE, parent=0), lineage=["fuse"], model_dir=str(fused_dir), tags=tags
    )
    mc = tracking_client()
    run_id = energy.log_candidate(
        mc.create_run(mc.create_experiment("fused")).info.run_id,
        candidate,
        "kept",
        serving.mlflow_serving(str(fused_dir)),
    )
    model_id = mlflow_model.logged_model_id(mc, run_id)
    assert model_id is not None
    mlflow_model.check_logged(mc, model_id, fused_dir)  # runtime.json travels with the weights; no graph file is needed
    assert mc.get_logged_model(model_id).tags["serving.runtime"] == "torch-fused"

    loaded = mlflow.pyfunc.load_model(f"models:/{model_id}")
    assert any(
        n.target is fuse.linear_relu for n in loaded.unwrap_python_model().scorer.model.graph.nodes
    )  # served fused
    frame = serving.Scorer(torch_dir).example()
    out, expected = loaded.predict(frame), serving.Scorer(torch_dir).predict(frame)
    assert list(out["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(
        out.filter(like="probability_").to_numpy(),
        expected.filter(like="probability_").to_numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
