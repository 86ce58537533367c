"""Quality observed while serving: the answers given, the labels that come back for them, the metric over them.

Every answer is kept under its request id (the inputs, the predictions) for `ttl_s` seconds, at most
`max_requests` of them holding at most `max_rows` rows (the oldest go first); `POST /feedback` names a request id
and gives one label (or regression target) per row answered. A label that arrives for an unknown or expired id,
twice for one id, of the wrong type or an unknown class is refused with one line and counted nowhere. The labelled
predictions of the current window give the scenario's quality metric: accuracy for a classifier, RMSE for a
regressor. With a feedback folder each labelled batch is appended as one Parquet part: the model's input columns
and `label`, a table a later loop can train on.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.common.errors import InputError

LABEL_COLUMN = "label"


@dataclass
class _Answer:
    at_s: float
    inputs: pd.DataFrame | None  # kept only where labelled rows are written to a feedback folder
    predictions: list[Any]


@dataclass
class _Labelled:
    predictions: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)


class Feedback:
    """The answers awaiting labels, and the labelled window."""

    def __init__(self, task: str, class_labels: list[str], folder: Path | None, ttl_s: float = 3600.0) -> None:
        self.task, self.class_labels, self.folder, self.ttl_s = task, class_labels, folder, ttl_s
        self.max_requests = 100_000
        # Rows bound the memory, not requests: 100,000 answers of 4,096 rows held ~3 GiB of predictions alone.
        self.max_rows = 500_000
        self._rows = 0
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._window = _Labelled()
        self._lock = threading.Lock()
        self._parts = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def metric(self) -> str:
        return "accuracy" if self.task == "classification" else "rmse"

    def answered(self, inputs: pd.DataFrame | None, predictions: list[Any]) -> str:
        """Keep an answer (its input rows only with a feedback folder); its request id."""
        request_id = uuid.uuid4().hex
        now = time.time()
        with self._lock:
            self._answers[request_id] = _Answer(now, inputs if self.folder is not None else None, predictions)
            self._rows += len(predictions)
            while self._answers and (
                len(self._answers) > self.max_requests
                or self._rows > self.max_rows
                or next(iter(self._answers.values())).at_s < now - self.ttl_s
            ):
                self._rows -= len(self._answers.popitem(last=False)[1].predictions)
        return request_id

    def _check_labels(self, labels: Any, rows: int) -> list[Any]:
        if not isinstance(labels, list) or len(labels) != rows:
            raise InputError("labels", labels if not isinstance(labels, list) else f"{len(labels)} labels",
                             f"a list of {rows} labels, one per row answered")  # fmt: skip
        for value in labels:
            if self.task == "classification":
                if str(value) not in self.class_labels or isinstance(value, (dict, list)):
                    raise InputError("labels", value, f"one of the classes {self.class_labels}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError("labels", value, "a finite number (the regression target)")
        return [str(v) for v in labels] if self.task == "classification" else [float(v) for v in labels]

    def label(self, items: list[tuple[Any, Any]]) -> int:
        """Labels for earlier answers, as (request id, labels) pairs: the rows labelled. All or nothing: raises
        InputError, and records nothing, when an id is unknown, expired, already labelled or named twice, or a
        label does not fit."""
        now = time.time()
        with self._lock:
            checked: list[tuple[str, _Answer, list[Any]]] = []
            for request_id, labels in items:
                answer = self._answers.get(str(request_id))
                if answer is None or answer.at_s < now - self.ttl_s or any(c[0] == str(request_id) for c in checked):
                    raise InputError("request_id", request_id, "the id of an answer of the last "
                                     f"{self.ttl_s:.0f} s not labelled yet")  # fmt: skip
                checked.append((str(request_id), answer, self._check_labels(labels, len(answer.predictions))))
            for request_id, answer, values in checked:
                del self._answers[request_id]  # labelled once: a second post for it is refused
                self._rows -= len(answer.predictions)
                self._window.predictions += answer.predictions
                self._window.labels += values
        for _, answer, values in checked:
            if answer.inputs is not None and len(answer.inputs) == len(values):
                part = answer.inputs.copy()
                part[LABEL_COLUMN] = values
                self._write(part)
        return sum(len(values) for _, _, values in checked)

    def _write(self, part: pd.DataFrame) -> None:
        assert self.folder is not None
        with self._lock:
            self._parts += 1
            name = f"part-{int(time.time() * 1000)}-{self._parts:06d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        part.to_parquet(tmp, index=False)
        tmp.replace(self.folder / name)  # atomic: a later loop never reads half a part

    def take_quality(self) -> tuple[float | None, int]:
        """The quality metric over the window's labelled rows (None without any), and how many; a new window."""
        with self._lock:
            window, self._window = self._window, _Labelled()
        return quality(self.task, window.predictions, window.labels), len(window.labels)


def quality(task: str, predictions: list[Any], labels: list[Any]) -> float | None:
    """Accuracy (classification) or RMSE (regression) of predictions against labels; None without any."""
    if not labels:
        return None
    if task == "classification":
        return sum(str(p) == str(y) for p, y in zip(predictions, labels, strict=True)) / len(labels)
    return math.sqrt(sum((float(p) - float(y)) ** 2 for p, y in zip(predictions, labels, strict=True)) / len(labels))
