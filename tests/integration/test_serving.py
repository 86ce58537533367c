"""Versions as standard MLflow models: load_model, `mlflow models serve` for real, `energy-loop predict`.

Real Prefect (test harness), a real embedded MLflow store, and a real scoring server started as
a subprocess on a free loopback port.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from registry import mlflow_model
from registry.store import client as tracking_client
from tasks.compression import onnx_runtime
from tasks.data import datasets as data_mod
from tasks.models import factory as models
from tasks.serving import scorer as serving
from tests.integration.conftest import QuickLoop

pytestmark = [pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw_rows(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    """Rows of the raw digits table, as a user scores them (every column but the target), and their labels."""
    frame, target, _ = data_mod._builtin_frame("digits", None, 0)
    return frame.drop(columns=[target]).head(rows), frame[target].head(rows).astype(str)


def _expected_logits(data: data_mod.CachedData, model_dir: Path, raw: pd.DataFrame) -> torch.Tensor:
    """The torch model at its precision on the table preprocessing the loop fitted."""
    from tasks.data.preprocess import TablePreprocessor

    model, spec = models.load(model_dir)
    x = torch.from_numpy(np.asarray(TablePreprocessor.from_dict(data.preprocessing).transform(raw), dtype=np.float32))
    with torch.no_grad():
        return models.to_precision(model, spec.precision)(x)


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from flows.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


KINDS: dict[str, dict[str, object]] = {
    "baseline": {},
    "pruned": {"hidden": [45, 22], "history": ["early-stopping", "prune:0.3"]},
    "distilled": {"hidden": [32, 16], "history": ["early-stopping", "distill:0.5"]},
    "int8": {"precision": "int8", "history": ["early-stopping", "precision:int8"]},
    "fp16": {"precision": "fp16", "history": ["early-stopping", "precision:fp16"]},
    "bf16": {"precision": "bf16", "history": ["early-stopping", "precision:bf16"]},
    "qat": {"precision": "int8", "history": ["early-stopping", "qat:int8"]},
    "cnn1d": {"kind": "cnn1d"},
    "onnxruntime": {"history": ["early-stopping", "ort:fp32"]},  # served from model.onnx by onnxruntime
}


def test_every_model_kind_registers_as_an_mlflow_model_and_loads(mlflow_store: str, tmp_path: Path) -> None:
    import mlflow

    data = data_mod.load_cached(str(data_mod.prepare("digits", tmp_path / "cache")))
    raw, _ = _raw_rows(32)
    mc = tracking_client()
    run = mc.create_run(mc.create_experiment("kinds"))
    mc.create_registered_model("kinds")
    for i, (kind, update) in enumerate(KINDS.items()):
        spec = models.ModelSpec(in_features=data.n_features, out_features=data.out_features).model_copy(update=update)
        torch.manual_seed(i)
        model_dir = models.save(models.build(spec), spec, tmp_path / kind)
        serving.save_input_spec(serving.input_spec(data), model_dir)
        data.write_preprocessing(model_dir)
        if kind == "onnxruntime" and onnx_runtime.unavailable() is None:
            onnx_runtime.save_for_onnxruntime(model_dir, "fp32")
        logged = serving.mlflow_serving(str(model_dir))
        model_id = mlflow_model.log_model(
            mc, run.info.run_id, model_dir, {"kind": kind}, logged.code_path, logged.example, logged.example_output
        )
        mlflow_model.check_logged(mc, model_id, model_dir)
        version = mc.create_model_version(
            "kinds", source=f"models:/{model_id}", run_id=run.info.run_id, model_id=model_id
        )
        loaded = mlflow.pyfunc.load_model(f"models:/kinds/{version.version}")
        assert loaded.metadata.signature.inputs.input_names() == list(data.preprocessing["input_columns"]), kind
        served_by = type(loaded.unwrap_python_model().scorer.model)
        assert (served_by is onnx_runtime.OrtModule) == ((model_dir / onnx_runtime.ONNX_FILE).is_file()), kind
        out = loaded.predict(raw)
        probabilities = torch.softmax(_expected_logits(data, model_dir, raw).float(), dim=1).numpy()
        np.testing.assert_allclose(
            out.filter(like="probability_").to_numpy(), probabilities, rtol=1e-5, atol=1e-6, err_msg=kind
        )
        assert mc.get_model_version("kinds", version.version).source == f"models:/{model_id}"


def test_champion_loads_serves_and_scores_files_with_its_energy_recorded(quick_loop: QuickLoop, tmp_path: Path) -> None:
    import mlflow

    outcome, mlflow_store = (
        quick_loop.outcome,
        quick_loop.store,
    )  # quick.yaml on digits, model digits-quick (tests/integration/conftest.py)
    assert outcome.state == "PASSED" and outcome.champion_version is not None, outcome.reason
    mc = MlflowClient(mlflow_store)
    champion = mc.get_model_version_by_alias("digits-quick", "champion")
    # A standard MLflow 3 logged model, with the version's figures as its metrics and its energy source as a tag.
    assert champion.source.startswith(
        "models:/m-"
    )  # the sqlite registry keeps the logged model in the source, not in model_id
    logged = mc.get_logged_model(champion.source.removeprefix("models:/"))
    assert (
        logged.experiment_id == mc.get_experiment_by_name("energy-loop").experiment_id
        and logged.source_run_id == champion.run_id
    )
    metrics = {m.key: m.value for m in logged.metrics or []}
    for key in (
        "accuracy",
        "inference_energy_j_per_1k",
        "inference_energy_sem_j_per_1k",
        "train_energy_j",
        "train_energy_sem_j",
    ):
        assert metrics[key] == pytest.approx(float(champion.tags[key]), rel=1e-5), key
    assert logged.tags["energy_source"] == "fixed-power:20W" and logged.tags["energy_estimated"] == "true"
    # load_model by alias: the predictions are the torch model's on the same rows.
    data = data_mod.load_cached(str(sorted((quick_loop.folder / ".energy-loop" / "cache").glob("digits-*.pt"))[0]))
    raw, labels = _raw_rows(64)
    loaded = mlflow.pyfunc.load_model("models:/digits-quick@champion")
    predicted = loaded.predict(raw)
    chosen = outcome.history[outcome.chosen or 0]
    logits = _expected_logits(data, Path(str(chosen.model_dir)), raw)
    assert list(predicted["prediction"]) == [data.class_labels[i] for i in logits.argmax(dim=1)]
    assert (predicted["prediction"] == labels.to_numpy()).mean() > 0.5

    # `mlflow models serve` on loopback, POST /invocations.
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/digits-quick@champion",
            "--env-manager",
            "local",
        ]
        + ["--host", "127.0.0.1", "--port", str(port)],
        # MLflow starts `uvicorn` by name: the virtualenv's bin must be on PATH, as when it is activated.
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": mlflow_store,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (server.stderr.read() if server.stderr else b"").decode()[-2000:]
            assert time.monotonic() < deadline, "scoring server did not answer /ping within 180 s"
            time.sleep(0.5)
        body = json.dumps({"dataframe_split": raw.to_dict(orient="split")}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            served = pd.DataFrame(json.loads(reply.read())["predictions"])
        assert list(served["prediction"]) == list(predicted["prediction"])
        np.testing.assert_allclose(
            served.filter(like="probability_").to_numpy(), predicted.filter(like="probability_").to_numpy(), rtol=1e-6
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    # `energy-loop predict`: scores a file at the recorded batch size and logs the observed energy to the version.
    table = tmp_path / "score.csv"
    _raw_rows(300)[0].to_csv(table, index=False)
    out_path = tmp_path / "scored.parquet"
    code, out, err = _cli(["predict", "digits-quick@champion", "--input", str(table), "--output", str(out_path)])
    assert code == 0, err
    scored = pd.read_parquet(out_path)
    assert len(scored) == 300 and list(scored["prediction"][:64]) == list(predicted["prediction"])
    tags = mc.get_model_version("digits-quick", champion.version).tags
    assert f"batch size {tags['deployment.energy_optimal_batch_size']} (recorded energy-optimal)" in err
    observed = float(tags["observed.inference_energy_j_per_1k"])
    assert observed > 0 and tags["observed.rows"] == "300" and tags["observed.energy_source"] == "fixed-power:20W"
    assert f"{observed:.6g} J per 1k predictions" in out
    code, out, _ = _cli(["status", "digits-quick"])
    assert code == 0 and f"observed.inference_energy_j_per_1k={tags['observed.inference_energy_j_per_1k']}" in out

    # Bad input: one line, exit 2, nothing written.
    frame = _raw_rows(5)[0]
    first, second = list(frame.columns)[3], list(frame.columns)[5]
    cases = {
        "missing": frame.drop(columns=[first]),
        "extra": frame.assign(extra=1.0),
        "dtype": frame.assign(**{second: "abc"}),
        "header": frame.iloc[:0],
    }
    for name, bad in cases.items():
        bad.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    runs = [["predict", "digits-quick", "--input", str(tmp_path / f"{name}.csv")] for name in [*cases, "empty"]]
    runs += [
        ["predict", "no-such-model@champion", "--input", str(table)],
        ["predict", "digits-quick@no-such-alias", "--input", str(table)],
    ]
    runs += [["predict", "digits-quick/999", "--input", str(table)]]
    for argv in runs:
        target = tmp_path / "never.csv"
        code, out, err = _cli([*argv, "--output", str(target)])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("energy-loop: error: "), (argv, err)
        assert "Traceback" not in out + err and not target.exists(), argv
