"""Structured pruning of any architecture with Torch-Pruning's dependency graph.

The graph is traced from an example input of the model's `input_shape`, so coupled channels
are removed together: residual additions, BatchNorm, concatenations, grouped and depthwise
convolutions, and multi-head attention (its embedding dimension, rounded to a multiple of the
heads, so each head keeps an equal, smaller dimension; the number of heads is kept). The output head (the
last layer producing the model's outputs) is kept automatically; `keep_layers` names more.

Options: L2-magnitude or first-order Taylor importance (needs a batch and a loss), per-layer
or global ratios, one-shot or an iterative schedule with a callback between steps (the loop
fine-tunes there). The result is an ordinary narrower model whose spec records the new
structure (tasks/models.py), so it reloads exactly with `weights_only=True`. A model the
pruner cannot handle raises `RungNotApplicable` with the reason, and the ladder goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from tasks.errors import RungNotApplicable
from tasks.models import ModelSpec, example_input, structure_of, widths_of


def pruning_label(ratio: float, importance: str = "magnitude", global_pruning: bool = False, iterative_steps: int = 1) -> str:
    options = [
        o
        for o in (importance if importance != "magnitude" else "", "global" if global_pruning else "", f"x{iterative_steps}" if iterative_steps > 1 else "")
        if o
    ]
    return f"prune:{ratio:g}" + (f"({','.join(options)})" if options else "")


def output_layer(model: nn.Module, example: torch.Tensor, n_outputs: int) -> str:
    """The name of the last layer (in execution order) whose output has `n_outputs` features: the head."""
    ran: list[tuple[str, torch.Size]] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: ran.append((name, out.shape)) if isinstance(out, torch.Tensor) else None)
        for name, module in model.named_modules()
        if next(module.children(), None) is None and next(module.parameters(recurse=False), None) is not None  # leaf layers with weights
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    heads = [name for name, shape in ran if len(shape) >= 2 and n_outputs in (shape[-1], shape[1])]
    if not heads:
        raise RungNotApplicable(f"pruning: no layer of the model produces its {n_outputs} outputs, so the head cannot be kept")
    return heads[-1]


def unsupported_layers(model: nn.Module) -> list[str]:
    """torch.nn layers with weights that Torch-Pruning has no pruner for (e.g. GRU, RNN, Bilinear), as `name (Type)`."""
    from torch_pruning import ops

    norms = (ops.TORCH_BATCHNORM, ops.TORCH_LAYERNORM, ops.TORCH_GROUPNORM, ops.TORCH_INSTANCENORM)
    known = (ops.TORCH_CONV, ops.TORCH_LINEAR, *norms, ops.TORCH_PRELU, ops.TORCH_EMBED, ops.TORCH_MHA, ops.TORCH_LSTM)
    return [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if name and type(m).__module__.startswith("torch.nn.") and not isinstance(m, known) and next(m.parameters(recurse=False), None) is not None
    ]


def _kept(model: nn.Module, example: torch.Tensor, n_outputs: int, keep_layers: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in keep_layers if name not in modules]
    if unknown:
        raise RungNotApplicable(f"model.keep_layers: no module named {', '.join(map(repr, unknown))} in the model")
    return [modules[name] for name in {output_layer(model, example, n_outputs), *keep_layers}]


def prune(
    model: nn.Module,
    spec: ModelSpec,
    ratio: float,
    importance: str = "magnitude",
    global_pruning: bool = False,
    iterative_steps: int = 1,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    between_steps: Callable[[nn.Module, int], None] | None = None,
    keep_layers: Sequence[str] = (),
) -> tuple[nn.Module, ModelSpec]:
    """Remove `ratio` of the channels of the prunable layers, in place.

    `ratio` counts channels (neurons, embedding dimensions), not parameters, as torch-pruning
    does. With Taylor importance, `batch` and `loss_fn` provide the gradients it scores channels by.
    """
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio = {ratio!r}: expected a fraction of channels in (0, 1)")
    if importance not in ("magnitude", "taylor"):
        raise ValueError(f"importance = {importance!r}: expected 'magnitude' or 'taylor'")
    if importance == "taylor" and (batch is None or loss_fn is None):
        raise ValueError("taylor importance needs a batch and a loss function to compute gradients")
    if iterative_steps < 1:
        raise ValueError(f"iterative_steps = {iterative_steps!r}: expected an integer >= 1")
    unsupported = unsupported_layers(model)
    if unsupported:
        raise RungNotApplicable(f"Torch-Pruning has no pruner for {', '.join(unsupported)}")
    example = example_input(spec)
    was_training = model.training
    params_before = sum(p.numel() for p in model.parameters())
    kept = _kept(model, example, spec.out_features, keep_layers)
    attention = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    scorer = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=scorer,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            iterative_steps=iterative_steps,
            ignored_layers=kept,
            # nn.MultiheadAttention: its embedding width is pruned (with the residual stream it feeds) to a
            # multiple of the heads, so every head keeps an equal, smaller dimension. tp's `num_heads` grouping
            # is for qkv-Linear attention: given nn.MultiheadAttention it leaves the embedding unpruned.
            round_to=math.lcm(*attention.values()) if attention else None,
        )
        for step in range(iterative_steps):
            if importance == "taylor":
                assert batch is not None and loss_fn is not None
                model.zero_grad()
                loss_fn(model(batch[0]), batch[1]).backward()
            pruner.step()
            if between_steps is not None and step < iterative_steps - 1:
                between_steps(model, step)
        model.eval()
        with torch.no_grad():
            out = model(example)
    except RungNotApplicable:
        raise
    except Exception as exc:  # a layer or operation the dependency graph does not cover
        raise RungNotApplicable(f"Torch-Pruning cannot prune this model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if sum(p.numel() for p in model.parameters()) == params_before:
        raise RungNotApplicable("Torch-Pruning found no channel it could remove (every prunable layer is coupled to a kept or unknown one)")
    if out.shape[-1] != spec.out_features:
        raise RungNotApplicable(f"pruning changed the model's outputs to {tuple(out.shape[1:])}, expected {spec.out_features}")
    new_spec = structure_of(model, widths_of(model, spec))
    label = pruning_label(ratio, importance, global_pruning, iterative_steps)
    return model, new_spec.model_copy(update={"history": [*spec.history, label]})
