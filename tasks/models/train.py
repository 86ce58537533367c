"""Adam (lr 1e-3) with early stopping on validation loss; non-finite loss rejects the run."""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from tasks.common.errors import DivergedError, RungNotApplicable
from tasks.data.datasets import Batch, CachedData, outputs
from tasks.data.images import StreamedSplit
from tasks.meters.base import EnergyMeter, Window
from tasks.meters.simple import NullMeter
from tasks.models.hooks import Hooks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 100
    patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    early_stopping: bool = True
    seed: int = 0
    log_every_s: float = 5.0
    autocast: bool = False  # mixed precision: bf16 autocast on CPU, fp16 + grad scaler on CUDA (weights stay fp32)
    autocast_dtype: str | None = None  # "bf16" or "fp16" to override the device's default
    monitor: str = "loss"  # early stopping watches "loss" or (classification) "accuracy", ties by loss
    min_delta_pct: float = 0.0  # a loss improvement smaller than this (relative) does not reset the patience
    # Epochs shorter than this share one meter window, each charged its share by wall time: a window costs the meter
    # (CodeCarbon: 3-4 ms here), which doubled the reading of a 5 ms epoch. 0: one window per epoch.
    energy_window_s: float = 0.0


@dataclass
class TrainReport:
    epochs_run: int
    best_epoch: int
    max_epochs: int
    stopped_early: bool
    best_val_loss: float
    duration_s: float
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    epoch_energy_j: list[float] = field(default_factory=list)  # zeros when trained without a meter

    @property
    def energy_j(self) -> float:
        return sum(self.epoch_energy_j)

    @property
    def energy_sem_j(self) -> float:
        """Uncertainty of the total from the epoch-to-epoch spread (epochs do the same work).

        The spread is the median absolute deviation (x 1.4826, a robust standard deviation),
        so a systematic warm-up epoch does not count as noise.
        """
        n = len(self.epoch_energy_j)
        if n < 2:
            return 0.0
        median = statistics.median(self.epoch_energy_j)
        mad = statistics.median(abs(e - median) for e in self.epoch_energy_j)
        return 1.4826 * mad * math.sqrt(n)

    @property
    def epochs_saved(self) -> int:
        """Epochs early stopping did not have to run."""
        return self.max_epochs - self.epochs_run


def loss_fn(task: str, hooks: Hooks | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss on labels: the user's `model.loss` when set (tasks/models/hooks.py), else the task's."""
    if hooks is not None and "loss" in hooks:
        return hooks.loss
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def loss_targets(y: torch.Tensor, task: str) -> torch.Tensor:
    return y if task == "classification" else y.unsqueeze(1)


BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(model outputs, indices of the batch in the training split) -> training loss."""
BatchStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""(model, indices of the batch in the training split, its inputs) -> training loss: the user's `train_step`."""


def fit(
    model: nn.Module,
    data: CachedData,
    cfg: TrainConfig,
    label: str = "train",
    meter: EnergyMeter | None = None,
    batch_loss: BatchLoss | None = None,
    hooks: Hooks | None = None,
) -> TrainReport:
    """Train in place; the best-validation weights are restored at the end.

    With a meter, every epoch is its own measurement window, so the energy of each epoch
    (and what early stopping saved) is on record. Energy spent before a divergence is kept
    in `partial_energy_j` of the raised error. `batch_loss` replaces the training loss (e.g.
    distillation); early stopping always watches the plain validation loss. `hooks`: the user's
    loss, metric and training step (tasks/models/hooks.py), each in place of the default.
    """
    hooks = hooks or Hooks()
    if batch_loss is not None and "train_step" in hooks:
        raise RungNotApplicable(
            f"model.train_step {hooks.names['train_step']} computes the training loss itself, so soft labels "
            "cannot replace it"
        )
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    criterion: BatchLoss = loss_fn(data.task, hooks)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = data.x_train, loss_targets(data.y_train, data.task)
    x_val, y_val = data.x_val, loss_targets(data.y_val, data.task)
    step_loss: BatchLoss = batch_loss or (lambda out, idx: criterion(out, y[idx]))
    train_step: BatchStep | None = (
        (lambda m, idx, inputs: hooks.train_step(m, data.batch("train", y, idx, inputs)))
        if "train_step" in hooks
        else None
    )
    # The validation split in the dataset's form, for the user's step (a streamed image folder's is read in chunks).
    val_batch = data.batch("val", y_val) if "train_step" in hooks and isinstance(x_val, torch.Tensor) else None
    val = _Split(x_val, y_val, val_batch)
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    best_score = patience_score = (math.inf, math.inf)
    patience_epoch = 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    epoch_meter = meter or NullMeter()
    windows = _EpochWindows(epoch_meter, label, cfg.energy_window_s)
    device_type = next(model.parameters()).device.type
    amp_dtype, use_scaler = amp_settings(device_type, cfg.autocast, cfg.autocast_dtype)
    scaler = torch.amp.GradScaler(device_type, enabled=use_scaler)
    stepping = _Stepping(optimizer, step_loss, train_step, cfg.autocast, amp_dtype, scaler)
    start = last_log = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        windows.open(epoch)
        began = time.perf_counter()
        try:
            train_loss = _epoch(model, x, stepping, generator, cfg.batch_size, label, epoch)
            val_loss, val_acc = _validate(model, val, criterion, hooks, cfg.monitor == "accuracy", label, epoch)
        except DivergedError as exc:
            exc.partial_energy_j = windows.abandon()
            raise
        except BaseException:
            windows.abandon()
            raise
        train_losses.append(train_loss)
        val_losses.append(val_loss)
        score = (-val_acc, val_loss) if cfg.monitor == "accuracy" and val_acc is not None else (0.0, val_loss)
        if score < best_score:
            best_score, best_loss, best_epoch, best_state = score, val_loss, epoch, copy.deepcopy(model.state_dict())
        if _significant(score, patience_score, cfg.min_delta_pct):
            # On a plateau, tiny improvements would reset the patience for ever: only real ones count.
            patience_score, patience_epoch = score, epoch
        now = time.perf_counter()
        if now - last_log >= cfg.log_every_s:
            log.info(
                "%s: epoch %d/%d val_loss %.4f (best %.4f @ %d)",
                label,
                epoch,
                cfg.max_epochs,
                val_loss,
                best_loss,
                best_epoch,
            )
            last_log = now
        stopping = cfg.early_stopping and epoch - patience_epoch >= cfg.patience
        windows.epoch_done(now - began, last=stopping or epoch == cfg.max_epochs)
        if stopping:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainReport(
        epochs_run=epoch,
        best_epoch=best_epoch,
        max_epochs=cfg.max_epochs,
        stopped_early=epoch < cfg.max_epochs,
        best_val_loss=best_loss,
        duration_s=time.perf_counter() - start,
        train_losses=train_losses,
        val_losses=val_losses,
        epoch_energy_j=windows.epoch_energy_j,
    )


class _EpochWindows:
    """The meter windows of one training run: a window opens with an epoch and closes once it has run for
    `window_s` (or at the last epoch); its energy is split over its epochs by their wall time."""

    def __init__(self, meter: EnergyMeter, label: str, window_s: float) -> None:
        self.meter, self.label, self.window_s = meter, label, window_s
        self.epoch_energy_j: list[float] = []
        self._stack: ExitStack | None = None
        self._handle: Window | None = None
        self._durations_s: list[float] = []

    def open(self, epoch: int) -> None:
        if self._stack is None:
            self._stack = ExitStack()
            self._handle = self._stack.enter_context(self.meter.window(f"{self.label} epoch {epoch}"))
            self._durations_s = []

    def epoch_done(self, duration_s: float, last: bool) -> None:
        self._durations_s.append(duration_s)
        if last or sum(self._durations_s) >= self.window_s:
            energy_j = self._close()
            total_s = sum(self._durations_s)
            self.epoch_energy_j.extend(
                energy_j * d / total_s if total_s > 0 else energy_j / len(self._durations_s) for d in self._durations_s
            )

    def abandon(self) -> float:
        """Close the open window after a failure; the energy of the whole run so far."""
        return sum(self.epoch_energy_j) + (self._close() if self._stack is not None else 0.0)

    def _close(self) -> float:
        assert self._stack is not None and self._handle is not None
        stack, handle, self._stack, self._handle = self._stack, self._handle, None, None
        stack.close()
        return handle.measurement.energy_j


def _significant(score: tuple[float, float], reference: tuple[float, float], min_delta_pct: float) -> bool:
    """Whether `score` (lower is better: (-accuracy or 0, loss)) improves on `reference` by more than the
    minimum: any higher accuracy, or at equal accuracy a loss lower by more than `min_delta_pct` percent."""
    if score[0] != reference[0]:
        return score[0] < reference[0]
    return (
        score[1] < reference[1] * (1 - min_delta_pct / 100) if math.isfinite(reference[1]) else score[1] < reference[1]
    )


def amp_settings(device_type: str, enabled: bool, dtype: str | None = None) -> tuple[torch.dtype, bool]:
    """(autocast dtype, whether to scale the loss) for a device.

    bf16 keeps fp32's exponent range, so it trains without loss scaling (the CPU default: AMX /
    AVX512-BF16 units); fp16 underflows small gradients, so it needs a GradScaler (the CUDA default,
    where tensor cores run fp16)."""
    chosen = dtype or ("fp16" if device_type == "cuda" else "bf16")
    if chosen not in ("bf16", "fp16"):
        raise ValueError(f"autocast_dtype = {chosen!r}: expected 'bf16' or 'fp16'")
    torch_dtype = torch.float16 if chosen == "fp16" else torch.bfloat16
    return torch_dtype, enabled and torch_dtype == torch.float16


@dataclass(frozen=True)
class _Stepping:
    """How each training batch is computed and applied: its loss (`step_loss` on the model's outputs, or the user's
    `train_step` from the model, the batch's indices and inputs), under autocast at `amp_dtype` when `autocast`,
    through `optimizer` (and `scaler`, for fp16)."""

    optimizer: torch.optim.Optimizer
    step_loss: BatchLoss
    train_step: BatchStep | None
    autocast: bool
    amp_dtype: torch.dtype
    scaler: torch.amp.GradScaler


def _epoch(
    model: nn.Module,
    x: torch.Tensor | StreamedSplit,
    stepping: _Stepping,
    generator: torch.Generator,
    batch_size: int,
    label: str,
    epoch: int,
) -> float:
    """One pass over the training split; returns the mean training loss."""
    s = stepping
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for idx, inputs in _batches(x, order, batch_size):
        s.optimizer.zero_grad(set_to_none=True)
        if s.train_step is None:
            with torch.autocast(device_type=x.device.type, dtype=s.amp_dtype, enabled=s.autocast):
                out = model(inputs)
            loss = s.step_loss(out.float(), idx)
        else:
            with torch.autocast(device_type=x.device.type, dtype=s.amp_dtype, enabled=s.autocast):
                loss = s.train_step(model, idx, inputs).float()
        if not torch.isfinite(loss):
            raise DivergedError(f"{label}: loss became {loss.item()} at epoch {epoch}")
        if s.scaler.is_enabled():
            # fp16: scale the loss so small gradients survive; steps with inf/nan gradients are skipped.
            s.scaler.scale(loss).backward()
            s.scaler.step(s.optimizer)
            s.scaler.update()
        else:
            loss.backward()
            s.optimizer.step()
        total += loss.item() * len(idx)
    return total / len(x)


def _batches(
    x: torch.Tensor | StreamedSplit, order: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(indices, inputs) of each batch of an epoch in `order`: sliced from a tensor, or decoded ahead by a streamed
    split's workers."""
    if isinstance(x, StreamedSplit):
        return x.batches(order, batch_size)
    return ((order[i : i + batch_size], x[order[i : i + batch_size]]) for i in range(0, len(x), batch_size))


def _outputs_and_step_loss(
    model: nn.Module,
    x: torch.Tensor | StreamedSplit,
    y: torch.Tensor,
    train_step: Callable[[nn.Module, Batch], torch.Tensor],
    batch: Batch | None,
) -> tuple[torch.Tensor, float]:
    """The model's outputs on a split, and the user's training step on it as a validation loss: on the whole split
    in the dataset's form (`batch`, built once before the epochs), or on a streamed split's chunks, each decoded
    once for both, the loss averaged by the chunks' sizes (equal to the whole-split loss for a step whose loss is a
    mean over the batch; an image folder's items are pairs)."""
    if isinstance(x, torch.Tensor):
        if batch is None:
            raise ValueError("the user's training step needs the validation split in the dataset's form")
        return model(x), float(train_step(model, batch).item())
    parts: list[torch.Tensor] = []
    total, start = 0.0, 0
    for inputs in x.chunks():
        parts.append(model(inputs))
        total += float(train_step(model, (inputs, y[start : start + len(inputs)])).item()) * len(inputs)
        start += len(inputs)
    return torch.cat(parts), total / len(x)


class _Split(NamedTuple):
    """A split the loop validates on: its inputs, its loss targets, and for the user's training step the split in the
    dataset's form (`batch`; None for a streamed split, read in chunks)."""

    x: torch.Tensor | StreamedSplit
    y: torch.Tensor
    batch: Batch | None


def _validate(
    model: nn.Module,
    split: _Split,
    criterion: BatchLoss,
    hooks: Hooks,
    monitored: bool,
    label: str,
    epoch: int,
) -> tuple[float, float | None]:
    """(validation loss, validation score). The loss is the user's training step (on the split in the dataset's form)
    or loss, else the task's; the score is the user's metric when early stopping monitors it (else not computed), or
    accuracy."""
    x, y = split.x, split.y
    model.eval()
    with torch.no_grad():
        if "train_step" in hooks:
            out, loss = _outputs_and_step_loss(model, x, y, hooks.train_step, split.batch)
        else:
            out = outputs(model, x)
            loss = criterion(out, y).item()
        if "metric" in hooks:
            score = hooks.metric(out.float(), y) if monitored else None
        else:
            score = (out.argmax(1) == y).float().mean().item() if out.shape[1] > 1 and y.dim() == 1 else None
    if not math.isfinite(loss):
        raise DivergedError(f"{label}: validation loss became {loss} at epoch {epoch}")
    return loss, score
