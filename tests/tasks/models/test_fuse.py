"""The fused inference form (tasks/models/fuse.py) and its rung: the same outputs from fewer passes over memory,
the caller's input untouched, a refusal with the reason where there is nothing to fuse or nothing to trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from examples import resnet_digits, transformer_seq
from tasks.compression import onnx_runtime
from tasks.data.datasets import prepare
from tasks.energy_loop.candidate import run_step
from tasks.meters.simple import FixedPowerMeter, ReplayMeter
from tasks.models import factory as models
from tasks.models import fuse
from thresholds.energy.policy import Step, StepKind, kept
from thresholds.energy.schema import Scenario


def _bn_trained(model: nn.Module) -> nn.Module:
    """BatchNorm with statistics that are not the identity, so folding it has something to get wrong."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "model", "x"),
    [
        ("mlp", models.mlp((40,), 10), torch.randn(64, 40)),
        ("cnn1d", models.cnn1d((40,), 10), torch.randn(16, 40)),
        (
            "resnet",
            _bn_trained(resnet_digits.make((1, 16, 16), 10, widths=(8, 16), blocks_per_stage=1)),
            torch.randn(4, 1, 16, 16),
        ),
    ],
)
def test_the_fused_form_computes_what_the_model_computes_and_leaves_the_input_alone(
    name: str, model: nn.Module, x: torch.Tensor
) -> None:
    model.eval()
    before = x.clone()
    form = fuse.check(model, x)
    with torch.inference_mode():
        assert torch.allclose(form(x), model(x), atol=1e-5, rtol=1e-4), name
    assert torch.equal(x, before)  # nothing ran in place on the caller's tensor
    assert _linears(form)  # every nn.Linear became a plain function call
    assert not any(type(m) is nn.Linear for m in form.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in form.modules())


def _linears(form: torch.fx.GraphModule) -> list[str]:
    """The fused layers of a form, in order: `linear_relu` or `linear`."""
    return [
        n.target.__name__
        for n in form.graph.nodes
        if n.op == "call_function" and n.target in (fuse.linear, fuse.linear_relu)
    ]  # type: ignore[union-attr]


def test_an_mlp_is_one_addmm_and_in_place_relu_per_layer_with_no_module_calls() -> None:
    form = fuse.fused(models.mlp((40,), 10, hidden=[32, 16]))
    assert _linears(form) == ["linear_relu", "linear_relu", "linear"]  # the output layer has no ReLU to fuse
    assert not [n for n in form.graph.nodes if n.op == "call_module"]
    assert [tuple(b.shape) for name, b in form.named_buffers() if name.endswith("weight_t")] == [
        (40, 32),
        (32, 16),
        (16, 10),
    ]
    assert all(b.is_contiguous() for b in form.buffers())


class _Shared(nn.Module):
    """A Linear output read twice: its ReLU must not run in place (the skip path reads the pre-ReLU value)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.c(torch.relu(self.b(torch.relu(h) + h)))


def test_a_linear_output_read_twice_keeps_its_relu_out_of_place() -> None:
    model, x = _Shared().eval(), torch.randn(5, 8)
    form = fuse.check(model, x)
    assert _linears(form) == ["linear", "linear_relu", "linear"]


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if x.sum() > 0 else -self.a(x)  # data-dependent control flow: torch.fx cannot trace it


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (_Branchy(), "torch.fx cannot trace it"),
        (nn.Sequential(nn.Tanh()), "nothing to fuse"),
        # Its Linear layers feed no ReLU and its encoder is one native module: nothing the fused form saves.
        (transformer_seq.make((40, 1), 10, d_model=16, n_heads=2, n_layers=1, ff_dim=32), "nothing to fuse"),
    ],
)
def test_a_model_with_no_fused_form_is_refused_with_the_reason(model: nn.Module, why: str) -> None:
    with pytest.raises(fuse.NotFusable, match=why):
        fuse.fused(model)


@pytest.fixture(scope="module")
def digits_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(prepare("digits", tmp_path_factory.mktemp("data")))


def _scenario() -> Scenario:
    measurement = {"min_window_s": 1e-6, "repeats_min": 2, "repeats_max": 4, "inference_batch_size": 64}
    return Scenario.model_validate(
        {"name": "fuse", "training": {"max_epochs": 3, "patience": 1, "batch_size": 128}, "measurement": measurement}
    )


@pytest.mark.parametrize(("windows_j", "keep"), [([4.0, 3.0, 3.0, 4.0], True), ([4.0, 4.0, 4.0, 4.0], False)])
def test_the_fuse_rung_serves_the_parents_weights_fused_and_is_kept_only_on_a_paired_gain(
    tmp_path: Path, digits_path: str, windows_j: list[float], keep: bool
) -> None:
    scenario = _scenario()
    baseline = run_step(
        scenario, Step(kind=StepKind.BASELINE), [], digits_path, tmp_path / "base", FixedPowerMeter(10.0)
    )
    assert baseline.ok, baseline.rejected_reason
    result = run_step(
        scenario, Step(kind=StepKind.FUSE, parent=0), [baseline], digits_path, tmp_path / "fuse", ReplayMeter(windows_j)
    )
    assert result.ok, result.rejected_reason
    assert result.lineage == ["fuse"] and result.tags["serving.runtime"] == "torch-fused"
    assert result.accuracy == pytest.approx(baseline.accuracy)  # the same function
    assert result.train_energy_j == baseline.train_energy_j  # nothing trained
    assert result.inference_ratio_vs_baseline == pytest.approx(windows_j[1] / windows_j[0])
    model_dir = Path(result.model_dir or "")
    assert onnx_runtime.runtime_of(model_dir).runtime == "torch-fused" and not list(model_dir.glob("*.onnx"))
    model, spec = models.load(model_dir)
    assert any(
        n.target is fuse.linear_relu for n in onnx_runtime.predictor(model_dir, model, spec).graph.nodes
    )  # served fused
    ok, reason = kept(scenario, [baseline, result], result)
    assert ok is keep, reason
