"""ONNX export: onnxruntime computes what torch computes, and the graph logs with MLflow's onnx flavour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.models import factory as models

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxscript", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")


@pytest.mark.parametrize("kind", ["mlp", "cnn1d"])
def test_onnxruntime_matches_torch_at_fp32_and_int8_stays_close(tmp_path: Path, kind: str) -> None:
    from tasks.compression import onnx_runtime

    spec = models.ModelSpec(kind=kind, in_features=40, out_features=10, hidden=[24, 12])  # type: ignore[arg-type]
    torch.manual_seed(0)
    model_dir = models.save(models.build(spec), spec, tmp_path / "model")
    fp32 = onnx_runtime.export(model_dir, tmp_path / "m.onnx")
    int8 = onnx_runtime.quantize_int8(fp32, tmp_path / "m-int8.onnx")
    model, _ = models.load(model_dir)
    for batch in (1, 7, 64):  # the batch dimension is dynamic
        x = torch.randn(batch, 40)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(onnx_runtime.OrtModule(fp32)(x).numpy(), expected, rtol=1e-4, atol=1e-5)
        assert np.abs(onnx_runtime.OrtModule(int8)(x).numpy() - expected).max() < 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-int8.onnx", "m.onnx", "model"]


def test_onnx_graph_logs_as_an_mlflow_onnx_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from registry import mlflow_model
    from tasks.compression import onnx_runtime

    monkeypatch.chdir(tmp_path)
    mc = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mc.create_run(mc.create_experiment("onnx"))
    spec = models.ModelSpec(in_features=40, out_features=10)
    model_dir = models.save(models.build(spec), spec, tmp_path / "model")
    model_id = mlflow_model.log_onnx(
        mc, run.info.run_id, onnx_runtime.export(model_dir, tmp_path / "m.onnx"), tags={"runtime": "onnxruntime"}
    )
    assert mc.get_logged_model(model_id).tags["runtime"] == "onnxruntime"
    assert mlflow_model.logged_model_id(mc, run.info.run_id) is None  # the pyfunc is what gets registered, not this
    x = np.random.default_rng(0).normal(size=(5, 40)).astype(np.float32)
    out = mlflow.pyfunc.load_model(f"models:/{model_id}").predict({"x": x})
    model, _ = models.load(model_dir)
    with torch.no_grad():
        np.testing.assert_allclose(out["logits"], model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
