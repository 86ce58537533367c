"""A user's dataset function (`--dataset PKG.MODULE:FUNCTION`) materialised as tensors.

The contract. The function is called as `FUNCTION(samples=N, seed=S)`, passing only the keywords
its signature accepts (`samples` is `--samples`, None when not given). It returns either

    {"train": TRAIN, "val": VAL, "test": TEST, "task": "classification" | "regression"}   # "test" optional,
                                                                                          # "class_labels" optional
    (TRAIN, VAL, TEST or None, TASK)

where each split is a torch `Dataset` or tensors. A Dataset's items are tuples `(x, y, *extras)` or
mappings `{"x": ..., "y": ..., **extras}`; tensors are `(x, y, *extras)` or `{"x": X, "y": Y, **extras}`
of one length N (x: (N, ...) floats, y: (N,) class indices 0..K-1 or numbers). Every sample of every
split must have the same shape; that shape (without the batch dimension) is the model's `input_shape`,
e.g. `(40, 1)` for a 40-step sequence of 1 feature. Without a test split, a stratified 20 % of TRAIN
(fixed by the seed) is held out as the test split; VAL is never reused as the test split, because
early stopping already chose on it.

Extras are what a training step (`model.train_step`, tasks/models/hooks.py) needs beside x and y: a mask,
sample weights, an auxiliary target. Each is a number or a tensor per item (one shape throughout),
every split's items have one form, and the training step gets its batches in that form. Nothing else
uses them: the model, the loss, the metric and serving take x and y.

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

from tasks.common.plugins import resolve_callable
from thresholds.errors import InputError

FORMAT = "energy-loop.tensor-preprocessing"
FORMAT_VERSION = 1
CONTRACT = (
    '{"train": ..., "val": ..., "test": ... (optional), "task": "classification"|"regression"} or a tuple '
    "(train, val, test or None, task)"
)
SPLIT_CONTRACT = (
    "a torch Dataset of (x, y, *extras) or {'x', 'y', ...} items, or tensors (x, y, *extras) or {'x': X, 'y': Y, ...}"
)
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    """A dataset function's result as tensors: x (N, *sample_shape) float32, y class indices or floats, and
    the extras beside them (floats as float32), by split."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    task: str
    class_labels: list[str]
    notes: list[str]
    extras: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # in item order
    extra_keys: list[str] | None = None  # the extras' names when the items are mappings; None: tuples


def _kind(value: Any) -> str:
    return type(value).__name__


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value)
    return None


@dataclass(frozen=True)
class Split:
    """One split as tensors, in the form of its items: x, y, the extras and, for mappings, the extras' names."""

    x: torch.Tensor
    y: torch.Tensor
    extras: list[torch.Tensor]
    keys: list[str] | None  # None: tuples (x, y, *extras)

    @property
    def form(self) -> str:
        """The items' form as the user wrote it, each extra with its per-sample shape: `(x, y, extra of shape ())`."""
        shapes = [tuple(t.shape[1:]) for t in self.extras]
        if self.keys is None:
            return "(x, y" + "".join(f", extra of shape {shape}" for shape in shapes) + ")"
        return (
            "{x, y" + "".join(f", {key!r} of shape {shape}" for key, shape in zip(self.keys, shapes, strict=True)) + "}"
        )


class _MixedForms(Exception):
    """Raised while collating a Dataset (`_collated`) on an item whose form differs from the first item's."""


def _item_form(item: Any) -> tuple[str, ...] | int | None:
    """A Dataset item's form: its keys (a mapping), its length (a tuple of at least 2), or None."""
    if isinstance(item, Mapping):
        return tuple(map(str, item))
    if isinstance(item, tuple | list) and len(item) >= 2:
        return len(item)
    return None


def _shown_form(form: tuple[str, ...] | int | None, item: Any) -> str:
    if isinstance(form, tuple):
        return "mappings with keys " + str(list(form))
    return f"tuples of {form}" if form is not None else _kind(item)


def _collated(field_name: str, value: Any, where: str) -> tuple[list[Any], list[str] | None]:
    """A map-style Dataset's items, all of the first's form, collated into columns: [x, y, *extras] and the extras'
    names."""
    try:
        length = len(value)
    except TypeError:
        raise InputError(
            field_name, f"a {_kind(value)} without len()", f"{SPLIT_CONTRACT} (a map-style Dataset)", where
        ) from None
    if length == 0:
        raise InputError(field_name, f"an empty {_kind(value)}", "at least one sample", where)
    first = value[0]
    form = _item_form(first)
    if form is None:
        raise InputError(
            field_name,
            f"a {_kind(value)} whose items are {_kind(first)}",
            f"{SPLIT_CONTRACT}: items (x, y, *extras) or mappings",
            where,
        )
    if isinstance(form, tuple) and not {"x", "y"} <= set(form):
        raise InputError(
            field_name,
            f"a {_kind(value)} whose items have keys {list(form)}",
            "mappings with keys 'x' and 'y' (and any others)",
            where,
        )

    def collate(items: list[Any]) -> Any:
        for item in items:
            if _item_form(item) != form:
                raise _MixedForms(_shown_form(_item_form(item), item))
        return torch.utils.data.default_collate(items)

    try:
        batches = list(torch.utils.data.DataLoader(value, batch_size=1024, shuffle=False, collate_fn=collate))
    except _MixedForms as exc:
        raise InputError(
            f"{field_name} items", str(exc), f"items of one form, like the first: {_shown_form(form, first)}", where
        ) from None
    except Exception as exc:  # e.g. the default collate on items of different shapes, or an item of None
        raise InputError(
            field_name,
            _kind(value),
            f"{SPLIT_CONTRACT} with tensors of one shape ({str(exc).splitlines()[0][:160]})",
            where,
        ) from None
    if isinstance(form, int):
        return [[b[i] for b in batches] for i in range(form)], None
    keys = [k for k in form if k not in ("x", "y")]
    return [[b[k] for b in batches] for k in ("x", "y", *keys)], keys


def _materialise(split: str, value: Any, where: str) -> Split:
    """One split as tensors, from tensors `(x, y, *extras)` or `{"x": X, "y": Y, ...}`, or a Dataset of such items."""
    field_name = f"{split} split"
    keys: list[str] | None = None
    if isinstance(value, Mapping) and {"x", "y"} <= set(value):
        keys = [str(k) for k in value if k not in ("x", "y")]
        columns: list[Any] = [value["x"], value["y"], *(value[k] for k in keys)]
    elif isinstance(value, tuple | list) and len(value) >= 2:
        columns = list(value)
    elif isinstance(value, torch.utils.data.Dataset):
        chunks, keys = _collated(field_name, value, where)
        columns = [
            torch.cat(chunk) if all(isinstance(c, torch.Tensor) for c in chunk) else chunk[0] for chunk in chunks
        ]  # else: not numbers
    else:
        shown = f"a mapping with keys {sorted(map(str, value))}" if isinstance(value, Mapping) else _kind(value)
        raise InputError(field_name, shown, SPLIT_CONTRACT, where)
    x, y = _as_tensor(columns[0]), _as_tensor(columns[1])
    if x is None or y is None:
        raise InputError(
            field_name,
            f"({_kind(columns[0])}, {_kind(columns[1])})",
            f"{SPLIT_CONTRACT}: x and y tensors or numpy arrays",
            where,
        )
    y = y.reshape(-1)
    if x.dim() < 2 or len(x) != len(y) or len(x) == 0:
        raise InputError(
            field_name,
            f"x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}",
            "x (N, ...) and y (N,) with the same N >= 1",
            where,
        )
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise InputError(field_name, f"x of dtype {x.dtype}", "numbers", where)
    extras = [
        _extra(field_name, repr(keys[i]) if keys is not None else f"[{i + 2}]", column, len(x), where)
        for i, column in enumerate(columns[2:])
    ]
    return Split(x.float().contiguous(), y, extras, keys)


def _extra(field_name: str, name: str, value: Any, n: int, where: str) -> torch.Tensor:
    """One extra as a tensor of N rows (floats as float32); one line if it is not numbers or has another length."""
    extra = _as_tensor(value)
    if extra is None or extra.is_complex():
        shown = f"a list of {_kind(value[0])}" if isinstance(value, list | tuple) and value else _kind(value)
        raise InputError(
            f"{field_name} extra {name}",
            shown,
            "numbers: a number or a tensor per Dataset item, or a tensor or numpy array of N rows",
            where,
        )
    if extra.dim() == 0 or len(extra) != n:
        raise InputError(
            f"{field_name} extra {name}", f"shape {tuple(extra.shape)}", f"{n} rows, one per sample like x and y", where
        )
    return extra.float().contiguous() if extra.is_floating_point() else extra.contiguous()


def _unpack(result: Any, where: str) -> tuple[Any, Any, Any, Any, list[str] | None]:
    """(train, val, test or None, task, class labels or None) from either form of the contract."""
    if isinstance(result, Mapping):
        missing = [k for k in ("train", "val", "task") if k not in result]
        if missing:
            raise InputError(
                "returned", f"a mapping with keys {sorted(map(str, result))}", f"{CONTRACT} (missing {missing})", where
            )
        labels = result.get("class_labels")
        return (
            result["train"],
            result["val"],
            result.get("test"),
            result["task"],
            None if labels is None else [str(v) for v in labels],
        )
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
    notes = (
        []
        if samples is None or "samples" in kwargs
        else [f"--samples {samples} not passed: {value} takes no 'samples' argument"]
    )
    try:
        return function(**kwargs), notes
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(
            "--dataset", value, f"a dataset function that runs (it raised {type(exc).__name__}: {first})"
        ) from None


def load(value: str, samples: int | None, seed: int) -> Splits:
    """Call the dataset function and check what it returned; every problem is one `InputError` line."""
    where = f"dataset {value}"
    result, notes = _call(value, samples, seed)
    train, val, test, task, labels = _unpack(result, where)
    if task not in ("classification", "regression"):
        raise InputError("task", task, '"classification" or "regression"', where)
    parts = {
        name: _materialise(name, split, where)
        for name, split in (("train", train), ("val", val), ("test", test))
        if split is not None
    }
    forms = {name: part.form for name, part in parts.items()}
    for name, form in forms.items():
        if form != forms["train"]:  # a training step gets the validation split in that form too
            raise InputError(
                f"{name} split form",
                form,
                f"the training split's form, {forms['train']}: the same extras, each of one shape",
                where,
            )
    x = {name: part.x for name, part in parts.items()}
    y = {name: part.y for name, part in parts.items()}
    extras = {name: part.extras for name, part in parts.items()}
    keys = parts["train"].keys
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
        keep, test_rows = _hold_out(y["train"], task, seed)
        x["test"], y["test"], extras["test"] = (
            x["train"][test_rows],
            y["train"][test_rows],
            [e[test_rows] for e in extras["train"]],
        )
        x["train"], y["train"], extras["train"] = x["train"][keep], y["train"][keep], [e[keep] for e in extras["train"]]
        notes.append(
            f"no test split returned: held out a stratified {TEST_FRACTION:.0%} of the training split as the test "
            f"split (seed {seed})"
        )
    if extras["train"]:
        notes.append(
            f"items {forms['train']}: only a training step (model.train_step) gets the extras, in its batches; without "
            "one they are unused"
        )
    return Splits(x, y, task, labels or [], notes, extras, keys)


def _check_classes(y: dict[str, torch.Tensor], labels: list[str] | None, where: str) -> list[str]:
    for name, t in y.items():
        if t.is_floating_point() and not bool(torch.all(t == t.round())):
            raise InputError(
                f"{name} targets",
                "fractional values",
                'class indices 0..K-1 (integers) for a "classification" task',
                where,
            )
        if bool((t < 0).any()):
            raise InputError(f"{name} targets", int(t.min()), "class indices 0..K-1 (integers >= 0)", where)
        y[name] = t.long()
    n_classes = int(max(int(t.max()) for t in y.values())) + 1
    if labels is not None and len(labels) < n_classes:
        raise InputError(
            "class_labels", labels, f"one label per class index (the targets go up to {n_classes - 1})", where
        )
    if n_classes < 2:
        raise InputError("classes", n_classes, "at least 2 distinct classes", where)
    return labels or [str(i) for i in range(n_classes)]


def _hold_out(y: torch.Tensor, task: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows kept for training, rows held out as the test split), stratified by class where every class has 2 rows."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    stratify = y.numpy() if task == "classification" and np.bincount(y.numpy()).min() >= 2 else None
    keep, test = train_test_split(index, test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    return torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(test))


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
            raise InputError(
                "preprocessing format", f"{d.get('format')} v{d.get('version')}", f"{FORMAT} v{FORMAT_VERSION}"
            )
        return cls(
            tuple(d["sample_shape"]),
            d["task"],
            list(d["class_labels"]),
            float(d["target_mean"]),
            float(d["target_std"]),
            list(d["notes"]),
        )
