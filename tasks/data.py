"""Load a dataset, split it deterministically and pre-cache it as tensors.

Built in: `mnist1d` (generated offline by the mnist1d package) and sklearn's bundled
`digits`; any CSV or Parquet file with a named target column. Features are standardised
with training-split statistics; the cached file is read with `weights_only=True`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from tasks.errors import InputError

BUILTIN_DATASETS = ("mnist1d", "digits")
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
TaskType = Literal["auto", "classification", "regression"]
_CACHE_VERSION = 2
MIN_ROWS = 20
MAX_AUTO_CLASSES = 50


@dataclass(frozen=True)
class CachedData:
    """Pre-cached tensors of one split dataset plus the metadata needed to build a model."""

    name: str
    task: Literal["classification", "regression"]
    n_features: int
    n_classes: int  # 1 for regression
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_labels: tuple[str, ...]
    target_mean: float
    target_std: float
    # The raw input a deployed model takes (tasks/serving.py): column names and dtypes, standardisation.
    feature_names: tuple[str, ...] = ()
    feature_dtypes: tuple[str, ...] = ()
    feature_mean: tuple[float, ...] = ()
    feature_std: tuple[float, ...] = ()

    @property
    def out_features(self) -> int:
        return self.n_classes if self.task == "classification" else 1


def _raw_builtin(name: str, samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float32), bunch.target
        if samples is not None:
            x, y = x[:samples], y[:samples]
        return x, y, "classification"
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples if samples is not None else 5000
    args.seed = seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]])
    return x, y, "classification"


def _read_table(path: Path, target: str | None, task: TaskType) -> tuple[np.ndarray, np.ndarray, str, tuple[str, ...], dict[str, str]]:
    import pandas as pd

    where = f"dataset {path}"
    try:
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise InputError("encoding", str(exc.reason), "a UTF-8 text file", where) from None
    except Exception as exc:  # pandas raises many types; one line for the user is what matters
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError("file", path.name, f"a readable CSV/Parquet table ({first})", where) from None
    if target is None:
        raise InputError("target", None, f"the name of the target column (--target), one of {list(frame.columns)[:10]}", where)
    if target not in frame.columns:
        raise InputError("target", target, f"one of the columns {list(frame.columns)[:10]}", where)
    if len(frame) < MIN_ROWS:
        raise InputError("rows", len(frame), f"at least {MIN_ROWS} rows", where)
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise InputError("columns", list(frame.columns), "at least one feature column besides the target", where)
    for column in features.columns:
        series = features[column]
        if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            sample = series.dropna().iloc[0] if series.notna().any() else None
            raise InputError(f"column {column!r}", sample, "numeric feature values", where)
    columns = {str(name): str(features[name].dtype) for name in features.columns}
    x = features.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"column {features.columns[col]!r} row {row}", float(x[row, col]), "a finite number (no NaN/inf)", where)
    y_series = frame[target]
    if y_series.isna().any():
        raise InputError(f"target column {target!r}", "NaN", "a value in every row", where)
    if task == "auto":
        numeric = pd.api.types.is_numeric_dtype(y_series) and not pd.api.types.is_bool_dtype(y_series)
        integral = numeric and bool(np.all(np.mod(y_series.to_numpy(dtype=np.float64), 1) == 0))
        few = y_series.nunique() <= MAX_AUTO_CLASSES
        task = "classification" if (not numeric or (integral and few)) else "regression"
    if task == "classification":
        labels = tuple(str(v) for v in sorted(y_series.unique(), key=lambda v: (str(type(v)), v)))
        index = {label: i for i, label in enumerate(labels)}
        y = np.array([index[str(v)] for v in y_series], dtype=np.int64)
        return x.astype(np.float32), y, "classification", labels, columns
    if not pd.api.types.is_numeric_dtype(y_series):
        raise InputError(f"target column {target!r}", y_series.iloc[0], "numbers for a regression target", where)
    y_float = y_series.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(y_float)):
        raise InputError(f"target column {target!r}", "inf", "finite numbers", where)
    return x.astype(np.float32), y_float.astype(np.float32), "regression", (), columns


def _split(y: np.ndarray, task: str, seed: int, val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    stratify = y if task == "classification" and np.bincount(y).min() >= 3 else None
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    stratify_rest = y[rest] if stratify is not None else None
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=stratify_rest)
    return train, val, test


def resolve_source(dataset: str) -> tuple[str, Path | None]:
    """Return (display name, file path or None for a built-in); raise on unknown names."""
    if dataset in BUILTIN_DATASETS:
        return dataset, None
    path = Path(dataset)
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise InputError("dataset", dataset, "an existing .csv or .parquet file")
        return path.stem, path
    raise InputError("dataset", dataset, f"one of {', '.join(BUILTIN_DATASETS)} or a path to a .csv/.parquet file")


def prepare(
    dataset: str,
    cache_dir: Path,
    target: str | None = None,
    samples: int | None = None,
    task: TaskType = "auto",
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Path:
    """Load, validate, split and standardise once; return the path of the cached tensor file."""
    if samples is not None and samples < MIN_ROWS:
        raise InputError("samples", samples, f"an integer >= {MIN_ROWS}")
    name, path = resolve_source(dataset)
    stat = path.stat() if path else None
    key_parts = [_CACHE_VERSION, dataset, target, samples, task, seed, val_fraction, test_fraction]
    if stat:
        key_parts += [str(path.resolve()) if path else "", stat.st_size, stat.st_mtime_ns]
    key = hashlib.sha256(json.dumps(key_parts, default=str).encode()).hexdigest()[:16]
    cache_path = cache_dir / f"{name}-{key}.pt"
    if cache_path.exists():
        return cache_path

    labels: tuple[str, ...]
    if path is None:
        x, y, kind = _raw_builtin(name, samples, seed)
        labels = tuple(str(c) for c in sorted(set(y.tolist())))
        columns = {f"x{i}": "float64" for i in range(x.shape[1])}
    else:
        x, y, kind, labels, columns = _read_table(path, target, task)
        if samples is not None:
            x, y = x[:samples], y[:samples]
    if kind == "classification" and len(labels) < 2:
        raise InputError("target", target or name, "at least 2 distinct classes", f"dataset {dataset}")
    train, val, test = _split(y, kind, seed, val_fraction, test_fraction)
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant columns: keep them at zero instead of dividing by zero
    x = (x - mean) / std
    target_mean, target_std = 0.0, 1.0
    if kind == "regression":
        target_mean = float(y[train].mean())
        target_std = float(y[train].std()) or 1.0
        y = (y - target_mean) / target_std
    y_dtype = torch.int64 if kind == "classification" else torch.float32
    payload = {
        "meta": {
            "name": name,
            "task": kind,
            "n_features": int(x.shape[1]),
            "n_classes": len(labels) if kind == "classification" else 1,
            "class_labels": list(labels),
            "target_mean": target_mean,
            "target_std": target_std,
            "feature_names": list(columns),
            "feature_dtypes": list(columns.values()),
            "feature_mean": mean.astype(float).tolist(),
            "feature_std": std.astype(float).tolist(),
        },
        **{f"x_{s}": torch.tensor(x[i], dtype=torch.float32) for s, i in (("train", train), ("val", val), ("test", test))},
        **{f"y_{s}": torch.tensor(y[i], dtype=y_dtype) for s, i in (("train", train), ("val", val), ("test", test))},
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(cache_path)  # atomic: a crash never leaves a half-written cache file
    return cache_path


@functools.lru_cache(maxsize=8)
def load_cached(cache_path: str) -> CachedData:
    """Read a cache file once per process; later iterations reuse the tensors in memory."""
    payload = torch.load(cache_path, weights_only=True)
    meta = payload["meta"]
    return CachedData(
        name=meta["name"],
        task=meta["task"],
        n_features=meta["n_features"],
        n_classes=meta["n_classes"],
        class_labels=tuple(meta["class_labels"]),
        target_mean=meta["target_mean"],
        target_std=meta["target_std"],
        feature_names=tuple(meta["feature_names"]),
        feature_dtypes=tuple(meta["feature_dtypes"]),
        feature_mean=tuple(meta["feature_mean"]),
        feature_std=tuple(meta["feature_std"]),
        **{k: payload[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")},
    )
