"""Load a dataset, validate and preprocess it, split it deterministically and pre-cache it as tensors.

Built in: `mnist1d` (generated offline by the mnist1d package) and sklearn's bundled `digits`,
`iris`, `wine`, `breast_cancer` (classification) and `diabetes` (regression); any CSV or Parquet
file with a named target column. Every table goes through `tasks.data.preprocess`: checked for data
errors (one line each, before any flow starts), imputed, encoded and standardised with
training-split statistics. The fitted preprocessing travels in the cache and is written beside
every model as `preprocessing.json`; the cached file is read with `weights_only=True`.

Beyond tables: an image folder (`DIR/<class>/*.png|jpg`, tasks/data/images.py) and a user's dataset
function (`PKG.MODULE:FUNCTION`, tasks/data/user_data.py). Their samples keep their shape in the cache,
`(N, C, H, W)` or `(N, T, F)`, and `CachedData.input_shape` is what a model factory is called with;
a table's stay `(N, F)`. Their `preprocessing.json` is an image or tensor preprocessor, which maps
raw values as table columns (`pixel_i`, `x_i`) to the model's input at prediction time.

An image folder may instead be streamed (`--image-cache stream`, or `auto` when it would not fit in
memory): its cache holds the file list, labels, split indices and the fitted preprocessing, and each
split is a `tasks.data.images.StreamedSplit` decoded on the fly; `outputs` runs a model over either kind.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from tasks.common.plugins import is_entry_point, resolve_callable
from tasks.data import sources
from tasks.data.preprocess import FILE_NAME, MIN_ROWS, TablePreprocessor, check_table, class_labels_of, infer_task
from thresholds.errors import InputError

if TYPE_CHECKING:
    from tasks.data.images import StreamedSplit

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
BUILTIN_DATASETS = ("mnist1d", *SKLEARN_DATASETS)
FILE_SUFFIXES = (".csv", ".parquet", ".pq")
TaskType = Literal["auto", "classification", "regression"]
_CACHE_VERSION = 5  # 5: the meta's `source_json`

Batch = tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
"""A training step's batch in the form of the dataset's items: `(x, targets, *extras)` or
`{"x": x, "y": targets, **extras}`."""


@dataclass(frozen=True)
class CachedData:
    """Pre-cached tensors of one split dataset plus the metadata needed to build a model. The inputs of a streamed
    image folder are `StreamedSplit`s (decoded on the fly, see tasks/data/images.py); the targets are always tensors."""

    name: str
    task: Literal["classification", "regression"]
    n_features: int
    n_classes: int  # 1 for regression
    x_train: torch.Tensor | StreamedSplit
    y_train: torch.Tensor
    x_val: torch.Tensor | StreamedSplit
    y_val: torch.Tensor
    x_test: torch.Tensor | StreamedSplit
    y_test: torch.Tensor
    class_labels: tuple[str, ...]
    target_mean: float
    target_std: float
    preprocessing: dict[str, Any] = field(default_factory=dict)  # TablePreprocessor.to_dict()
    notes: tuple[str, ...] = ()  # what preparing the data did (dropped rows/columns, imputation, encoding)
    raw_example: tuple[dict[str, Any], ...] = ()  # a few raw rows as the table had them (the serving input example)
    sample_shape: tuple[
        int, ...
    ] = ()  # one sample's shape without the batch dimension; () means a table row (n_features,)
    extras: dict[str, list[torch.Tensor]] = field(
        default_factory=dict
    )  # split -> a dataset function's per-sample extras, in item order
    extra_keys: tuple[str, ...] | None = (
        None  # the extras' names when its items were mappings; None: tuples (x, y, *extras)
    )
    source: dict[str, Any] = field(
        default_factory=dict
    )  # a table read from a file, a parts folder or SQL: `sources.TableRead.record()` (source, rows, digest)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What a model factory is called with: `(F,)` for tables, `(C, H, W)` for images, `(T, F)` for sequences."""
        return self.sample_shape or (self.n_features,)

    @property
    def out_features(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    def batch(
        self,
        split: str,
        targets: torch.Tensor,
        rows: torch.Tensor | slice = slice(None),
        inputs: torch.Tensor | None = None,
    ) -> Batch:
        """`rows` of a split (all by default) as a training step takes them, in the form of the dataset's items:
        `(x, targets, *extras)`, or `{"x": x, "y": targets, **extras}` for a dataset function's mappings.
        `targets`: the whole split's, as the loss sees them (tasks/models/train.py `loss_targets`); `inputs`: those
        rows of x when already at hand (a streamed split's decoded batch), else they are indexed here."""
        x = getattr(self, f"x_{split}")[rows] if inputs is None else inputs
        extras = [e[rows] for e in self.extras.get(split, [])]
        if self.extra_keys is None:
            return (x, targets[rows], *extras)
        return {"x": x, "y": targets[rows], **dict(zip(self.extra_keys, extras, strict=True))}

    def write_preprocessing(self, directory: Path) -> Path:
        """`preprocessing.json` beside a model: what turns a raw table row into this model's input."""
        path = directory / FILE_NAME
        path.write_text(json.dumps(self.preprocessing, indent=2))
        return path


def outputs(model: torch.nn.Module, x: torch.Tensor | StreamedSplit, chunk: int = 256) -> torch.Tensor:
    """`model`'s outputs on a whole split: one call on a tensor, `chunk` inputs at a time on a streamed split."""
    return model(x) if isinstance(x, torch.Tensor) else torch.cat([model(inputs) for inputs in x.chunks(chunk)])


def _builtin_frame(name: str, samples: int | None, seed: int) -> tuple[Any, str, TaskType]:
    """(frame, target column, task) of a built-in dataset."""
    import pandas as pd

    if name in SKLEARN_DATASETS:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame = bunch.frame
        task: TaskType = "regression" if name == "diabetes" else "classification"
        if task == "classification" and name != "digits":
            frame["target"] = np.asarray(bunch.target_names)[bunch.target.to_numpy()]
        return (frame.iloc[:samples] if samples is not None else frame), "target", task
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples if samples is not None else 5000
    args.seed = seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = np.concatenate([data["y"], data["y_test"]])
    return frame, "label", "classification"


def _regression_target(series: Any, target: str, where: str) -> np.ndarray:
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise InputError(f"target column {target!r}", series.iloc[0], "numbers for a regression target", where)
    values = series.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"target column {target!r}", float(values[~np.isfinite(values)][0]), "finite numbers", where)
    return values


class ImageOptions(NamedTuple):
    """How an image folder is read: resized to `size` (height, width; None keeps the first image's), cached in
    `cache` (memory, stream, auto), where `auto` lets it take `memory_budget_bytes` (default
    `images.memory_budget_bytes()`)."""

    size: tuple[int, int] | None = None
    cache: str = "auto"
    memory_budget_bytes: int | None = None


_DEFAULT_FOLDER = ImageOptions()


class Splitting(NamedTuple):
    """How the rows are split: at random from `seed` (stratified for classes), `val_fraction` and `test_fraction` of
    them held out for validation and test."""

    seed: int
    val_fraction: float
    test_fraction: float


def _split(y: np.ndarray, task: str, how: Splitting) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    seed, val_fraction, test_fraction = how
    index = np.arange(len(y))
    stratify = y if task == "classification" and np.bincount(y).min() >= 3 else None
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    stratify_rest = y[rest] if stratify is not None else None
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=stratify_rest
    )
    return train, val, test


def resolve_source(dataset: str) -> tuple[str, Path | None]:
    """Return (display name, file or folder path, or None for a built-in, a SQL source or a dataset function); raise
    on unknown names. Reads no data."""
    if dataset in BUILTIN_DATASETS:
        return dataset, None
    if sources.is_sql(dataset):
        return sources.parse_sql(dataset).name, None
        return dataset, None
    if is_entry_point(dataset):
        return dataset.partition(":")[0].rsplit(".", 1)[
            -1
        ], None  # the module's name: `examples.mnist1d_sequence:load` -> mnist1d_sequence
    path = Path(dataset)
    if path.is_dir():
        return path.resolve().name, path
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise InputError("dataset", dataset, "an existing .csv or .parquet file")
        return path.stem, path
    raise InputError(
        "dataset",
        dataset,
        f"one of {', '.join(BUILTIN_DATASETS)}, a .csv/.parquet file, a folder of table parts, an image folder (one "
        "subfolder per class), a SQL URL (postgresql://user@host/db?table=NAME) or PKG.MODULE:FUNCTION",
    )


def _fingerprint(dataset: str, path: Path | None) -> list[object]:
    """What invalidates the cache: a file's size and time, every file of a folder, a dataset function's module file."""
    if path is not None and path.is_dir():
        return [
            str(path.resolve()),
            *(
                (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(path.rglob("*"))
                if p.is_file()
            ),
        ]
    if path is not None:
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    if is_entry_point(dataset):
        import sys

        resolve_callable(
            dataset, "--dataset"
        )  # imports the module (one line if it does not import) from the working directory
        origin = getattr(sys.modules[dataset.partition(":")[0]], "__file__", None)
        return (
            [origin, Path(origin).stat().st_size, Path(origin).stat().st_mtime_ns]
            if origin and Path(origin).is_file()
            else []
        )
    return []


def prepare(
    dataset: str,
    cache_dir: Path,
    target: str | None = None,
    samples: int | None = None,
    task: TaskType = "auto",
    seed: int = 0,
    fractions: tuple[float, float] = (0.15, 0.2),
    folder: ImageOptions = _DEFAULT_FOLDER,
) -> Path:
    """Load, validate, preprocess, split and standardise once; return the path of the cached tensor file.

    Every data error is an `InputError` raised here, so a CLI calls this before starting a flow. `fractions` are
    the validation and test fractions; `folder` concerns image folders only (its memory budget is not part of the
    cache key)."""
    val_fraction, test_fraction = fractions
    image_size, image_cache, memory_budget_bytes = folder
    if samples is not None and samples < MIN_ROWS:
        raise InputError("samples", samples, f"an integer >= {MIN_ROWS}")
    name, path = resolve_source(dataset)
    table = None  # read now, every run: the cache is keyed on what it holds, not on where it lies
    if sources.is_sql(dataset):
        table = sources.read_sql(dataset)
    elif path is not None and sources.is_parts_folder(path):
        table = sources.read_parts(path)
    key_parts = [
        _CACHE_VERSION,
        dataset,
        target,
        samples,
        task,
        seed,
        val_fraction,
        test_fraction,
        image_size,
        *(_fingerprint(dataset, path) if table is None else [table.digest]),
    ]
    if path is not None and table is None and path.is_dir():
        key_parts.append(image_cache)
    key = hashlib.sha256(json.dumps(key_parts, default=str).encode()).hexdigest()[:16]
    cache_path = cache_dir / f"{name}-{key}.pt"
    if cache_path.exists():
        return cache_path
    splitting = Splitting(seed, val_fraction, test_fraction)
    if is_entry_point(dataset):
        payload = _function_payload(dataset, name, samples, seed)
    elif path is not None and table is None and path.is_dir():
        payload = _image_payload(path, name, samples, splitting, image_size, image_cache, memory_budget_bytes)
    else:
        if table is None and path is not None:
            frame = sources.read_table(path)
            table = sources.TableRead(frame, str(path.resolve()), "local", name, sources.content_digest(frame))
        payload = _table_payload(dataset, name, table, target, samples, task, splitting)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(cache_path)  # atomic: a crash never leaves a half-written cache file
    return cache_path


def _table_payload(
    dataset: str,
    name: str,
    table: sources.TableRead | None,
    target: str | None,
    samples: int | None,
    task: TaskType,
    splitting: Splitting,
) -> dict[str, Any]:
    where = f"dataset {sources.masked(dataset)}"
    if table is None:
        frame, target, task = _builtin_frame(name, samples, splitting.seed)
    else:
        frame = table.frame if samples is None else table.frame.iloc[:samples]
    frame, notes = check_table(frame, target, where)
    assert target is not None  # check_table refuses a table without one
    kind = infer_task(frame[target], task)
    labels = class_labels_of(frame[target]) if kind == "classification" else []
    if kind == "classification" and len(labels) < 2:
        raise InputError("target", target, "at least 2 distinct classes", where)
    if kind == "regression":
        values = _regression_target(frame[target], target, where)
        train, val, test = _split(values, kind, splitting)
    else:
        index = {label: i for i, label in enumerate(labels)}
        train, val, test = _split(np.array([index[str(v)] for v in frame[target]]), kind, splitting)
    pre = TablePreprocessor.fit(
        frame.iloc[np.sort(train)], target, task=kind, class_labels=labels
    )  # in table order: a row number still rises
    pre.notes[:0] = notes
    x, y = pre.transform(frame), pre.encode_target(frame[target])
    y_dtype = torch.int64 if kind == "classification" else torch.float32
    return {
        "meta": {
            "name": name,
            "task": kind,
            "n_features": int(x.shape[1]),
            "n_classes": len(labels) if kind == "classification" else 1,
            "class_labels": list(labels),
            "target_mean": pre.target_mean,
            "target_std": pre.target_std,
            "preprocessing_json": json.dumps(pre.to_dict()),
            # A few raw test rows (every column but the target): a deployed model's input example.
            "raw_example_json": frame.drop(columns=[target])
            .iloc[np.sort(test)[:5]]
            .to_json(orient="records", date_format="iso"),
            "source_json": json.dumps(table.record() if table is not None else {}),
        },
        **{
            f"x_{s}": torch.tensor(x[i], dtype=torch.float32)
            for s, i in (("train", train), ("val", val), ("test", test))
        },
        **{f"y_{s}": torch.tensor(y[i], dtype=y_dtype) for s, i in (("train", train), ("val", val), ("test", test))},
    }


def _shaped_meta(
    name: str, task: str, shape: tuple[int, ...], labels: list[str], pre: Any, example: torch.Tensor, columns: list[str]
) -> dict[str, Any]:
    """The cache's metadata for image and tensor data: samples keep their shape; the example is raw values as table
    rows."""
    rows = [
        dict(zip(columns, (float(v) for v in row), strict=True)) for row in example.reshape(len(example), -1).tolist()
    ]
    return {
        "name": name,
        "task": task,
        "n_features": int(np.prod(shape)),
        "n_classes": len(labels) if task == "classification" else 1,
        "class_labels": list(labels),
        "target_mean": getattr(pre, "target_mean", 0.0),
        "target_std": getattr(pre, "target_std", 1.0),
        "preprocessing_json": json.dumps(pre.to_dict()),
        "raw_example_json": json.dumps(rows),
        "sample_shape": list(shape),
    }


def _image_payload(
    root: Path,
    name: str,
    samples: int | None,
    splitting: Splitting,
    image_size: tuple[int, int] | None,
    image_cache: str = "auto",
    memory_budget_bytes: int | None = None,
) -> dict[str, Any]:
    """An image folder decoded once (tasks/data/images.py), split stratified, scaled and standardised with the training
    split's statistics; cached as tensors, or (streamed) as its file list, split indices and labels."""
    from tasks.data import images

    folder = images.scan(root, image_size)
    files, labels = folder.files, np.asarray(folder.labels)
    notes = list(folder.notes)
    if len(files) < MIN_ROWS:
        raise InputError("images", len(files), f"at least {MIN_ROWS} images in all", f"dataset {root}")
    if samples is not None and samples < len(files):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(files)),
            train_size=samples,
            random_state=splitting.seed,
            stratify=labels if np.bincount(labels).min() >= 2 else None,
        )
        keep = np.sort(keep)
        files, labels = [files[i] for i in keep], labels[keep]
        notes.append(f"--samples {samples}: a stratified subset of the {len(folder.files)} images")
    train, val, test = _split(labels, "classification", splitting)
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    y = torch.from_numpy(labels.astype(np.int64))
    shape = (folder.channels, folder.height, folder.width)
    mode, why = images.choose_cache(image_cache, len(files), shape, memory_budget_bytes)
    notes += [why] if why else []
    if mode == "stream":
        pre = images.ImagePreprocessor.fit_streamed(files, train, shape, root, folder.class_names, notes)
        example = images.decode([files[i] for i in test[:5]], *shape, root)
        return {
            "meta": {
                **_shaped_meta(name, "classification", shape, folder.class_names, pre, example, pre.input_columns),
                "image_files_json": json.dumps(
                    {"root": str(root.resolve()), "files": [str(f.relative_to(root)) for f in files]}
                ),
            },
            **{
                f"i_{s}": torch.from_numpy(i.astype(np.int64))
                for s, i in (("train", train), ("val", val), ("test", test))
            },
            **{f"y_{s}": y[i] for s, i in (("train", train), ("val", val), ("test", test))},
        }
    pixels = images.decode(files, *shape, root)
    pre = images.ImagePreprocessor.fit(pixels[train], folder.class_names, notes)
    return {
        "meta": _shaped_meta(
            name, "classification", shape, folder.class_names, pre, pixels[test[:5]], pre.input_columns
        ),
        **{f"x_{s}": pre.scale(pixels[i]) for s, i in (("train", train), ("val", val), ("test", test))},
        **{f"y_{s}": y[i] for s, i in (("train", train), ("val", val), ("test", test))},
    }


def _function_payload(dataset: str, name: str, samples: int | None, seed: int) -> dict[str, Any]:
    """A user's dataset function (tasks/data/user_data.py) as tensors; a regression target standardised on the training
    split."""
    from tasks.data import user_data

    splits = user_data.load(dataset, samples, seed)
    x, y = splits.x, dict(splits.y)
    shape = tuple(x["train"].shape[1:])
    pre = user_data.TensorPreprocessor(shape, splits.task, splits.class_labels, notes=list(splits.notes))
    if splits.task == "regression":
        pre.target_mean, pre.target_std = float(y["train"].double().mean()), float(y["train"].double().std()) or 1.0
        y = {s: ((t.double() - pre.target_mean) / pre.target_std).float() for s, t in y.items()}
    return {
        "meta": {
            **_shaped_meta(name, splits.task, shape, splits.class_labels, pre, x["test"][:5], pre.input_columns),
            "extra_keys": splits.extra_keys,
        },
        **{f"x_{s}": x[s] for s in ("train", "val", "test")},
        **{f"y_{s}": y[s] for s in ("train", "val", "test")},
        **{
            f"extras_{s}": splits.extras[s] for s in ("train", "val", "test")
        },  # lists of tensors: weights_only reads them
    }


def preprocessor_from_dict(d: dict[str, Any]) -> Any:
    """The preprocessing a model was trained behind, from its `preprocessing.json`: table, image or tensor."""
    from tasks.data import images, user_data

    fmt = d.get("format")
    if fmt == images.FORMAT:
        return images.ImagePreprocessor.from_dict(d)
    if fmt == user_data.FORMAT:
        return user_data.TensorPreprocessor.from_dict(d)
    return TablePreprocessor.from_dict(d)


@functools.lru_cache(maxsize=8)
def load_cached(cache_path: str) -> CachedData:
    """Read a cache file once per process; later iterations reuse the tensors in memory."""
    payload = torch.load(cache_path, weights_only=True)
    meta = payload["meta"]
    if "image_files_json" in meta:  # a streamed image folder: each split decoded on the fly
        from tasks.data import images

        listed = json.loads(meta["image_files_json"])
        root = Path(listed["root"])
        pre = images.ImagePreprocessor.from_dict(json.loads(meta["preprocessing_json"]))
        for s in ("train", "val", "test"):
            payload[f"x_{s}"] = images.StreamedSplit(
                [root / listed["files"][i] for i in payload[f"i_{s}"].tolist()], root, pre
            )
    return CachedData(
        name=meta["name"],
        task=meta["task"],
        n_features=meta["n_features"],
        n_classes=meta["n_classes"],
        class_labels=tuple(meta["class_labels"]),
        target_mean=meta["target_mean"],
        target_std=meta["target_std"],
        preprocessing=json.loads(meta["preprocessing_json"]),
        notes=tuple(json.loads(meta["preprocessing_json"])["notes"]),
        raw_example=tuple(json.loads(meta.get("raw_example_json", "[]"))),
        sample_shape=tuple(meta.get("sample_shape", ())),
        extras={s: list(payload[f"extras_{s}"]) for s in ("train", "val", "test") if f"extras_{s}" in payload},
        extra_keys=None if meta.get("extra_keys") is None else tuple(meta["extra_keys"]),
        source=json.loads(meta.get("source_json", "{}")),
        **{k: payload[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")},
    )
