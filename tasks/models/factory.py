"""Every model comes from a factory, and reloads exactly with nothing unpickled.

A factory is called as `FACTORY(input_shape=(...), n_outputs=K, **kwargs)` and returns an
`nn.Module` whose output is logits (classification) or one linear value (regression); softmax
is applied at prediction time. `input_shape` excludes the batch: `(F,)` tables, `(C, H, W)`
images, `(T, F)` sequences. The built-ins are two entries of that one mechanism:
`tasks.models:mlp` (the paper's MLP, in -> 64 -> 32 -> out) and `tasks.models:cnn1d`; a user's
model is any `PKG.MODULE:FACTORY`.

Saving and reloading: a model directory holds `state_dict.pt` (plain fp32 tensors) and
`spec.json`: the factory, its arguments, the precision, the compression history, the pruned
structure and the user's hooks (tasks/models/hooks.py), if any. Loading calls the factory again, re-applies the
structure, and loads the tensors with `torch.load(weights_only=True)`, which refuses any pickled object.

The pruned structure is recorded by us, as JSON, rather than with Torch-Pruning's own
`tp.state_dict`: that one copies every module's `__dict__` (hooks, activation functions,
arbitrary objects), which `weights_only=True` cannot load, so it would need a full unpickle.
Ours is two plain tables, diffed against a fresh build from the factory: the integer attributes
pruning changed (`out_channels`, `num_heads`, `normalized_shape`, ...) and the shape of every
tensor that changed. Rebuilding sets those attributes and re-shapes those tensors, so a pruned
architecture can also be rebuilt untrained (a student, a scratch run) from its spec alone.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Self

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from tasks.common.errors import RungNotApplicable
from thresholds.energy.schema import HookName
from thresholds.errors import InputError

Precision = Literal["fp32", "int8", "fp16", "bf16"]

BUILTINS = {"mlp": "tasks.models:mlp", "cnn1d": "tasks.models:cnn1d"}
DEFAULT_HIDDEN = [64, 32]
DEFAULT_CHANNELS = [16, 32, 32]


class ModelSpec(BaseModel):
    """Everything needed to rebuild a model exactly: its factory and arguments, then what pruning changed."""

    model_config = ConfigDict(extra="forbid")

    factory: str = BUILTINS["mlp"]
    input_shape: tuple[int, ...]
    out_features: int = Field(gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # the factory's own arguments (JSON values)
    attributes: dict[str, dict[str, int | list[int]]] = Field(
        default_factory=dict
    )  # module -> attribute -> value pruning changed
    shapes: dict[str, list[int]] = Field(
        default_factory=dict
    )  # state-dict entry -> its shape, where pruning changed it
    precision: Precision = "fp32"
    history: list[str] = Field(default_factory=list)
    hooks: dict[HookName, str] = Field(
        default_factory=dict
    )  # the user's loss / metric / train_step it was trained and judged with

    def __init__(self, **data: Any) -> None:
        """Also takes the legacy keywords `kind`, `in_features`, `hidden` and `channels` (see `_legacy`)."""
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Older specs (and callers) name a built-in by `kind`, with `in_features`, `hidden` and `channels`."""
        if not isinstance(data, dict) or not {"kind", "in_features", "hidden", "channels"} & data.keys():
            return data
        data = dict(data)
        kind = data.pop("kind", None)
        if "factory" not in data:
            data["factory"] = BUILTINS.get(kind or "mlp", kind)
        if "in_features" in data:
            data["input_shape"] = (data.pop("in_features"),)
        hidden, channels = data.pop("hidden", None), data.pop("channels", None)
        kwargs = dict(data.get("kwargs") or {})
        if data["factory"] == BUILTINS["mlp"] and hidden is not None:
            kwargs["hidden"] = list(hidden)
        elif data["factory"] == BUILTINS["cnn1d"] and channels is not None:
            kwargs["channels"] = list(channels)
        elif data["factory"] not in BUILTINS.values() and (hidden is not None or channels is not None):
            raise ValueError(f"hidden/channels are widths of the built-in models, not of {data['factory']}")
        data["kwargs"] = kwargs
        return data

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(d < 1 for d in value):
            raise ValueError(f"input_shape {value}: expected positive sizes, without the batch dimension")
        return value

    def model_copy(self, *, update: Any = None, deep: bool = False) -> Self:
        """A validated copy: `update` may also use the built-ins' `hidden` / `channels` widths."""
        data = self.model_dump()
        if update and {"hidden", "channels"} & set(update):
            data["kind"] = self.kind  # route the widths through the legacy converter
            data.pop("factory")
        return type(self).model_validate({**data, **(update or {})})

    @property
    def kind(self) -> str:
        """`mlp` or `cnn1d` for the built-ins, else the factory's `PKG.MODULE:FACTORY`."""
        return next((k for k, v in BUILTINS.items() if v == self.factory), self.factory)

    @property
    def in_features(self) -> int:
        """The number of input columns of a table model."""
        if len(self.input_shape) != 1:
            raise ValueError(f"in_features: the model takes {self.input_shape} inputs, not a table's rows")
        return self.input_shape[0]

    @property
    def hidden(self) -> list[int]:
        return list(self.kwargs.get("hidden", DEFAULT_HIDDEN)) if self.kind == "mlp" else []

    @property
    def channels(self) -> list[int]:
        return list(self.kwargs.get("channels", DEFAULT_CHANNELS)) if self.kind == "cnn1d" else []

    @property
    def pruned(self) -> bool:
        return bool(self.attributes or self.shapes)


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


def mlp(input_shape: tuple[int, ...], n_outputs: int, hidden: list[int] | None = None) -> nn.Module:
    """The paper's MLP over a table's `(F,)` features."""
    return MLP(math.prod(input_shape), list(hidden or DEFAULT_HIDDEN), n_outputs)


def cnn1d(input_shape: tuple[int, ...], n_outputs: int, channels: list[int] | None = None) -> nn.Module:
    """A table's `(F,)` features read as a 1-D signal."""
    return CNN1D(math.prod(input_shape), list(channels or DEFAULT_CHANNELS), n_outputs)


def example_input(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    """Zeros of the model's input shape: what the pruner traces and the op counter runs."""
    return torch.zeros(batch, *spec.input_shape)


def build_fresh(spec: ModelSpec) -> nn.Module:
    """The factory's model, freshly initialised, without any pruning (one line naming `model.factory` when it fails)."""
    from tasks.common.plugins import resolve_callable

    factory = resolve_callable(spec.factory, "model.factory")
    try:
        model = factory(input_shape=tuple(spec.input_shape), n_outputs=spec.out_features, **spec.kwargs)
    except Exception as exc:  # the user's code: its message, on one line
        raise InputError(
            "model.factory", spec.factory, f"a factory that builds a model ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, nn.Module):
        raise InputError(
            "model.factory", spec.factory, f"a factory returning an nn.Module, not a {type(model).__name__}"
        )
    return model


def build(spec: ModelSpec) -> nn.Module:
    """An fp32 model of the spec's architecture, pruned structure included (fresh weights)."""
    model = build_fresh(spec)
    if spec.pruned:
        _restore_structure(model, spec)
    return model


def _settable(value: Any) -> bool:
    """An attribute pruning may change and JSON can hold: an int, or a tuple of ints (bools are not pruned)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (
        isinstance(value, tuple) and bool(value) and all(isinstance(v, int) for v in value)
    )


def structure_of(model: nn.Module, spec: ModelSpec) -> ModelSpec:
    """`spec` with the attributes and tensor shapes in which `model` differs from a fresh build of its factory."""
    base = spec.model_copy(update={"attributes": {}, "shapes": {}})
    fresh = build_fresh(base)
    fresh_modules = dict(fresh.named_modules())
    attributes: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        reference = fresh_modules.get(name)
        if reference is None:
            raise RungNotApplicable(
                f"pruning added module {name!r}, which a rebuild from {spec.factory} cannot reproduce"
            )
        changed = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in vars(module).items()
            if _settable(v) and vars(reference).get(k) != v
        }
        if changed:
            attributes[name] = changed
    fresh_state = fresh.state_dict()
    shapes = {
        k: list(t.shape)
        for k, t in model.state_dict().items()
        if k not in fresh_state or fresh_state[k].shape != t.shape
    }
    return base.model_copy(update={"attributes": attributes, "shapes": shapes})


def _restore_structure(model: nn.Module, spec: ModelSpec) -> None:
    """Set the recorded attributes and re-shape the recorded tensors, then re-initialise the modules touched."""
    modules = dict(model.named_modules())
    touched: set[str] = set(spec.attributes)
    for name, changed in spec.attributes.items():
        for attr, value in changed.items():
            setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
    for key, shape in spec.shapes.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        current = getattr(module, leaf)
        initial = _leading(current.detach(), shape)
        if isinstance(current, nn.Parameter):
            setattr(module, leaf, nn.Parameter(initial, requires_grad=current.requires_grad))
        else:
            module.register_buffer(leaf, initial)
        touched.add(owner)
    for name in touched:  # fresh weights of the new shapes (load() overwrites them)
        reset = getattr(modules[name], "reset_parameters", None) or getattr(modules[name], "_reset_parameters", None)
        if reset is not None:
            reset()


def _leading(fresh: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """A tensor of `shape` that starts as the leading block of the factory's fresh value (zeros where it is not
    smaller): a tensor whose module has no `reset_parameters` (a user's position embedding) must still start
    from the factory's initialisation when the architecture is trained from scratch, not from uninitialised memory."""
    if fresh.dim() != len(shape) or any(s > f for s, f in zip(shape, fresh.shape, strict=True)):
        return torch.zeros(shape, dtype=fresh.dtype)
    return fresh[tuple(slice(0, s) for s in shape)].clone()


def widths_of(model: nn.Module, spec: ModelSpec) -> ModelSpec:
    """The spec updated with the widths a structured pruner left in a built-in model (others: unchanged)."""
    if spec.kind == "mlp":
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        return spec.model_copy(update={"hidden": [m.out_features for m in linears[:-1]]})
    if spec.kind == "cnn1d":
        convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
        return spec.model_copy(update={"channels": [m.out_channels for m in convs]})
    return spec


class Predictor(nn.Module):
    """Wraps a model at a given precision; takes and returns float32 tensors."""

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision != "int8":
            return self.model(x.to(self.input_dtype)).float()
        # nn.TransformerEncoderLayer's fused fast path reads `linear1.weight`, which a dynamically
        # quantized Linear no longer has: run the layer's plain path (the only one int8 can use).
        enabled = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self.model(x).float()
        finally:
            torch.backends.mha.set_fastpath_enabled(enabled)


def int8_backend() -> str:
    """torchao's `quantize_` where it is installed (`pip install -e '.[torchao]'`), else torch.ao.

    The choice is per environment, not per model: weights are saved in fp32 and quantized on
    load, so a model reloads on either backend.
    """
    import importlib.util

    return "torchao" if importlib.util.find_spec("torchao") is not None else "torch.ao"


INT8_DYNAMIC = (nn.Linear, nn.LSTM)  # the layer types int8 dynamic quantization covers


def check_precision(model: nn.Module, spec: ModelSpec) -> None:
    """Raise `RungNotApplicable` (with the reason) when the spec's precision cannot serve this model here.

    fp16 and bf16 apply to every model. int8 is dynamic quantization of Linear and LSTM layers.
    Convolutions would need static (PT2E) quantization, which torch 2.13 left to torchao: there,
    measured on the 2-core dev CPU (torchao 0.18), the converted program runs eagerly only as
    quantize/dequantize around fp32 kernels (1.5-5x slower than fp32), and int8 kernels come
    only from torch.compile with inductor freezing at a fixed batch size (which failed on cnn1d).
    So a user's model with convolutions is refused rather than served mostly in fp32. The
    built-in cnn1d keeps its int8 rung (its linear head, as before).
    """
    if spec.precision == "fp32":
        return
    if spec.precision != "int8":
        return _runs(model, spec)
    if not any(isinstance(m, INT8_DYNAMIC) for m in model.modules()):
        raise RungNotApplicable("int8: the model has no Linear or LSTM layer for dynamic quantization")
    if int8_backend() == "torchao" and not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise RungNotApplicable(
            "int8: torchao's dynamic quantization covers Linear layers only, and the model has none"
        )
    if spec.kind not in BUILTINS and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        raise RungNotApplicable(
            "int8: convolutions need static (PT2E) quantization, whose int8 kernels (torchao) run only under "
            "torch.compile, and eagerly it is slower than fp32; dynamic int8 covers Linear/LSTM only"
        )
    _runs(model, spec)


def _runs(model: nn.Module, spec: ModelSpec) -> None:
    """A forward pass at the spec's precision on an example input: some layers break once quantized."""
    try:
        with torch.no_grad():
            to_precision(model, spec.precision)(example_input(spec, batch=2))
    except Exception as exc:  # e.g. nn.TransformerEncoderLayer's fast-path checks on a quantized Linear
        raise RungNotApplicable(
            f"{spec.precision}: the model does not run at this precision ({type(exc).__name__}: {exc})"
        ) from None


def to_precision(model: nn.Module, precision: Precision) -> Predictor:
    """Inference copy of an fp32 model at the requested precision (the original is untouched)."""
    clone = copy.deepcopy(model).eval()
    if precision == "int8" and int8_backend() == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(clone, Int8DynamicActivationInt8WeightConfig())
    elif precision == "int8":
        with warnings.catch_warnings():
            # torch.ao's dynamic quantization is deprecated in favour of torchao but still works on CPU.
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            clone = quantize_dynamic(clone, set(INT8_DYNAMIC), dtype=torch.qint8)
    elif precision == "fp16":
        clone = clone.half()
    elif precision == "bf16":
        clone = clone.to(torch.bfloat16)
    return Predictor(clone, precision).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: int | tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample's forward pass (torch-pruning's op counter), for any input shape."""
    import torch_pruning as tp

    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    was_training = model.training
    macs, _ = tp.utils.count_ops_and_params(model.eval(), torch.zeros(1, *shape))
    model.train(was_training)
    return int(macs)


def save(model: nn.Module, spec: ModelSpec, directory: Path) -> Path:
    """Write `state_dict.pt` (fp32 weights) and `spec.json`; precision is re-applied on load."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "state_dict.pt")
    (directory / "spec.json").write_text(spec.model_dump_json(indent=2, exclude=None if spec.hooks else {"hooks"}))
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
