"""Data layer: built-ins, CSV/Parquet, deterministic splits, the cache, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.data import load_cached, prepare
from thresholds.errors import InputError


def test_digits_is_split_deterministically_and_standardised(tmp_path: Path) -> None:
    a = load_cached(str(prepare("digits", tmp_path / "a", seed=1)))
    b = load_cached(str(prepare("digits", tmp_path / "b", seed=1)))
    assert a.task == "classification" and a.n_classes == 10 and a.n_features == 64
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert torch.equal(a.x_test, b.x_test)
    assert torch.equal(a.y_train, b.y_train)
    assert a.x_train.mean().abs() < 0.05


def test_cache_is_reused_without_reading_the_source_again(tmp_path: Path) -> None:
    first = prepare("digits", tmp_path)
    stamp = first.stat().st_mtime_ns
    second = prepare("digits", tmp_path)
    assert first == second and second.stat().st_mtime_ns == stamp
    assert load_cached(str(first)) is load_cached(str(second))


def test_mnist1d_sample_count_is_a_parameter(tmp_path: Path) -> None:
    data = load_cached(str(prepare("mnist1d", tmp_path, samples=400)))
    assert data.n_features == 40 and data.n_classes == 10
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 400


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "label": np.where(x1 > 0, "yes", "no"), "value": 3 * x1 - x2})


def test_csv_with_string_labels_is_classification(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _frame().drop(columns=["value"]).to_csv(path, index=False)
    data = load_cached(str(prepare(str(path), tmp_path / "c", target="label")))
    assert data.task == "classification" and data.class_labels == ("no", "yes") and data.n_features == 2


def test_parquet_with_float_target_is_regression_and_keeps_units(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    _frame().drop(columns=["label"]).to_parquet(path)
    data = load_cached(str(prepare(str(path), tmp_path / "c", target="value")))
    assert data.task == "regression" and data.out_features == 1
    assert data.target_std > 1.0


BAD_TABLES: list[tuple[str, str, dict[str, object], str]] = [
    ("missing target", "a,b\n" + "1,2\n" * 30, {"target": "label"}, "one of the columns"),
    ("no target given", "a,b\n" + "1,2\n" * 30, {}, "--target"),
    ("non-numeric feature", "a,b,label\n" + "x,2,0\n1,2,1\n" * 15, {"target": "label"}, "column 'a'"),
    ("NaN feature", "a,b,label\n" + "1,,0\n1,2,1\n" * 15, {"target": "label"}, "finite number"),
    ("inf feature", "a,b,label\n" + "1,inf,0\n1,2,1\n" * 15, {"target": "label"}, "finite number"),
    ("empty", "a,b,label\n", {"target": "label"}, "at least 20 rows"),
    ("one class", "a,b,label\n" + "1,2,0\n" * 30, {"target": "label"}, "at least 2 distinct classes"),
    ("only the target", "label\n" + "0\n1\n" * 15, {"target": "label"}, "at least one feature column"),
    ("missing target cell", "a,label\n" + "1,0\n2,\n" * 15, {"target": "label"}, "a value in every row"),
]


@pytest.mark.parametrize(("text", "kwargs", "needle"), [r[1:] for r in BAD_TABLES], ids=[r[0] for r in BAD_TABLES])
def test_bad_tables_give_one_clear_line(tmp_path: Path, text: str, kwargs: dict[str, str], needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        prepare(str(path), tmp_path / "c", **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_wrong_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(("a,label\n" + "caf\u00e9,1\n" * 30).encode("utf-16"))
    with pytest.raises(InputError):
        prepare(str(path), tmp_path / "c", target="label")


@pytest.mark.parametrize(("dataset", "needle"), [("imagenet", "one of mnist1d, digits"), ("nope.csv", "existing .csv")])
def test_unknown_dataset(tmp_path: Path, dataset: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        prepare(dataset, tmp_path)
