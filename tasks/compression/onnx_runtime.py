"""A saved model exported to ONNX and run under ONNX Runtime, behind the same call as a torch model.

Needs `pip install -e '.[onnx]'`. The fp32 graph is exported (torch.export-based exporter, a
dynamic batch dimension); INT8 is onnxruntime's dynamic quantization of that graph.
`OrtModule` is an `nn.Module` whose forward runs the session, so the loop's inference
measurement (`tasks.models.evaluate.measure_inference`) measures it exactly as it measures torch.

A candidate of the `ort` rung is its parent's model folder plus `model.onnx` (the graph it serves)
and `runtime.json` (which runtime and precision its energy figures belong to; `torch-fused` names the
fused torch form of `tasks.models.fuse`, rebuilt from the weights at load). `predictor` is what
every consumer of a model folder runs: the loop's measurement and the MLflow pyfunc (through
`tasks.serving.scorer.Scorer`), so a version serves with the runtime it was measured under.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from tasks.models import factory as models
from tasks.models import fuse

INPUT, OUTPUT = "x", "logits"
ONNX_FILE = "model.onnx"  # the graph an onnxruntime candidate serves, inside its model folder
RUNTIME_FILE = "runtime.json"
NEEDED = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch's exporter


class Runtime(BaseModel):
    """Which runtime serves a model folder, at which precision; its energy figures belong to this pair."""

    model_config = ConfigDict(extra="forbid")

    runtime: Literal["torch", "torch-fused", "onnxruntime"] = (
        "torch"  # torch-fused: tasks/models/fuse.py, built at load
    )
    precision: str = "fp32"
    threads: int = 0  # intra-op threads it was measured with (`measurement.inference_threads`); 0: the library default


def unavailable() -> str | None:
    """Why the onnxruntime rung cannot run here (a missing package), or None."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    return f"needs {', '.join(missing)}: pip install -e '.[onnx]'" if missing else None


def runtime_of(model_dir: Path) -> Runtime:
    """The folder's `runtime.json`, or torch at the saved spec's precision."""
    recorded = model_dir / RUNTIME_FILE
    if recorded.is_file():
        return Runtime.model_validate(json.loads(recorded.read_text()))
    spec = models.ModelSpec.model_validate(json.loads((model_dir / "spec.json").read_text()))
    return Runtime(precision=spec.precision)


def save_for_onnxruntime(model_dir: Path, precision: str) -> Runtime:
    """Export the saved model to `model.onnx` (fp32, or int8 by onnxruntime's dynamic quantization)
    beside its weights, and record the runtime."""
    target = model_dir / ONNX_FILE
    if precision == "int8":
        fp32 = export(model_dir, model_dir / "fp32.onnx")
        quantize_int8(fp32, target)
        fp32.unlink()
    else:
        export(model_dir, target)
    return record(model_dir, Runtime(runtime="onnxruntime", precision=precision))


def record(model_dir: Path, runtime: Runtime) -> Runtime:
    """Write the folder's `runtime.json`: what serves it, and so what its energy figures belong to."""
    (model_dir / RUNTIME_FILE).write_text(runtime.model_dump_json(indent=2))
    return runtime


def predictor(model_dir: Path, model: nn.Module, spec: models.ModelSpec, threads: int | None = None) -> nn.Module:
    """What serves the folder: an onnxruntime session on its `model.onnx` (with `threads` intra-op
    threads, default the recorded ones), the fused form of `model`, or `model` at its torch precision.
    torch's threads are the process's: its caller sets them (`tasks.meters.runtime.torch_threads`)."""
    recorded = runtime_of(model_dir)
    runtime = recorded.runtime
    if runtime == "onnxruntime":
        return OrtModule(model_dir / ONNX_FILE, recorded.threads if threads is None else threads)
    if runtime == "torch-fused":
        return fuse.fused(model)
    return models.to_precision(model, spec.precision)


def export(model_dir: Path, path: Path) -> Path:
    """The saved model's fp32 graph as an ONNX file with a dynamic batch dimension."""
    model, spec = models.load(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, *spec.input_shape),),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),  # positional: a user's forward may name its input anything
        dynamo=True,
        external_data=False,  # one self-contained file: these models are small
        verbose=False,
    )
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """onnxruntime's dynamic INT8 quantization (weights int8, activations quantized per batch)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The exporter's recorded intermediate shapes trip the quantizer's shape inference: let it infer them afresh.
    graph = onnx.load(str(source))
    del graph.graph.value_info[:]
    plain = target.with_name(f"{target.stem}-plain.onnx")
    onnx.save(graph, str(plain))
    quantize_dynamic(str(plain), str(target), weight_type=QuantType.QInt8)
    plain.unlink()
    return target


class OrtModule(nn.Module):
    """An ONNX Runtime session on the CPU, called like the torch model it came from."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # 0: one per core
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {INPUT: x.float().numpy()})[0])
