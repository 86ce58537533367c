"""A user's dataset function (`--dataset PKG.MODULE:FUNCTION`) materialised as tensors.

The contract. The function is called as `FUNCTION(samples=N, seed=S)`, passing only the keywords
its signature accepts (`samples` is `--samples`, None when not given). It returns either

    {"train": TRAIN, "val": VAL, "test": TEST, "task": "classification" | "regression"}   # "test" optional,
                                                                                          # "class_labels" optional
    (TRAIN, VAL, TEST or None, TASK)

where each split is a torch `Dataset` whose items are `(x, y)` pairs, or a pair of tensors `(x, y)`
(x: (N, ...) floats, y: (N,) class indices 0..K-1 or numbers). Every sample of every split must have
the same shape; that shape (without the batch dimension) is the model's `input_shape`, e.g.
`(40, 1)` for a 40-step sequence of 1 feature. Without a test split, a stratified 20 % of TRAIN
(fixed by the seed) is held out as the test split; VAL is never reused as the test split, because
early stopping already chose on it.

The inputs are used as returned (standardise them in the function, as `examples/mnist1d_sequence.py`
does); a regression target is standardised with the training split's mean and spread, as for tables.
Wrong types are one `InputError` line naming what was returned and what was expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tasks.plugins import resolve_callable
from thresholds.errors import InputError

FORMAT = "energy-loop.tensor-preprocessing"
FORMAT_VERSION = 1
CONTRACT = '{"train": ..., "val": ..., "test": ... (optional), "task": "classification"|"regression"} or a tuple (train, val, test or None, task)'
SPLIT_CONTRACT = "a torch Dataset of (x, y) pairs or a pair of tensors (x, y)"
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """A dataset function's result as tensors: x (N, *sample_shape) float32, y class indices or floats."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    task: str
    class_labels: list[str]
    notes: list[str]


def _kind(value: Any) -> str:
    return type(value).__name__


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value)
    return None


def _materialise(split: str, value: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (x, y) tensors, from a pair of tensors or a Dataset of (x, y) items."""
    field_name = f"{split} split"
    if isinstance(value, tuple | list) and len(value) == 2:
        x, y = _as_tensor(value[0]), _as_tensor(value[1])
        if x is None or y is None:
            raise InputError(field_name, f"({_kind(value[0])}, {_kind(value[1])})", f"{SPLIT_CONTRACT}: both tensors or numpy arrays", where)
    elif isinstance(value, torch.utils.data.Dataset):
        try:
            length = len(value)  # type: ignore[arg-type]
        except TypeError:
            raise InputError(field_name, f"a {_kind(value)} without len()", f"{SPLIT_CONTRACT} (a map-style Dataset)", where) from None
        if length == 0:
            raise InputError(field_name, f"an empty {_kind(value)}", "at least one sample", where)
        first = value[0]
        if not (isinstance(first, tuple | list) and len(first) == 2):
            raise InputError(field_name, f"a {_kind(value)} whose items are {_kind(first)}", f"{SPLIT_CONTRACT}: items (x, y)", where)
        try:
            batches = list(torch.utils.data.DataLoader(value, batch_size=1024, shuffle=False))
        except Exception as exc:  # e.g. the default collate on items of different shapes
            raise InputError(field_name, _kind(value), f"{SPLIT_CONTRACT} with tensors of one shape ({str(exc).splitlines()[0][:160]})", where) from None
        x = torch.cat([torch.as_tensor(b[0]) for b in batches])
        y = torch.cat([torch.as_tensor(b[1]).reshape(-1) for b in batches])
    else:
        raise InputError(field_name, _kind(value), SPLIT_CONTRACT, where)
    if x.dim() < 2 or len(x) != len(y) or len(x) == 0:
        raise InputError(field_name, f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}", "x (N, ...) and y (N,) with the same N >= 1", where)
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise InputError(field_name, f"x of dtype {x.dtype}", "numbers", where)
    return x.float().contiguous(), y.reshape(-1)


def _unpack(result: Any, where: str) -> tuple[Any, Any, Any, Any, list[str] | None]:
    """(train, val, test or None, task, class labels or None) from either form of the contract."""
    if isinstance(result, Mapping):
        missing = [k for k in ("train", "val", "task") if k not in result]
        if missing:
            raise InputError("returned", f"a mapping with keys {sorted(map(str, result))}", f"{CONTRACT} (missing {missing})", where)
        labels = result.get("class_labels")
        return result["train"], result["val"], result.get("test"), result["task"], None if labels is None else [str(v) for v in labels]
    if isinstance(result, tuple | list) and len(result) == 4:
        return (*result, None)
    shown = f"a {_kind(result)} of {len(result)} items" if isinstance(result, tuple | list) else f"a {_kind(result)}"
    raise InputError("returned", shown, CONTRACT, where)


def _call(value: str, samples: int | None, seed: int) -> tuple[Any, list[str]]:
    function = resolve_callable(value, "--dataset")
    try:
        accepted = inspect.signature(function).parameters
    except (TypeError, ValueError):
        accepted = {}  # type: ignore[assignment]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in (("samples", samples), ("seed", seed)) if takes_any or k in accepted}
    notes = [] if samples is None or "samples" in kwargs else [f"--samples {samples} not passed: {value} takes no 'samples' argument"]
    try:
        return function(**kwargs), notes
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError("--dataset", value, f"a dataset function that runs (it raised {type(exc).__name__}: {first})") from None


def load(value: str, samples: int | None, seed: int) -> Splits:
    """Call the dataset function and check what it returned; every problem is one `InputError` line."""
    where = f"dataset {value}"
    result, notes = _call(value, samples, seed)
    train, val, test, task, labels = _unpack(result, where)
    if task not in ("classification", "regression"):
        raise InputError("task", task, '"classification" or "regression"', where)
    x: dict[str, torch.Tensor] = {}
    y: dict[str, torch.Tensor] = {}
    for name, split in (("train", train), ("val", val), ("test", test)):
        if split is not None:
            x[name], y[name] = _materialise(name, split, where)
    shapes = {name: tuple(t.shape[1:]) for name, t in x.items()}
    if len(set(shapes.values())) > 1:
        raise InputError("sample shapes", shapes, "the same shape (without the batch dimension) in every split", where)
    if task == "classification":
        labels = _check_classes(y, labels, where)
    else:
        for name, t in y.items():
            if not t.is_floating_point() and t.dtype not in (torch.int32, torch.int64):
                raise InputError(f"{name} targets", f"dtype {t.dtype}", "numbers for a regression task", where)
            y[name] = t.float()
    if "test" not in x:
        x["train"], y["train"], x["test"], y["test"] = _hold_out(x["train"], y["train"], task, seed)
        notes.append(f"no test split returned: held out a stratified {TEST_FRACTION:.0%} of the training split as the test split (seed {seed})")
    return Splits(x, y, task, labels or [], notes)


def _check_classes(y: dict[str, torch.Tensor], labels: list[str] | None, where: str) -> list[str]:
    for name, t in y.items():
        if t.is_floating_point() and not bool(torch.all(t == t.round())):
            raise InputError(f"{name} targets", "fractional values", 'class indices 0..K-1 (integers) for a "classification" task', where)
        if bool((t < 0).any()):
            raise InputError(f"{name} targets", int(t.min()), "class indices 0..K-1 (integers >= 0)", where)
        y[name] = t.long()
    n_classes = int(max(int(t.max()) for t in y.values())) + 1
    if labels is not None and len(labels) < n_classes:
        raise InputError("class_labels", labels, f"one label per class index (the targets go up to {n_classes - 1})", where)
    if n_classes < 2:
        raise InputError("classes", n_classes, "at least 2 distinct classes", where)
    return labels or [str(i) for i in range(n_classes)]


def _hold_out(x: torch.Tensor, y: torch.Tensor, task: str, seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    stratify = y.numpy() if task == "classification" and np.bincount(y.numpy()).min() >= 2 else None
    keep, test = train_test_split(index, test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    keep, test = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(test))
    return x[keep], y[keep], x[test], y[test]


@dataclass
class TensorPreprocessor:
    """Inputs used as the dataset function returned them: a table row of `x_0 ...` columns reshaped to one sample."""

    sample_shape: tuple[int, ...]
    task: str
    class_labels: list[str]
    target_mean: float = 0.0
    target_std: float = 1.0
    notes: list[str] = field(default_factory=list)

    @property
    def input_columns(self) -> list[str]:
        return [f"x_{i}" for i in range(int(np.prod(self.sample_shape)))]

    @property
    def input_dtypes(self) -> dict[str, str]:
        return dict.fromkeys(self.input_columns, "double")

    def transform(self, frame: Any) -> np.ndarray:
        return np.asarray(frame[self.input_columns], dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "task": self.task,
            "sample_shape": list(self.sample_shape),
            "class_labels": list(self.class_labels),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorPreprocessor:
        if d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise InputError("preprocessing format", f"{d.get('format')} v{d.get('version')}", f"{FORMAT} v{FORMAT_VERSION}")
        return cls(tuple(d["sample_shape"]), d["task"], list(d["class_labels"]), float(d["target_mean"]), float(d["target_std"]), list(d["notes"]))
