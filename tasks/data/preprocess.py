"""Turn a real-world table into model inputs: validate, impute, encode, drop, standardise.

`TablePreprocessor.fit` learns everything from the rows it is given (the training split) and
`transform` applies exactly that to any frame, at training or prediction time. The fitted state
is plain JSON (`to_dict` / `from_dict`, stored as `preprocessing.json` beside every model): no
pickle, so a model's inputs can be rebuilt and audited anywhere.

Rules (constants below):
- numeric columns: missing values become the training median; booleans become 0/1;
  datetimes (or ISO date text) become seconds since the epoch;
- text / categorical columns: missing values become the most frequent level; one-hot up to
  `ONE_HOT_MAX_LEVELS` levels, ordinal beyond it (levels ranked by training frequency);
- constant columns and ID-like columns (text with at least `ID_DISTINCT_SHARE` of its values distinct,
  such as a name per row, or integers all distinct and named like an ID or rising row after row, such
  as a row number) are dropped, with a note;
- every output column is standardised with the training mean and standard deviation.

Bad tables are refused by `check_table` with one `InputError` line: no target column, a target
missing in every row, a feature column with no value at all, a mostly numeric column with stray
text (`'?'` in an age column), more than `MAX_CATEGORY_LEVELS` levels in a text column whose
values repeat (nearly all distinct is an ID: dropped).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from thresholds.energy.request import MIN_ROWS  # the fewest rows (or images, or samples) a dataset may have
from thresholds.errors import InputError

FORMAT = "energy-loop.table-preprocessing"
FORMAT_VERSION = 1
FILE_NAME = "preprocessing.json"
MAX_AUTO_CLASSES = 50  # an integer target with more distinct values is read as regression
ONE_HOT_MAX_LEVELS = 16  # more levels than this: one ordinal column instead of one column per level
MAX_CATEGORY_LEVELS = 1_000  # more than this in a text column is refused (unless named like an ID, or all distinct)
# Text this distinct is a label per row (a name, a free-text note), not a category: at most one row in ten shares a
# value.
ID_DISTINCT_SHARE = 0.9
NUMERIC_SHARE_WITH_STRAY_TEXT = 0.9  # a text column this numeric is a number column with a typo
ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key|index)$|^unnamed: ?\d+$|[a-z]Id$|^id[_\s.-]", re.IGNORECASE)
Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "boolean", "datetime", "onehot", "ordinal"]


def _distinct_text(n_levels: int, n_present: int) -> bool:
    """Whether a text column with `n_levels` distinct values in `n_present` cells is a label per row (ID-like)."""
    return n_present > 1 and n_levels >= ID_DISTINCT_SHARE * n_present


def _looks_like_id(name: str) -> bool:
    return bool(ID_NAME.search(str(name)))


def _shown(values: list[str], limit: int = 6) -> str:
    head = ", ".join(repr(v) for v in values[:limit])
    return head + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _is_bool_column(series: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(series):
        return True
    values = series.dropna()
    return series.dtype == object and len(values) > 0 and all(isinstance(v, bool | np.bool_) for v in values)


def _mlflow_type(series: pd.Series) -> str:
    """The column's type in MLflow schema terms (what a model signature would declare)."""
    if _is_bool_column(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_integer_dtype(series):
        return "long"
    if pd.api.types.is_numeric_dtype(series):
        return "double"
    return "string"


def _stray_text(series: pd.Series) -> tuple[int, object] | None:
    """(row, value) of the first non-number in a text column that is otherwise numbers, else None."""
    present = series.dropna()
    if len(present) == 0:
        return None
    parsed = pd.to_numeric(present, errors="coerce")
    numbers = int(parsed.notna().sum())
    if numbers == len(present) or numbers < NUMERIC_SHARE_WITH_STRAY_TEXT * len(present):
        return None
    bad = parsed.index[parsed.isna()][0]
    return int(series.index.get_loc(bad)), present.loc[bad]


def _is_date_text(present: pd.Series) -> bool:
    """Text in which every value is an ISO date or timestamp ('2012-01-01', '2012-01-01T10:00')."""
    textual = pd.api.types.is_string_dtype(present) or pd.api.types.is_object_dtype(present)
    if (
        present.empty
        or not textual
        or not all(isinstance(v, str) and ("-" in v or "/" in v) for v in present.iloc[:50])
    ):
        return False
    return bool(pd.to_datetime(present, format="ISO8601", errors="coerce", utc=True).notna().all())


def _seconds(series: pd.Series) -> pd.Series:
    """Datetimes, or ISO date text, as seconds since 1970 UTC (NaN where missing or unreadable)."""
    stamps = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype(np.float64)


def _as_numbers(series: pd.Series) -> pd.Series:
    """Numbers as float64 (NaN where missing or not a number)."""
    return pd.to_numeric(series, errors="coerce").astype(np.float64)


@functools.lru_cache(maxsize=64)
def _numbers_already(dtype: Any) -> bool:
    """Whether a column of this dtype holds numbers as numbers (not text, not booleans): nothing to convert or
    refuse."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _levels(series: pd.Series) -> pd.Series:
    """Text levels as strings (missing stays missing), so JSON round trips keep them equal."""
    return series.map(lambda v: v if pd.isna(v) else str(v))


def check_table(frame: pd.DataFrame, target: str | None, where: str = "") -> tuple[pd.DataFrame, list[str]]:
    """The rows that have a target, and notes; raises one-line `InputError`s for tables no model can use."""
    if frame.shape[1] == 0 or len(frame) == 0:
        raise InputError(
            "rows", len(frame), f"a table with a header row and at least {MIN_ROWS} rows (the file has no data)", where
        )
    if target is None:
        raise InputError(
            "target", None, f"the name of the target column (--target), one of {list(frame.columns)[:10]}", where
        )
    if target not in frame.columns:
        raise InputError("target", target, f"one of the columns {list(frame.columns)[:10]}", where)
    if frame.columns.duplicated().any():
        duplicate = str(frame.columns[frame.columns.duplicated()][0])
        raise InputError("column", duplicate, "unique column names", where)
    notes: list[str] = []
    missing_target = frame[target].isna()
    if missing_target.all():
        raise InputError(
            f"target column {target!r}",
            f"missing in all {len(frame)} rows",
            f"a value in at least {MIN_ROWS} rows",
            where,
        )
    if missing_target.any():
        notes.append(f"dropped {int(missing_target.sum())} of {len(frame)} rows whose target {target!r} is missing")
        frame = frame.loc[~missing_target].reset_index(drop=True)
    if len(frame) < MIN_ROWS:
        raise InputError("rows", len(frame), f"at least {MIN_ROWS} rows with a target value", where)
    features = [c for c in frame.columns if c != target]
    if not features:
        raise InputError("columns", list(frame.columns), "at least one feature column besides the target", where)
    for column in features:
        series = frame[column]
        if series.isna().all():
            raise InputError(
                f"column {column!r}",
                f"missing in all {len(series)} rows",
                "at least one value (remove the empty column)",
                where,
            )
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64)
            infinite = np.isinf(values)
            if infinite.any():
                row = int(np.argmax(infinite))
                raise InputError(
                    f"column {column!r} row {row}",
                    float(values[row]),
                    "a finite number or an empty cell for a missing value",
                    where,
                )
            continue
        if _is_bool_column(series) or pd.api.types.is_datetime64_any_dtype(series) or _is_date_text(series.dropna()):
            continue
        try:
            levels = _levels(series)
            n_levels = int(levels.nunique())
        except TypeError:  # lists or dicts inside a Parquet cell
            raise InputError(
                f"column {column!r}",
                type(series.dropna().iloc[0]).__name__,
                "numbers, booleans or text in every cell",
                where,
            ) from None
        stray = _stray_text(levels)
        if stray is not None:
            row, value = stray
            raise InputError(
                f"column {column!r} row {row}",
                value,
                "a number like the rest of the column (leave the cell empty if it is missing)",
                where,
            )
        if (
            n_levels > MAX_CATEGORY_LEVELS
            and not _distinct_text(n_levels, int(series.notna().sum()))
            and not _looks_like_id(column)
        ):
            raise InputError(
                f"column {column!r}",
                f"{n_levels} distinct values",
                f"at most {MAX_CATEGORY_LEVELS} categories (remove the column, or name it like an ID, e.g. "
                f"'{column}_id', to have it dropped)",
                where,
            )
    return frame, notes


def infer_task(series: pd.Series, task: str = "auto") -> Task:
    """Classification for text, booleans and small integer sets; regression otherwise."""
    if task in ("classification", "regression"):
        return task  # type: ignore[return-value]
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if not numeric:
        return "classification"
    values = series.dropna().to_numpy(dtype=np.float64)
    integral = bool(np.all(np.mod(values, 1) == 0))
    return "classification" if integral and series.nunique() <= MAX_AUTO_CLASSES else "regression"


def class_labels_of(series: pd.Series) -> list[str]:
    """The sorted distinct labels of a classification target, as strings."""
    return [str(v) for v in sorted(series.dropna().unique(), key=lambda v: (str(type(v)), v))]


@dataclass
class ColumnPlan:
    """How one kept input column becomes output columns."""

    name: str
    kind: ColumnKind
    fill: Any  # the imputed value: a float, or a level (str)
    levels: list[str] = field(default_factory=list)

    def outputs(self) -> list[str]:
        return [f"{self.name}={level}" for level in self.levels] if self.kind == "onehot" else [self.name]

    def encode(self, series: pd.Series) -> np.ndarray:
        """(rows, outputs) float64 block, missing values imputed."""
        if self.kind in ("numeric", "boolean", "datetime"):
            if self.kind == "boolean":
                numbers = _booleans(series, self.name)
            else:
                numbers = _seconds(series) if self.kind == "datetime" else _as_numbers(series)
            return numbers.fillna(float(self.fill)).to_numpy(dtype=np.float64)[:, None]
        text = _levels(series).fillna(self.fill)
        if self.kind == "onehot":
            return np.stack([(text == level).to_numpy(dtype=np.float64) for level in self.levels], axis=1)
        rank = {level: i for i, level in enumerate(self.levels)}
        return text.map(lambda v: rank.get(v, len(self.levels))).to_numpy(dtype=np.float64)[
            :, None
        ]  # unseen: past the rarest


_TRUE, _FALSE = {"true", "1", "yes", "t", "y", "1.0"}, {"false", "0", "no", "f", "n", "0.0"}


def _booleans(series: pd.Series, name: str) -> pd.Series:
    """Booleans, or their usual spellings at prediction time (JSON often sends 'true' or 1)."""

    def one(v: object) -> float:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, bool | np.bool_):
            return float(bool(v))
        text = str(v).strip().lower()
        if text in _TRUE or text in _FALSE:
            return float(text in _TRUE)
        raise InputError(f"column {name!r}", v, "a boolean (true/false)")

    return series.map(one).astype(np.float64)


@dataclass
class TablePreprocessor:
    """A fitted, JSON-serialisable mapping from a table's feature columns to model inputs."""

    input_columns: list[str]  # every feature column of the fitted table, in order (dropped ones too)
    input_dtypes: dict[str, str]  # MLflow type names: double, long, boolean, datetime, string
    columns: list[ColumnPlan]  # the kept columns, in input order
    dropped: dict[str, str]  # column -> why it is not used
    mean: list[float]
    std: list[float]
    target: str
    task: Task
    class_labels: list[str]
    target_mean: float = 0.0
    target_std: float = 1.0
    notes: list[str] = field(default_factory=list)

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        target: str,
        *,
        task: str = "auto",
        class_labels: list[str] | None = None,
        one_hot_max_levels: int = ONE_HOT_MAX_LEVELS,
    ) -> TablePreprocessor:
        """Learn the plan from `frame` (the training rows; run `check_table` on the whole table first).

        `class_labels` fixes the label set when a class may be absent from these rows."""
        y = frame[target] if target in frame.columns else pd.Series(dtype=np.float64)
        kind = infer_task(y, task)
        features = [c for c in frame.columns if c != target]
        plans: list[ColumnPlan] = []
        dropped: dict[str, str] = {}
        encoded: list[str] = []
        imputed: list[str] = []
        for name in features:
            series = frame[name]
            present = series.dropna()
            if present.empty or _levels(present).nunique() <= 1:
                dropped[name] = "constant" if not present.empty else "no value in the training rows"
                continue
            if _is_bool_column(series):
                plan = ColumnPlan(name, "boolean", float(_booleans(present, name).mode().iloc[0]))
            elif pd.api.types.is_datetime64_any_dtype(series) or _is_date_text(present):
                plan = ColumnPlan(name, "datetime", float(_seconds(present).median()))
                encoded.append(f"{name!r} (dates, as seconds since 1970)")
            elif pd.api.types.is_numeric_dtype(series) or pd.to_numeric(present, errors="coerce").notna().all():
                numbers = _as_numbers(series)
                if _integer_id(name, numbers):
                    dropped[name] = "ID-like (every value distinct)"
                    continue
                plan = ColumnPlan(name, "numeric", float(numbers.median()))
            else:
                levels = _levels(present)
                counts = levels.value_counts(sort=False)
                if _distinct_text(len(counts), len(present)):
                    share = len(counts) / len(present)
                    dropped[name] = (
                        "ID-like (every value distinct)"
                        if share == 1
                        else f"ID-like ({share:.0%} of its values distinct)"
                    )
                    continue
                if len(counts) > MAX_CATEGORY_LEVELS and _looks_like_id(name):
                    dropped[name] = f"ID-like (named like an ID, more than {MAX_CATEGORY_LEVELS} levels)"
                    continue
                ranked = sorted(counts.index, key=lambda v: (-int(counts[v]), v))  # most frequent first, ties by name
                onehot = len(ranked) <= one_hot_max_levels
                plan = ColumnPlan(
                    name, "onehot" if onehot else "ordinal", ranked[0], sorted(ranked) if onehot else ranked
                )
                encoded.append(f"{name!r} ({len(ranked)} levels, {'one-hot' if onehot else 'ordinal by frequency'})")
            missing = int(series.isna().sum())
            if missing:
                how = "median" if plan.kind in ("numeric", "datetime") else "most frequent value"
                imputed.append(f"{name!r} ({missing} with the {how} {plan.fill!r})")
            plans.append(plan)
        notes = _notes(dropped, encoded, imputed, len(frame))
        if not plans:
            raise InputError(
                "columns", features[:10], "at least one usable feature column (every one is constant or ID-like)"
            )
        pre = cls(
            input_columns=[str(c) for c in features],
            input_dtypes={str(c): _mlflow_type(frame[c]) for c in features},
            columns=plans,
            dropped=dropped,
            mean=[],
            std=[],
            target=target,
            task=kind,
            class_labels=list(class_labels)
            if class_labels is not None
            else (class_labels_of(y) if kind == "classification" else []),
            notes=notes,
        )
        raw = pre._encode(frame)
        pre.mean = [float(v) for v in raw.mean(axis=0)]
        pre.std = [float(v) if v > 0 else 1.0 for v in raw.std(axis=0)]  # a level absent from these rows stays at zero
        if kind == "regression" and len(y):
            values = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
            pre.target_mean, pre.target_std = float(values.mean()), float(values.std()) or 1.0
        return pre

    @property
    def output_columns(self) -> list[str]:
        return [name for plan in self.columns for name in plan.outputs()]

    def _encode(self, frame: pd.DataFrame, numbers: dict[Any, bool] | None = None) -> np.ndarray:
        missing = [plan.name for plan in self.columns if plan.name not in frame.columns]
        if missing:
            raise InputError(
                "column", missing[0], f"present in the input: the model reads {[p.name for p in self.columns][:10]}"
            )
        if numbers and self.columns and all(p.kind == "numeric" and numbers[p.name] for p in self.columns):
            # Every column numbers already (a served JSON or Parquet frame): one array, the same values as column
            # by column (to_numeric is a no-op on them), without 24 ms of pandas calls per request on 64 columns.
            x = frame[[p.name for p in self.columns]].to_numpy(dtype=np.float64)
            return np.where(np.isnan(x), np.array([float(p.fill) for p in self.columns]), x)
        blocks = [plan.encode(frame[plan.name]) for plan in self.columns]
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Model inputs (rows, outputs) as float32: imputed, encoded, standardised like the training rows."""
        if isinstance(frame, pd.Series):
            frame = frame.to_frame().T
        # Once per call, by name: a frame's column lookups cost ~40 us each, 64 of them per served request.
        numbers = {name: _numbers_already(dtype) for name, dtype in zip(frame.columns, frame.dtypes, strict=True)}
        raw = self._encode(frame, numbers)
        for plan in self.columns:
            if plan.kind == "numeric" and not numbers[plan.name] and frame[plan.name].notna().any():
                bad = pd.to_numeric(frame[plan.name], errors="coerce").isna() & frame[plan.name].notna()
                if bad.any():
                    row = int(np.argmax(bad.to_numpy()))
                    raise InputError(
                        f"column {plan.name!r} row {row}", frame[plan.name].iloc[row], "a number or an empty cell"
                    )
        return ((raw - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def encode_target(self, series: pd.Series) -> np.ndarray:
        """Class indices (int64) or the standardised target (float32)."""
        if self.task == "classification":
            index = {label: i for i, label in enumerate(self.class_labels)}
            return np.array([index[str(v)] for v in series], dtype=np.int64)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        return ((values - self.target_mean) / self.target_std).astype(np.float32)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs back to labels (argmax) or target units."""
        if self.task == "classification":
            return np.asarray(self.class_labels, dtype=object)[np.asarray(outputs).argmax(axis=1)]
        return (
            np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)[:, 0] * self.target_std + self.target_mean
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "target": self.target,
            "task": self.task,
            "class_labels": list(self.class_labels),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "input_columns": list(self.input_columns),
            "input_dtypes": dict(self.input_dtypes),
            "columns": [
                {"name": p.name, "kind": p.kind, "fill": p.fill, "levels": list(p.levels)} for p in self.columns
            ],
            "dropped": dict(self.dropped),
            "output_columns": self.output_columns,
            "mean": list(self.mean),
            "std": list(self.std),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TablePreprocessor:
        if d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise InputError(
                "preprocessing format", f"{d.get('format')} v{d.get('version')}", f"{FORMAT} v{FORMAT_VERSION}"
            )
        return cls(
            input_columns=list(d["input_columns"]),
            input_dtypes=dict(d["input_dtypes"]),
            columns=[ColumnPlan(c["name"], c["kind"], c["fill"], list(c["levels"])) for c in d["columns"]],
            dropped=dict(d["dropped"]),
            mean=[float(v) for v in d["mean"]],
            std=[float(v) for v in d["std"]],
            target=d["target"],
            task=d["task"],
            class_labels=list(d["class_labels"]),
            target_mean=float(d["target_mean"]),
            target_std=float(d["target_std"]),
            notes=list(d["notes"]),
        )


def _integer_id(name: str, numbers: pd.Series) -> bool:
    """Integers, every one distinct, and named like an ID or rising row after row (a row number or key)."""
    values = numbers.dropna()
    if len(values) < 2 or not bool(np.all(np.mod(values, 1) == 0)) or values.nunique() != len(values):
        return False
    return _looks_like_id(name) or (len(values) >= MIN_ROWS and bool(values.is_monotonic_increasing))


def _notes(dropped: dict[str, str], encoded: list[str], imputed: list[str], rows: int) -> list[str]:
    notes = []
    for reason in sorted(set(dropped.values())):
        names = [name for name, why in dropped.items() if why == reason]
        notes.append(f"dropped {len(names)} {reason} column{'s' if len(names) > 1 else ''}: {_shown(names)}")
    if imputed:
        notes.append(
            f"imputed missing values in {len(imputed)} column{'s' if len(imputed) > 1 else ''} (of {rows} training "
            f"rows): {'; '.join(imputed[:6])}"
        )
    if encoded:
        notes.append(f"encoded {len(encoded)} text column{'s' if len(encoded) > 1 else ''}: {'; '.join(encoded[:6])}")
    return notes
