"""Data layer: built-ins, CSV/Parquet, deterministic splits, the cache, and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.data.datasets import load_cached, prepare
from tasks.data.preprocess import TablePreprocessor
from thresholds.errors import InputError


def test_digits_is_split_deterministically_and_standardised(tmp_path: Path) -> None:
    a = load_cached(str(prepare("digits", tmp_path / "a", seed=1)))
    b = load_cached(str(prepare("digits", tmp_path / "b", seed=1)))
    assert (
        a.task == "classification" and a.n_classes == 10 and a.n_features == 61
    )  # 64 pixels, 3 always blank in the training rows
    assert a.notes == ("dropped 3 constant columns: 'pixel_0_0', 'pixel_4_0', 'pixel_4_7'",)
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert (
        isinstance(a.x_train, torch.Tensor)
        and isinstance(a.x_test, torch.Tensor)
        and isinstance(b.x_test, torch.Tensor)
    )  # a table: never streamed
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
    (
        "stray text in a number column",
        "a,b,label\n" + "1,2,0\n2,3,1\n" * 15 + "?,2,1\n",
        {"target": "label"},
        "column 'a' row 30 = '?'",
    ),
    ("inf feature", "a,b,label\n" + "1,inf,0\n1,2,1\n" * 15, {"target": "label"}, "finite number"),
    ("header only", "a,b,label\n", {"target": "label"}, "at least 20 rows"),
    ("empty file", "", {"target": "label"}, "the file is empty"),
    (
        "column without a value",
        "a,b,label\n" + "1,,0\n2,,1\n" * 15,
        {"target": "label"},
        "column 'b' = 'missing in all 30 rows'",
    ),
    ("target missing in every row", "a,b,label\n" + "1,2,\n2,3,\n" * 15, {"target": "label"}, "missing in all 30 rows"),
    ("one class", "a,b,label\n" + "1,2,0\n" * 30, {"target": "label"}, "at least 2 distinct classes"),
    ("only the target", "label\n" + "0\n1\n" * 15, {"target": "label"}, "at least one feature column"),
    (
        "too few labelled rows",
        "a,label\n" + "1,0\n2,\n" * 15,
        {"target": "label"},
        "at least 20 rows with a target value",
    ),
]


def test_messy_csv_is_imputed_encoded_and_its_preprocessing_reproduces_the_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "length": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 5, n)),
            "island": rng.choice(["Biscoe", "Dream", None], size=n),
            "site": "north",
            "sex": np.where(rng.random(n) < 0.05, None, rng.choice(["male", "female"], size=n)),
        }
    )
    frame["species"] = np.where(frame["length"].fillna(40) > 40, "big", "small")
    frame.loc[[0, 1], "species"] = None
    path = tmp_path / "penguins.csv"
    frame.to_csv(path, index=False)
    data = load_cached(str(prepare(str(path), tmp_path / "c", target="species")))
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == n - 2
    notes = " | ".join(data.notes)
    assert (
        "dropped 2 of 120 rows whose target 'species' is missing" in notes
        and "constant column: 'site'" in notes
        and "'id'" in notes
    )
    pre = TablePreprocessor.from_dict(data.preprocessing)
    assert pre.input_columns == ["id", "length", "island", "site", "sex"]
    x_all = torch.tensor(pre.transform(pd.read_csv(path).dropna(subset=["species"]).reset_index(drop=True)))
    cached = torch.cat([data.x_train, data.x_val, data.x_test])  # type: ignore[list-item]  # a table: tensors, never streamed
    assert cached.shape[1] == x_all.shape[1] == data.n_features
    # the same rows, in split order: every cached row is one transformed row of the raw table
    assert all(bool((x_all == row).all(dim=1).any()) for row in cached)
    saved = data.write_preprocessing(tmp_path)
    assert saved.name == "preprocessing.json" and json.loads(saved.read_text()) == data.preprocessing


def test_every_builtin_prepares(tmp_path: Path) -> None:
    for name, task, classes in (
        ("iris", "classification", 3),
        ("wine", "classification", 3),
        ("breast_cancer", "classification", 2),
        ("diabetes", "regression", 1),
    ):
        data = load_cached(str(prepare(name, tmp_path)))
        assert (data.task, data.n_classes) == (task, classes), name


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


@pytest.mark.parametrize(
    ("dataset", "needle"), [("imagenet", "one of mnist1d, digits, iris"), ("nope.csv", "existing .csv")]
)
def test_unknown_dataset(tmp_path: Path, dataset: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        prepare(dataset, tmp_path)
