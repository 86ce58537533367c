"""Models, training, pruning and precision: shapes, exact reload, early stopping, divergence."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from tasks.common.errors import DivergedError, InputError
from tasks.compression import prune as compress
from tasks.data.datasets import CachedData, load_cached, prepare
from tasks.models import factory as models
from tasks.models.train import TrainConfig, fit


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> CachedData:
    return load_cached(str(prepare("digits", tmp_path_factory.mktemp("data"))))


def test_mlp_is_the_papers_shape() -> None:
    model = models.build(models.ModelSpec(in_features=40, out_features=10))
    widths = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(40, 64), (64, 32), (32, 10)]
    assert models.count_params(model) == 40 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    # torch-pruning counts the weight MACs plus one op per bias add and per ReLU output.
    assert models.count_macs(model, 40) == 40 * 64 + 64 * 32 + 32 * 10 + (64 + 32 + 10) + (64 + 32)


def test_cnn_forward_shape() -> None:
    model = models.build(models.ModelSpec(kind="cnn1d", in_features=40, out_features=10))
    assert model(torch.randn(8, 40)).shape == (8, 10)


def test_early_stopping_stops_and_restores_the_best_epoch(digits: CachedData) -> None:
    torch.manual_seed(0)
    model = models.build(models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features))
    report = fit(model, digits, TrainConfig(max_epochs=200, patience=2, batch_size=128))
    assert report.stopped_early and report.epochs_run < 200
    assert report.epochs_saved == 200 - report.epochs_run
    assert report.best_val_loss == min(report.val_losses)
    assert report.epochs_run - report.best_epoch == 2


def test_nan_loss_is_a_diverged_error(digits: CachedData) -> None:
    model = models.build(models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(DivergedError, match="loss became nan at epoch 1"):
        fit(model, digits, TrainConfig(max_epochs=3))


def test_pruning_counts_channels_and_reloads_exactly(tmp_path: Path) -> None:
    spec = models.ModelSpec(in_features=40, out_features=10)
    model = models.build(spec)
    macs_before = models.count_macs(model, 40)
    pruned, new_spec = compress.prune(model, spec, 0.5)
    assert new_spec.hidden == [32, 16]
    assert new_spec.history == ["prune:0.5"]
    assert models.count_macs(pruned, 40) < macs_before / 2
    models.save(pruned, new_spec, tmp_path / "m")
    loaded, loaded_spec = models.load(tmp_path / "m")
    x = torch.randn(5, 40)
    assert loaded_spec == new_spec
    assert torch.equal(loaded(x), pruned.eval()(x))


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 0.0), ("int8", 0.05), ("fp16", 0.01), ("bf16", 0.05)])
def test_precisions_stay_close_to_fp32(precision: models.Precision, tolerance: float) -> None:
    torch.manual_seed(0)
    model = models.build(models.ModelSpec(in_features=40, out_features=10)).eval()
    x = torch.randn(64, 40)
    with torch.no_grad():
        reference = model(x)
        out = models.to_precision(model, precision)(x)
    assert out.dtype == torch.float32
    assert (out - reference).abs().max().item() <= tolerance


def test_load_refuses_a_pickled_payload(tmp_path: Path) -> None:
    spec = models.ModelSpec(in_features=4, out_features=2)
    models.save(models.build(spec), spec, tmp_path)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    torch.save({"net.0.weight": Evil()}, tmp_path / "state_dict.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        models.load(tmp_path)


def test_int8_backend_is_torchao_only_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec_with(torchao: bool) -> object:
        return lambda name, *args: (object() if torchao else None) if name == "torchao" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec_with(torchao=False))
    assert models.int8_backend() == "torch.ao"
    # Without torchao, INT8 is torch.ao's dynamic quantization: every Linear is replaced by its quantized twin.
    quantized = models.to_precision(models.build(models.ModelSpec(in_features=4, out_features=2)), "int8")
    linears = [type(m) for m in quantized.modules() if "Linear" in type(m).__name__]
    assert linears and all(t.__module__.startswith("torch.ao.nn.quantized") for t in linears), linears
    monkeypatch.setattr(importlib.util, "find_spec", find_spec_with(torchao=True))
    assert models.int8_backend() == "torchao"


def test_an_old_spec_json_still_loads_as_the_builtin_factory(tmp_path: Path) -> None:
    """Versions registered before factories: `kind`, `in_features`, `hidden` and `channels`."""
    old = {
        "kind": "cnn1d",
        "in_features": 40,
        "out_features": 10,
        "hidden": [64, 32],
        "channels": [8, 16, 16],
        "precision": "fp32",
        "history": ["prune:0.5"],
    }
    (tmp_path / "spec.json").write_text(json.dumps(old))
    torch.manual_seed(0)
    original = models.CNN1D(40, [8, 16, 16], 10).eval()
    torch.save(original.state_dict(), tmp_path / "state_dict.pt")
    model, spec = models.load(tmp_path)
    assert (
        spec.factory == "tasks.models:cnn1d"
        and spec.kind == "cnn1d"
        and spec.input_shape == (40,)
        and spec.in_features == 40
    )
    assert spec.channels == [8, 16, 16] and spec.hidden == [] and spec.kwargs == {"channels": [8, 16, 16]}
    x = torch.randn(3, 40)
    assert torch.equal(model(x), original(x))


def test_widths_of_a_builtin_update_through_a_validated_copy() -> None:
    spec = models.ModelSpec(in_features=40, out_features=10)
    narrow = spec.model_copy(update={"hidden": [32, 16], "history": ["distill:0.5"]})
    assert narrow.hidden == [32, 16] and narrow.factory == "tasks.models:mlp" and narrow.history == ["distill:0.5"]
    assert spec.hidden == [64, 32]
    with pytest.raises(ValueError, match="widths of the built-in models"):
        models.ModelSpec(factory="examples.resnet_digits:make", input_shape=(1, 8, 8), out_features=10, hidden=[4])


class Payload:
    """What a tampered model file could carry: unpickling it would call `Path.touch(marker)`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_a_tampered_model_file_runs_no_code(tmp_path: Path) -> None:
    spec = models.ModelSpec(in_features=4, out_features=2)
    model_dir = models.save(models.build(spec), spec, tmp_path / "model")
    marker = tmp_path / "payload-ran"
    torch.save({"net.0.weight": Payload(marker)}, model_dir / "state_dict.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        models.load(model_dir)
    assert not marker.exists()


def raising_factory(input_shape: tuple[int, ...], n_outputs: int) -> torch.nn.Module:
    raise RuntimeError("no GPU here")


def test_a_factory_that_raises_is_one_line_naming_model_factory() -> None:
    spec = models.ModelSpec(factory="tests.tasks.models.test_models:raising_factory", input_shape=(4,), out_features=2)
    with pytest.raises(InputError) as caught:
        models.build(spec)
    assert (
        "model.factory" in str(caught.value)
        and "RuntimeError: no GPU here" in str(caught.value)
        and "\n" not in str(caught.value)
    )
