"""The paper's MLP (in -> 64 -> 32 -> out), a small 1-D CNN, and exact save/load.

Models output logits (classification) or one linear value (regression); softmax is
applied at prediction time. A model is saved as a state dict plus a JSON spec that
records widths, precision and the compression history, and is loaded with
`weights_only=True`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

Precision = Literal["fp32", "int8", "fp16", "bf16"]


class ModelSpec(BaseModel):
    """Everything needed to rebuild a model exactly."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mlp", "cnn1d"] = "mlp"
    in_features: int = Field(gt=0)
    out_features: int = Field(gt=0)
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    channels: list[int] = Field(default_factory=lambda: [16, 32, 32])
    precision: Precision = "fp32"
    history: list[str] = Field(default_factory=list)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1D(nn.Module):
    """Features read as a 1-D signal: three strided convolutions, then a linear head."""

    def __init__(self, in_features: int, channels: list[int], out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, length = 1, in_features
        for i, c_out in enumerate(channels):
            kernel = 5 if i == 0 else 3
            layers += [nn.Conv1d(c_in, c_out, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            c_in, length = c_out, (length + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * length, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)).flatten(1))


def build(spec: ModelSpec) -> nn.Module:
    """An fp32 model with the spec's widths (fresh weights)."""
    if spec.kind == "mlp":
        return MLP(spec.in_features, spec.hidden, spec.out_features)
    return CNN1D(spec.in_features, spec.channels, spec.out_features)


def widths_of(model: nn.Module, spec: ModelSpec) -> ModelSpec:
    """The spec updated with the widths a structured pruner left in `model`."""
    if spec.kind == "mlp":
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return spec.model_copy(update={"hidden": [m.out_features for m in linears[:-1]]})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    return spec.model_copy(update={"channels": [m.out_channels for m in convs]})


class Predictor(nn.Module):
    """Wraps a model at a given precision; takes and returns float32 tensors."""

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.input_dtype)).float()


def int8_backend() -> str:
    """torchao's `quantize_` where it is installed (`pip install -e '.[torchao]'`), else torch.ao.

    The choice is per environment, not per model: weights are saved in fp32 and quantized on
    load, so a model reloads on either backend.
    """
    import importlib.util

    return "torchao" if importlib.util.find_spec("torchao") is not None else "torch.ao"


def to_precision(model: nn.Module, precision: Precision) -> Predictor:
    """Inference copy of an fp32 model at the requested precision (the original is untouched)."""
    import copy

    clone = copy.deepcopy(model).eval()
    if precision == "int8" and int8_backend() == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(clone, Int8DynamicActivationInt8WeightConfig())
    elif precision == "int8":
        with warnings.catch_warnings():
            # torch.ao's dynamic quantization is deprecated in favour of torchao but still works on CPU.
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            clone = quantize_dynamic(clone, {nn.Linear}, dtype=torch.qint8)
    elif precision == "fp16":
        clone = clone.half()
    elif precision == "bf16":
        clone = clone.to(torch.bfloat16)
    return Predictor(clone, precision).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, in_features: int) -> int:
    """Multiply-accumulates of one sample's forward pass (torch-pruning's op counter)."""
    import torch_pruning as tp

    macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, in_features))
    return int(macs)


def save(model: nn.Module, spec: ModelSpec, directory: Path) -> Path:
    """Write `state_dict.pt` (fp32 weights) and `spec.json`; precision is re-applied on load."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "state_dict.pt")
    (directory / "spec.json").write_text(spec.model_dump_json(indent=2))
    return directory


def load(directory: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the fp32 model exactly; refuses pickled payloads (`weights_only=True`)."""
    spec = ModelSpec.model_validate(json.loads((directory / "spec.json").read_text()))
    model = build(spec)
    model.load_state_dict(torch.load(directory / "state_dict.pt", weights_only=True))
    return model.eval(), spec


def load_version(model_name: str, ref: str) -> tuple[nn.Module, ModelSpec]:
    """A registered version (`3` or `@champion`), downloaded from the registry and rebuilt with `weights_only=True`."""
    import tempfile

    from registry.core import download_version

    with tempfile.TemporaryDirectory() as tmp:
        local = download_version(model_name, ref, Path(tmp))
        found = next(local.rglob("spec.json"), None)  # a logged MLflow model keeps the folder under artifacts/model/
        if found is None:
            raise FileNotFoundError(f"{model_name} {ref}: no spec.json in the version's artifacts")
        return load(found.parent)
