"""A saved model as a deployable scorer: raw table in, predictions out.

A model directory holds `state_dict.pt` + `spec.json` (tasks/models/factory.py) and `input.json`: the
raw columns the model takes, their dtypes, the standardisation fitted on the training split and
how to read the output (class labels, or the regression target's scale). When a table's
preprocessing was fitted, `preprocessing.json` lies beside them (tasks/data/preprocess.py) and is
applied first; standardisation is always last, as in `tasks.data.datasets.prepare`. A model trained on an
image folder or a dataset function has an image or tensor `preprocessing.json` instead: it takes
raw values as columns (`pixel_i` 0-255, or `x_i`), and `features` reshapes them to the model's
`(rows, *sample_shape)`; `images_to_score` decodes a folder to score into those columns, a chunk at a time.

`Scorer.check` turns a frame that does not fit into one `InputError` line; `Scorer.predict` is
what the MLflow pyfunc (tasks/serving/pyfunc_model.py) and `energy-loop predict` both run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict

from registry import keys
from tasks.common.errors import InputError
from tasks.compression import onnx_runtime
from tasks.data.datasets import CachedData
from tasks.meters.base import EnergyMeter
from tasks.models import factory as models

INPUT_FILE = "input.json"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # the MLflow pyfunc, as models-from-code
PREPROCESSING_FILE = "preprocessing.json"
PREDICTION = "prediction"


class InputSpec(BaseModel):
    """How to read a model's output, and a few raw rows as its input example. The raw columns, their
    dtypes and what turns them into the model's input are in `preprocessing.json` beside it."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "regression"]
    class_labels: list[str] = []
    target_mean: float = 0.0
    target_std: float = 1.0
    example: list[dict[str, Any]] = []  # a few raw test rows as the table had them: the MLflow input example


def input_spec(data: CachedData) -> InputSpec:
    """The output contract of a model trained on `data`, with raw rows of its table as the input example."""
    return InputSpec(
        task=data.task,
        class_labels=list(data.class_labels),
        target_mean=data.target_mean,
        target_std=data.target_std,
        example=[dict(row) for row in data.raw_example],
    )


def save_input_spec(spec: InputSpec, model_dir: Path) -> None:
    (model_dir / INPUT_FILE).write_text(spec.model_dump_json(indent=2))


NUMBER_DTYPES = ("double", "float", "long", "integer", "boolean", "bool")  # MLflow's names (and pandas' bool)


def _kind(dtype: str) -> str:
    """The dtype family a column must belong to: numbers (ints, floats, bools) or anything."""
    return (
        "number"
        if dtype in NUMBER_DTYPES or dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))
        else "any"
    )


class Scorer:
    """A model at its saved precision, with its input contract and the table preprocessing it was trained behind."""

    def __init__(self, model_dir: Path) -> None:
        from tasks.data.datasets import preprocessor_from_dict

        model, self.spec = models.load(model_dir)
        self.runtime = onnx_runtime.runtime_of(model_dir)
        self.model = onnx_runtime.predictor(
            model_dir, model, self.spec
        )  # an onnxruntime session when the version was measured under one
        self.input = InputSpec.model_validate(json.loads((model_dir / INPUT_FILE).read_text()))
        # A table's fitted preprocessing, or an image model's size/channels/standardisation (tasks/data/images.py),
        # or a dataset function's sample shape (tasks/data/user_data.py): each maps raw columns to the model's input.
        self.preprocessor = preprocessor_from_dict(json.loads((model_dir / PREPROCESSING_FILE).read_text()))
        self.sample_shape: tuple[int, ...] = tuple(getattr(self.preprocessor, "sample_shape", ()))
        dtypes = self.preprocessor.input_dtypes
        self.columns: dict[str, str] = {str(c): str(dtypes[c]) for c in self.preprocessor.input_columns}

    @property
    def output_columns(self) -> list[str]:
        if self.input.task == "regression":
            return [PREDICTION]
        return [PREDICTION, *(f"probability_{label}" for label in self.input.class_labels)]

    def example(self) -> pd.DataFrame:
        """Raw rows in the training table's dtypes (the MLflow input example)."""
        frame = pd.DataFrame.from_records(self.input.example, columns=list(self.columns))
        for column, dtype in self.columns.items():
            if dtype in ("long", "integer") and frame[column].notna().all():
                frame[column] = frame[column].astype("int64")
            elif dtype in ("boolean", "bool") and frame[column].notna().all():
                frame[column] = frame[column].astype(bool)
        return frame

    def check(self, frame: pd.DataFrame, where: str = "input") -> None:
        """Raise one `InputError` line for a frame the model cannot score."""
        if len(frame) == 0:
            raise InputError("rows", 0, "at least one row to score", where)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise InputError(
                "columns",
                missing[:10],
                f"every input column of the model: missing {len(missing)} of {list(self.columns)[:10]}",
                where,
            )
        extra = [str(c) for c in frame.columns if c not in self.columns]
        if extra:
            raise InputError(
                "columns",
                extra[:10],
                f"only the model's input columns {list(self.columns)[:10]} (remove the extra ones)",
                where,
            )
        for column, dtype in self.columns.items():
            series = frame[column]
            if _kind(dtype) == "number" and not (
                pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
            ):
                sample = series.dropna().iloc[0] if series.notna().any() else None
                raise InputError(
                    f"column {column!r}",
                    sample,
                    f"numbers (dtype {dtype} when trained), got dtype {series.dtype}",
                    where,
                )

    def features(self, frame: pd.DataFrame) -> torch.Tensor:
        """The float32 tensor the model takes: the table preprocessing (imputation, encoding, standardisation),
        or raw pixel / value columns scaled and reshaped to `(rows, *sample_shape)`."""
        x = torch.from_numpy(np.asarray(self.preprocessor.transform(frame), dtype=np.float32))
        return x.reshape(len(x), *self.sample_shape) if self.sample_shape else x

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's float32 output (logits or the standardised target) for standardised features."""
        with torch.no_grad():
            return self.model(x)

    def to_frame(self, out: torch.Tensor) -> pd.DataFrame:
        """Class label and class probabilities, or the regression target in its own units."""
        if self.input.task == "regression":
            values = out[:, 0].double().numpy() * self.input.target_std + self.input.target_mean
            return pd.DataFrame({PREDICTION: values})
        probabilities = torch.softmax(out.float(), dim=1).numpy()
        labels = np.asarray(self.input.class_labels, dtype=object)
        frame = pd.DataFrame(probabilities, columns=self.output_columns[1:])
        frame.insert(0, PREDICTION, labels[probabilities.argmax(axis=1)].astype(str))
        return frame

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.to_frame(self.outputs(self.features(frame)))


def mlflow_serving(model_dir: str | None) -> Any:
    """How the registry logs a saved model as a standard MLflow model (registry.energy.Serving), or None without one."""
    from registry.energy import Serving

    if not model_dir:
        return None
    scorer = Scorer(Path(model_dir))
    example = scorer.example()
    if scorer.runtime.runtime == "onnxruntime":
        return Serving(
            PYFUNC_CODE,
            example,
            scorer.predict(example),
            ("onnx", "onnxruntime"),
            Path(model_dir) / onnx_runtime.ONNX_FILE,
        )
    return Serving(PYFUNC_CODE, example, scorer.predict(example))


TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file to score; one `InputError` line when it cannot be read or is empty."""
    where = f"input {path}"
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError("input", str(path), "a .csv or .parquet file, or a folder of images for an image model")
    if not path.is_file():
        raise InputError("input", str(path), "an existing .csv or .parquet file")
    if path.stat().st_size == 0:
        raise InputError("rows", 0, "at least one row to score (the file is empty)", where)
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types; one line for the user is what matters
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError("file", path.name, f"a readable CSV/Parquet table ({first})", where) from None
    if len(frame) == 0:
        raise InputError("rows", 0, "at least one row to score (the file has a header only)", where)
    return frame


@dataclass(frozen=True)
class ToScore:
    """`rows` rows to score, as tables that `chunks` reads one at a time (an image folder is decoded chunk by chunk,
    never whole), and the file each row came from (an image folder's; None for a table)."""

    rows: int
    chunks: Callable[[], Iterator[pd.DataFrame]]
    files: list[str] | None = None


# Images decoded per chunk when scoring a folder: bounded memory, and each energy window still spans many batches.
IMAGE_CHUNK_ROWS = 4096


def table_to_score(frame: pd.DataFrame) -> ToScore:
    """A table already read: one chunk, measured in one window."""
    return ToScore(rows=len(frame), chunks=lambda: iter([frame]))


def images_to_score(source: Path, scorer: Scorer, batch_size: int) -> ToScore:
    """An image folder to score, decoded as the model was trained (colour mode, resized to its recorded size)
    into its raw pixel columns, a chunk at a time; one line on bad input (a non-image file before any decoding)."""
    from tasks.data.images import ImagePreprocessor, files_to_score, pixel_frames

    pre = scorer.preprocessor
    if not isinstance(pre, ImagePreprocessor):
        raise InputError(
            "input", str(source), "a .csv or .parquet file: this version was trained on a table, not on images"
        )
    files = files_to_score(source)
    rows = max(batch_size, IMAGE_CHUNK_ROWS // batch_size * batch_size)  # whole batches per chunk
    return ToScore(
        rows=len(files),
        chunks=lambda: pixel_frames(files, pre, source, rows),
        files=[str(f.relative_to(source)) for f in files],
    )


FILE_COLUMN = "file"


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError("output", str(path), "a path ending in .csv or .parquet")
    if not path.parent.is_dir():
        raise InputError("output", str(path), "a file in an existing folder")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Written whole or not at all: to a temporary file beside it, then renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)


@dataclass(frozen=True)
class ScoreReport:
    """Energy of scoring a table for real, with its provenance."""

    rows: int
    batch_size: int
    energy_j: float
    duration_s: float
    source: str
    estimated: bool

    @property
    def energy_j_per_1k(self) -> float:
        return self.energy_j / self.rows * 1000


def meter_setting(version_tags: dict[str, str]) -> tuple[str, float]:
    """The meter the loop measured a version with (name, fixed power in W), from its tags."""
    name = version_tags.get(keys.METER) or "auto"
    source = version_tags.get(keys.ENERGY_SOURCE, "")
    power_w = 10.0
    if source.startswith("fixed-power:") and source.endswith("W"):
        try:
            power_w = float(source[len("fixed-power:") : -1])
        except ValueError:
            pass
    return name, power_w


def score(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    source: ToScore,
    batch_size: int,
    meter: EnergyMeter,
    on_batch: Callable[[int], None] | None = None,
    check: Callable[[pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, ScoreReport]:
    """Predictions for every row, batch by batch. Each chunk is read (and `check`ed) outside the energy windows,
    then scored inside one: the report sums the windows, so reading files and decoding images are not counted."""
    parts, energy_j, duration_s, done = [], 0.0, 0.0, 0
    m = None
    for chunk in source.chunks():
        if check is not None:
            check(chunk)
        with meter.window("predict") as window:
            for start in range(0, len(chunk), batch_size):
                parts.append(predict(chunk.iloc[start : start + batch_size]))
                if on_batch is not None:
                    on_batch(done + min(start + batch_size, len(chunk)))
        done += len(chunk)
        m = window.measurement
        energy_j, duration_s = energy_j + m.energy_j, duration_s + m.duration_s
    if m is None:
        raise InputError("rows", 0, "at least one row to score")
    report = ScoreReport(done, batch_size, energy_j, duration_s, m.source, m.estimated)
    return pd.concat(parts, ignore_index=True), report
