"""A user's model factory, checked before the flow starts: every problem is one `InputError` line.

`FACTORY(input_shape=(...), n_outputs=K)` must import, build an `nn.Module` without raising, map a
batch `(2, *input_shape)` to `(2, K)`, and train one step at the scenario's batch size within the
machine's memory. Memory is first estimated from one small forward pass (every module's output is
kept for the backward pass), so a batch that cannot fit is refused without trying it; a batch that
should fit is then tried for real (forward + backward), and an allocation failure is caught.
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from tasks.common.plugins import first_line, resolve_callable
from thresholds.errors import InputError

FIELD = "model.factory"  # the scenario key; `--model` on the command line sets it
MEMORY_HEADROOM = 0.6  # of the memory available now: the loop also holds the data, a teacher and a measured copy


@dataclass(frozen=True)
class CheckedModel:
    """What the check learned about the user's model: shown to the user before the loop starts."""

    type_name: str
    params: int
    step_bytes: int  # estimated memory of one training step at the scenario's batch size


def _activation_bytes_per_sample(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every module's output for one sample: what autograd keeps for the backward pass, roughly."""
    total = 0

    def hook(_: nn.Module, __: object, out: object) -> None:
        nonlocal total
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total // len(x)


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _fits(step_bytes: int, available: int) -> bool:
    return step_bytes <= available * MEMORY_HEADROOM


def check_factory(
    value: str, input_shape: tuple[int, ...], n_outputs: int, batch_size: int, field: str = FIELD
) -> CheckedModel:
    """Build the user's model once and try it: import, build, output shape, memory at `batch_size`."""
    factory = resolve_callable(value, field)
    try:
        model = factory(input_shape=tuple(input_shape), n_outputs=n_outputs)
    except Exception as exc:  # the user's code: its message, in one line
        raise InputError(
            field,
            value,
            f"a factory that builds a model for input_shape={tuple(input_shape)}, n_outputs={n_outputs} (it raised "
            f"{first_line(exc)})",
        ) from None
    if not isinstance(model, nn.Module):
        raise InputError(
            field, value, f"a factory that returns a torch.nn.Module (it returned a {type(model).__name__})"
        )
    dummy = torch.zeros(2, *input_shape)
    model.eval()
    try:
        with torch.no_grad():
            out = model(dummy)
    except Exception as exc:
        raise InputError(
            field,
            value,
            f"a model that takes a batch of shape (N, {', '.join(map(str, input_shape))}) (its forward raised "
            f"{first_line(exc)})",
        ) from None
    what = f"{n_outputs} classes" if n_outputs > 1 else "a regression target"
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_outputs):
        shown = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            "model output shape",
            shown,
            f"(2, {n_outputs}) for a batch of 2: one output per class ({what})",
            f"{field} {value}",
        )
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    step_bytes = (
        2 * batch_size * _activation_bytes_per_sample(model, dummy) + 4 * params
    )  # activations + their gradients; weights, grads, Adam
    available = _available_bytes()
    if not _fits(step_bytes, available):
        raise _too_big(batch_size, step_bytes, available, params, value)
    _try_step(model, input_shape, batch_size, step_bytes, available, params, value)
    return CheckedModel(type(model).__name__, sum(p.numel() for p in model.parameters()), step_bytes)


def _suggested_batch(batch_size: int, step_bytes: int, available: int, params: int) -> int:
    """The largest power of 2 below `batch_size` whose estimated step fits (at least 1)."""
    per_sample = max(1, (step_bytes - 4 * params) / batch_size)
    room = available * MEMORY_HEADROOM - 4 * params
    fitting = max(1, int(room // per_sample)) if room > 0 else 1
    return max(1, min(2 ** int(math.log2(fitting)), max(1, batch_size // 2)))


def _too_big(batch_size: int, step_bytes: int, available: int, params: int, value: str, why: str = "") -> InputError:
    suggestion = _suggested_batch(batch_size, step_bytes, available, params)
    gib = 2**30
    detail = why or f"a training step needs about {step_bytes / gib:.1f} GiB, {available / gib:.1f} GiB are available"
    return InputError(
        "training.batch_size", batch_size, f"a batch size at which {value} fits in memory ({detail}; try {suggestion})"
    )


def _try_step(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    step_bytes: int,
    available: int,
    params: int,
    value: str,
) -> None:
    """One forward + backward at the training batch size; an allocation failure is the one-line batch-size error."""
    model.train()
    try:
        out = model(torch.zeros(batch_size, *input_shape))
        out.float().sum().backward()
    except RuntimeError as exc:
        message = str(exc).lower()
        if "alloc" in message or "out of memory" in message or "not enough memory" in message:
            asked = re.search(r"allocate (\d+) bytes", message)
            why = (
                f"a training step failed to allocate {int(asked.group(1)) / 2**30:,.1f} GiB"
                if asked
                else first_line(exc)
            )
            raise _too_big(batch_size, step_bytes, available, params, value, why=why) from None
        raise InputError(
            FIELD, value, f"a model that trains at batch size {batch_size} (a training step raised {first_line(exc)})"
        ) from None
    finally:
        model.zero_grad(set_to_none=True)
        gc.collect()
