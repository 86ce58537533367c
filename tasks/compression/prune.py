"""Structured pruning of any architecture with Torch-Pruning's dependency graph.

The graph is traced from an example input of the model's `input_shape`, so coupled channels
are removed together: residual additions, BatchNorm, concatenations, grouped and depthwise
convolutions, and `nn.MultiheadAttention`, in one of two ways (`attention`):

- `head_dims`: its embedding dimension, rounded to a multiple of the heads, so each head keeps an
  equal, smaller dimension; the number of heads is kept.
- `heads`: whole heads, `ratio` of them (at least one head stays), each keeping its dimension. An
  attention layer's embedding channels are also the residual stream's, so the layers on one stream
  lose the same heads, ranked by their importance summed over the group; the rest of the model
  (feed-forward widths, convolutions) is pruned at `ratio` as usual.

The output head (the last layer producing the model's outputs) is kept automatically; `keep_layers` names more.

Options: L2-magnitude or first-order Taylor importance (needs a batch and a loss), per-layer
or global ratios, one-shot or an iterative schedule with a callback between steps (the loop
fine-tunes there). The result is an ordinary narrower model whose spec records the new
structure (tasks/models/factory.py), so it reloads exactly with `weights_only=True`. A model the
pruner cannot handle raises `RungNotApplicable` with the reason, and the ladder goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tasks.common.errors import RungNotApplicable
from tasks.models.factory import ModelSpec, example_input, structure_of, widths_of


def pruning_label(
    ratio: float,
    importance: str = "magnitude",
    global_pruning: bool = False,
    iterative_steps: int = 1,
    attention: str = "head_dims",
) -> str:
    options = [
        o
        for o in (
            importance if importance != "magnitude" else "",
            "global" if global_pruning else "",
            f"x{iterative_steps}" if iterative_steps > 1 else "",
            "heads" if attention == "heads" else "",
        )
        if o
    ]
    return f"prune:{ratio:g}" + (f"({','.join(options)})" if options else "")


def output_layer(model: nn.Module, example: torch.Tensor, n_outputs: int) -> str:
    """The name of the last layer (in execution order) whose output has `n_outputs` features: the head."""
    ran: list[tuple[str, torch.Size]] = []
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: ran.append((name, out.shape)) if isinstance(out, torch.Tensor) else None
        )
        for name, module in model.named_modules()
        if next(module.children(), None) is None
        and next(module.parameters(recurse=False), None) is not None  # leaf layers with weights
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
        raise RungNotApplicable(
            f"pruning: no layer of the model produces its {n_outputs} outputs, so the head cannot be kept"
        )
    return heads[-1]


def unsupported_layers(model: nn.Module) -> list[str]:
    """torch.nn layers with weights that Torch-Pruning has no pruner for (e.g. GRU, RNN, Bilinear), as `name (Type)`."""
    from torch_pruning import ops

    norms = (ops.TORCH_BATCHNORM, ops.TORCH_LAYERNORM, ops.TORCH_GROUPNORM, ops.TORCH_INSTANCENORM)
    known = (ops.TORCH_CONV, ops.TORCH_LINEAR, *norms, ops.TORCH_PRELU, ops.TORCH_EMBED, ops.TORCH_MHA, ops.TORCH_LSTM)
    return [
        f"{name} ({type(m).__name__})"
        for name, m in model.named_modules()
        if name
        and type(m).__module__.startswith("torch.nn.")
        and not isinstance(m, known)
        and next(m.parameters(recurse=False), None) is not None
    ]


def _kept(model: nn.Module, example: torch.Tensor, n_outputs: int, keep_layers: Sequence[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in keep_layers if name not in modules]
    if unknown:
        raise RungNotApplicable(f"model.keep_layers: no module named {', '.join(map(repr, unknown))} in the model")
    return [modules[name] for name in {output_layer(model, example, n_outputs), *keep_layers}]


@dataclass(frozen=True)
class Pruning:
    """How channels are scored and removed: by `importance` (magnitude, or taylor: the gradients of a batch), per layer
    or one ratio across layers (`global_pruning`), in `iterative_steps` steps, leaving `keep_layers` (and the output
    head) whole; `nn.MultiheadAttention` by every head's dimension or by whole heads (`attention`)."""

    importance: str = "magnitude"
    global_pruning: bool = False
    iterative_steps: int = 1
    keep_layers: Sequence[str] = ()
    attention: Literal["head_dims", "heads"] = "head_dims"


BY_MAGNITUDE = Pruning()  # the defaults


def prune(
    model: nn.Module,
    spec: ModelSpec,
    ratio: float,
    how: Pruning = BY_MAGNITUDE,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    between_steps: Callable[[nn.Module, int], None] | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Remove `ratio` of the channels of the prunable layers, in place.

    `ratio` counts channels (neurons, embedding dimensions), not parameters, as torch-pruning
    does; with `attention="heads"`, whole heads of `nn.MultiheadAttention` (see the module docstring).
    With Taylor importance, `batch` and `loss_fn` provide the gradients it scores channels by.
    """
    import torch_pruning as tp

    importance, iterative_steps, attention = how.importance, how.iterative_steps, how.attention

    if not 0 < ratio < 1:
        raise ValueError(f"pruning ratio = {ratio!r}: expected a fraction of channels in (0, 1)")
    if importance not in ("magnitude", "taylor"):
        raise ValueError(f"importance = {importance!r}: expected 'magnitude' or 'taylor'")
    if importance == "taylor" and (batch is None or loss_fn is None):
        raise ValueError("taylor importance needs a batch and a loss function to compute gradients")
    if iterative_steps < 1:
        raise ValueError(f"iterative_steps = {iterative_steps!r}: expected an integer >= 1")
    if attention not in ("head_dims", "heads"):
        raise ValueError(f"attention = {attention!r}: expected 'head_dims' or 'heads'")
    unsupported = unsupported_layers(model)
    if unsupported:
        raise RungNotApplicable(f"Torch-Pruning has no pruner for {', '.join(unsupported)}")
    example = example_input(spec)
    was_training = model.training
    params_before = sum(p.numel() for p in model.parameters())
    kept = _kept(model, example, spec.out_features, how.keep_layers)
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    by_head = attention == "heads" and bool(heads)
    scorer = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=scorer,
            pruning_ratio=ratio,
            global_pruning=how.global_pruning,
            iterative_steps=iterative_steps,
            # Whole heads are removed by `_prune_heads`: the pruner leaves attention (and the residual stream it shares)
            # alone.
            ignored_layers=[*kept, *heads] if by_head else kept,
            # nn.MultiheadAttention: its embedding width is pruned (with the residual stream it feeds) to a
            # multiple of the heads, so every head keeps an equal, smaller dimension. tp's `num_heads` /
            # `prune_num_heads` options are for qkv-Linear attention: given nn.MultiheadAttention (torch-pruning
            # 1.6.1) they leave it unpruned, hence `_prune_heads` through the same dependency graph.
            round_to=math.lcm(*heads.values()) if heads and not by_head else None,
        )
        for step in range(iterative_steps):
            if importance == "taylor":
                assert batch is not None and loss_fn is not None
                model.zero_grad()
                loss_fn(model(batch[0]), batch[1]).backward()
            if by_head:
                _prune_heads(pruner.DG, scorer, heads, ratio * (step + 1) / iterative_steps)
            pruner.step()
            if between_steps is not None and step < iterative_steps - 1:
                between_steps(model, step)
        model.eval()
        with torch.no_grad():
            out = model(example)
    except RungNotApplicable:
        raise
    except Exception as exc:  # a layer or operation the dependency graph does not cover
        raise RungNotApplicable(
            f"Torch-Pruning cannot prune this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if sum(p.numel() for p in model.parameters()) == params_before:
        raise RungNotApplicable(
            "Torch-Pruning found no channel it could remove (every prunable layer is coupled to a kept or unknown one)"
        )
    if out.shape[-1] != spec.out_features:
        raise RungNotApplicable(
            f"pruning changed the model's outputs to {tuple(out.shape[1:])}, expected {spec.out_features}"
        )
    new_spec = structure_of(model, widths_of(model, spec))
    label = pruning_label(ratio, importance, how.global_pruning, iterative_steps, attention if heads else "head_dims")
    return model, new_spec.model_copy(update={"history": [*spec.history, label]})


def _prune_heads(graph: Any, scorer: Any, initial: dict[nn.MultiheadAttention, int], fraction: float) -> None:
    """Remove whole heads until `fraction` of each attention layer's `initial` heads are gone (one always stays).

    The heads go through torch-pruning's dependency graph as the embedding channels they own, so every
    coupled layer (the residual stream, its norms and linears, the other attention layers on it) loses
    the same channels; `num_heads` drops and `head_dim` stays, which `models.structure_of` records.
    """
    import torch_pruning as tp

    handle = tp.prune_multihead_attention_out_channels
    done: set[nn.Module] = set()
    for first, count in initial.items():
        if first in done:
            continue
        group = graph.get_pruning_group(first, handle, list(range(first.embed_dim)))
        coupled = list(
            dict.fromkeys(dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.MultiheadAttention))
        )
        done.update(coupled)
        shapes = {(m.num_heads, m.head_dim) for m in coupled}
        if len(shapes) > 1:
            raise RungNotApplicable(
                "pruning heads: attention layers sharing a residual stream have different (heads, head_dim): "
                f"{sorted(shapes)}"
            )
        (n_heads, head_dim), target = shapes.pop(), min(count - 1, math.floor(fraction * count + 0.5))
        remove = target - (count - n_heads)  # heads still to go at this step
        if remove <= 0:
            continue
        per_head = (
            scorer(group).view(n_heads, head_dim).mean(dim=1)
        )  # one importance per channel, summed over the group
        doomed = per_head.argsort()[:remove].tolist()
        channels = sorted(h * head_dim + d for h in doomed for d in range(head_dim))
        for m in coupled:
            m.num_heads = (
                1  # the pruner checks that the new width divides by the heads it still counts: set right below
            )
        graph.get_pruning_group(first, handle, channels).prune()
        for m in coupled:
            m.num_heads = n_heads - remove
            m.head_dim = m.embed_dim // m.num_heads
