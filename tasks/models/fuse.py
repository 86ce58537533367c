"""The fused inference form of a torch model: the same function with fewer passes over memory and
less Python per batch.

At the batch sizes a table model is scored at, a small MLP's time goes to memory traffic and to
Python, not only to arithmetic: `nn.Linear` followed by `nn.ReLU` writes the layer's output, then
reads it and writes a second tensor, and every module call costs microseconds of Python. The fused
form computes each such pair as one `addmm` on a pre-transposed weight followed by an in-place ReLU
of that fresh output, called as plain functions from one traced graph (torch.fx), runs a
convolution's ReLU in place, and folds BatchNorm into the convolution or Linear before it (torch's
`fx.experimental.optimization.fuse`). Those fusions are the gain: a model with none of them (a
Transformer whose Linear layers feed no ReLU, its encoder a native module) is left as it is. On this
project's 2-core machine the 50 %-pruned paper MLP ran at 0.41-0.44x the eager baseline's time at
batch 4096, against 0.50-0.57x eager (sets of 10 interleaved pairs; `tests/tasks/models/test_fuse.py` checks
what it computes, the README gives the loop's figures).

It is a serving form, like a precision: built from the saved fp32 weights when a model folder whose
`runtime.json` says `torch-fused` is loaded (`tasks.compression.onnx_runtime.predictor`), never saved itself, so a
model file still holds only weights. It needs a model torch.fx can trace; a model it cannot trace, or
one with nothing to fuse (no ReLU after a Linear or convolution, no BatchNorm to fold), raises
`NotFusable` with the reason.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse as fold_batchnorm

RELUS = (nn.functional.relu, torch.relu)  # as called functions; an nn.ReLU module is matched by type


class NotFusable(Exception):
    """The model has no fused form here; the message says why."""


def linear(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`nn.Linear`'s function on its transposed weight: one `addmm` for a batch of rows."""
    if x.dim() == 2 and bias is not None:
        return torch.addmm(bias, x, weight_t)
    y = torch.matmul(x, weight_t)
    return y if bias is None else y.add_(bias)


def linear_relu(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`relu(linear(x))` with the ReLU in place on the fresh output, which nothing else reads."""
    return linear(x, weight_t, bias).relu_()


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), nn.ReLU)
    return (
        node.op in ("call_function", "call_method")
        and (node.target in RELUS or node.target == "relu")
        and len(node.args) == 1
    )


def fused(model: nn.Module) -> fx.GraphModule:
    """A fused copy of `model` in eval mode (the model itself is not changed). Raises `NotFusable`."""
    original = copy.deepcopy(model).eval()
    try:
        folded = fold_batchnorm(original, inplace=True)
        assert isinstance(folded, fx.GraphModule)
    except Exception as exc:  # symbolic tracing raises many types on data-dependent control flow
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise NotFusable(f"torch.fx cannot trace it ({first})") from None
    fusions = sum(1 for m in original.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) - sum(
        1 for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    )
    modules = dict(folded.named_modules())
    graph, linears = folded.graph, 0
    for node in list(graph.nodes):
        kind = type(modules.get(str(node.target))) if node.op == "call_module" else None
        if (
            kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
            and len(node.users) == 1
            and _is_relu(next(iter(node.users)), modules)
        ):
            relu = next(iter(node.users))  # the convolution's fresh output, read by nothing else: ReLU it in place
            with graph.inserting_after(relu):
                in_place = graph.call_function(torch.relu_, (node,))
            relu.replace_all_uses_with(in_place)
            graph.erase_node(relu)
            fusions += 1
        if kind is not nn.Linear:
            continue
        users = list(node.users)
        with_relu = len(users) == 1 and _is_relu(users[0], modules)
        layer = modules[str(node.target)]
        # Plain function calls on buffers, not a module per layer: a module call costs microseconds of
        # Python, a tenth of a small MLP's batch at 4096 rows.
        weight_name, bias_name = f"fused_linear_{linears}_weight_t", f"fused_linear_{linears}_bias"
        linears += 1
        folded.register_buffer(weight_name, layer.weight.detach().t().contiguous())
        with graph.inserting_before(node):  # in creation order, each before the layer it replaces
            bias = None
            if layer.bias is not None:
                folded.register_buffer(bias_name, layer.bias.detach().clone())
                bias = graph.get_attr(bias_name)
            weight_t = graph.get_attr(weight_name)
            replacement = graph.call_function(
                linear_relu if with_relu else linear,
                (node.args[0] if node.args else node.kwargs["input"], weight_t, bias),
            )
        if with_relu:
            users[0].replace_all_uses_with(replacement)
            graph.erase_node(users[0])
            fusions += 1
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    if not fusions:  # lone Linears as function calls alone save too little to spend a measured iteration on
        raise NotFusable("nothing to fuse: no Linear or convolution feeds a ReLU alone, and no BatchNorm follows one")
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
    if (
        not isinstance(got, torch.Tensor)
        or got.shape != expected.shape
        or not torch.allclose(got, expected, atol=atol, rtol=rtol)
    ):
        worst = (
            (got - expected).abs().max().item()
            if isinstance(got, torch.Tensor) and got.shape == expected.shape
            else float("nan")
        )
        raise NotFusable(f"its fused form computes something else (max difference {worst:.3g})")
    return form
