"""The fused inference form of a torch model: the same function in fewer passes over memory.

At the batch sizes a table model is scored at, a small MLP is bound by memory traffic, not
arithmetic: `nn.Linear` followed by `nn.ReLU` writes the layer's output, then reads it and writes
a second tensor. The fused form computes each such pair as one `addmm` on a pre-transposed weight
followed by an in-place ReLU on that fresh output, and folds BatchNorm into the convolution or
Linear before it (torch's `fx.experimental.optimization.fuse`). On this project's 2-core machine the
50 %-pruned paper MLP ran at 0.41-0.42x the eager baseline's time at batch 4096, against 0.51x eager
(8 interleaved pairs; `benchmarks/` figures in the closing notes).

It is a serving form, like a precision: built from the saved fp32 weights when a model folder whose
`runtime.json` says `torch-fused` is loaded (`tasks.onnx_runtime.predictor`), never saved itself, so a
model file still holds only weights. It needs a model torch.fx can trace; a model it cannot trace, or
one with nothing to fuse, raises `NotFusable` with the reason.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse as fold_batchnorm

RELUS = (nn.ReLU, nn.functional.relu, torch.relu)


class NotFusable(Exception):
    """The model has no fused form here; the message says why."""


class LinearReLU(nn.Module):
    """`relu(linear(x))` as one `addmm` on the transposed weight plus an in-place ReLU of its fresh output."""

    weight_t: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight_t", linear.weight.detach().t().contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.bias is not None:
            y = torch.addmm(self.bias, x, self.weight_t)
        else:
            y = torch.matmul(x, self.weight_t)
            if self.bias is not None:
                y += self.bias
        return y.relu_() if self.relu else y


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), nn.ReLU)
    return node.op in ("call_function", "call_method") and (node.target in RELUS or node.target == "relu") and len(node.args) == 1


def fused(model: nn.Module) -> fx.GraphModule:
    """A fused copy of `model` in eval mode (the model itself is not changed). Raises `NotFusable`."""
    original = copy.deepcopy(model).eval()
    try:
        folded = fold_batchnorm(original, inplace=True)
        assert isinstance(folded, fx.GraphModule)
    except Exception as exc:  # symbolic tracing raises many types on data-dependent control flow
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise NotFusable(f"torch.fx cannot trace it ({first})") from None
    changed = sum(1 for m in original.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) - sum(
        1 for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    modules = dict(folded.named_modules())
    graph, linears = folded.graph, 0
    for node in list(graph.nodes):
        kind = type(modules.get(str(node.target))) if node.op == "call_module" else None
        if kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and len(node.users) == 1 and _is_relu(next(iter(node.users)), modules):
            relu = next(iter(node.users))  # the convolution's fresh output, read by nothing else: ReLU it in place
            with graph.inserting_after(relu):
                in_place = graph.call_function(torch.relu_, (node,))
            relu.replace_all_uses_with(in_place)
            graph.erase_node(relu)
            changed += 1
        if kind is not nn.Linear:
            continue
        users = list(node.users)
        with_relu = len(users) == 1 and _is_relu(users[0], modules)
        name = f"fused_linear_{linears}"
        linears += 1
        folded.add_submodule(name, LinearReLU(modules[str(node.target)], with_relu))
        with graph.inserting_after(node):
            replacement = graph.call_module(name, node.args, node.kwargs)
        if with_relu:  # the ReLU runs in place on addmm's fresh output, which nothing else reads
            users[0].replace_all_uses_with(replacement)
            graph.erase_node(users[0])
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
        changed += 1
    if not changed:
        raise NotFusable("it has no Linear layer and no BatchNorm to fold")
    graph.lint()
    folded.delete_all_unused_submodules()
    folded.recompile()
    folded.eval()
    return folded


def check(model: nn.Module, example: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> fx.GraphModule:
    """The fused form of `model`, checked to compute what `model` computes on `example`; raises `NotFusable`."""
    form = fused(model)
    model = model.eval()
    with torch.inference_mode():
        expected, got = model(example), form(example.clone())
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=rtol):
        worst = (got - expected).abs().max().item() if isinstance(got, torch.Tensor) and got.shape == expected.shape else float("nan")
        raise NotFusable(f"its fused form computes something else (max difference {worst:.3g})")
    return form
