"""A saved model exported to ONNX and run under ONNX Runtime, behind the same call as a torch model.

Needs `pip install -e '.[onnx]'`. The fp32 graph is exported (torch.export-based exporter, a
dynamic batch dimension); INT8 is onnxruntime's dynamic quantization of that graph.
`OrtModule` is an `nn.Module` whose forward runs the session, so the loop's inference
measurement (`tasks.evaluate.measure_inference`) measures it exactly as it measures torch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tasks import models

INPUT, OUTPUT = "x", "logits"


def export(model_dir: Path, path: Path) -> Path:
    """The saved model's fp32 graph as an ONNX file with a dynamic batch dimension."""
    model, spec = models.load(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, spec.in_features),),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
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

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {INPUT: x.float().numpy()})[0])
