"""Table preprocessing: imputation, encoding, dropped columns, the JSON round trip, refused tables."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.data.datasets import CachedData
from tasks.data.preprocess import MAX_CATEGORY_LEVELS, ONE_HOT_MAX_LEVELS, TablePreprocessor, check_table
from thresholds.errors import InputError


def _messy(n: int = 80, seed: int = 0) -> pd.DataFrame:
    """Missing numbers and text, a boolean with gaps, a constant, an ID, a row number and many-level text."""
    rng = np.random.default_rng(seed)
    length = rng.normal(44.0, 5.0, size=n)
    length[[3, 10, 11]] = np.nan
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], size=n).astype(object)
    island[[5, 6]] = None
    flag = rng.choice([True, False], size=n).astype(object)
    flag[7] = None
    return pd.DataFrame(
        {
            "Unnamed: 0": np.arange(n),
            "bill_length_mm": length,
            "island": island,
            "tagged": flag,
            "year": np.full(n, 2009),
            "penguin_id": [f"P{i:04d}" for i in range(n)],
            "colony": rng.choice([f"c{i}" for i in range(ONE_HOT_MAX_LEVELS + 9)], size=n),
            "count": rng.integers(0, 5, size=n),
            "species": rng.choice(["Adelie", "Gentoo", "Chinstrap"], size=n),
        }
    )


def test_fit_imputes_encodes_and_drops_with_notes() -> None:
    frame = _messy()
    pre = TablePreprocessor.fit(frame, "species")
    kinds = {plan.name: plan.kind for plan in pre.columns}
    assert kinds == {
        "bill_length_mm": "numeric",
        "island": "onehot",
        "tagged": "boolean",
        "colony": "ordinal",
        "count": "numeric",
    }
    assert pre.dropped == {
        "Unnamed: 0": "ID-like (every value distinct)",
        "year": "constant",
        "penguin_id": "ID-like (every value distinct)",
    }
    assert pre.input_columns == [c for c in frame.columns if c != "species"]
    assert (
        pre.input_dtypes["bill_length_mm"] == "double"
        and pre.input_dtypes["island"] == "string"
        and pre.input_dtypes["tagged"] == "boolean"
    )
    assert pre.task == "classification" and pre.class_labels == ["Adelie", "Chinstrap", "Gentoo"]
    # fills: the median of the numbers present, the most frequent level
    assert pre.columns[0].fill == pytest.approx(float(np.nanmedian(frame["bill_length_mm"])))
    assert pre.columns[1].fill == frame["island"].value_counts().index[0]
    text = " | ".join(pre.notes)
    for needle in (
        "constant column: 'year'",
        "ID-like",
        "'penguin_id'",
        "'Unnamed: 0'",
        "'bill_length_mm' (3 with the median",
        "'island' (3 levels, one-hot)",
    ):
        assert needle in text, needle
    x = pre.transform(frame)
    assert x.dtype == np.float32 and x.shape == (len(frame), len(pre.output_columns)) and np.isfinite(x).all()
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5)  # standardised with the fitted rows' statistics
    islands = [c for c in pre.output_columns if c.startswith("island=")]
    assert islands == ["island=Biscoe", "island=Dream", "island=Torgersen"]


def test_missing_values_get_the_fill_and_unseen_levels_stay_finite() -> None:
    pre = TablePreprocessor.fit(_messy(), "species")
    row = pd.DataFrame(
        {"bill_length_mm": [np.nan], "island": ["Atlantis"], "tagged": [None], "colony": ["never-seen"], "count": [2]}
    )
    x = pre.transform(row)
    assert np.isfinite(x).all()
    first = pre.output_columns.index("bill_length_mm")
    assert x[0, first] == pytest.approx((pre.columns[0].fill - pre.mean[first]) / pre.std[first], abs=1e-5)
    onehot = [i for i, c in enumerate(pre.output_columns) if c.startswith("island=")]
    assert np.allclose(
        x[0, onehot], -np.asarray(pre.mean)[onehot] / np.asarray(pre.std)[onehot], atol=1e-5
    )  # all levels off


def test_json_round_trip_gives_identical_transform() -> None:
    frame = _messy(seed=3)
    pre = TablePreprocessor.fit(frame.iloc[:60], "species")
    again = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.to_dict() == pre.to_dict()
    assert np.array_equal(pre.transform(frame), again.transform(frame))
    assert again.input_columns == pre.input_columns and again.notes == pre.notes


def test_prediction_inputs_in_json_spellings_and_bad_values() -> None:
    pre = TablePreprocessor.fit(_messy(), "species")
    base = {"bill_length_mm": 40.0, "island": "Dream", "colony": "c1", "count": 1}
    as_bool = pre.transform(pd.DataFrame([{**base, "tagged": True}]))
    as_text = pre.transform(pd.DataFrame([{**base, "tagged": "true"}]))
    assert np.array_equal(as_bool, as_text)
    with pytest.raises(InputError, match="'bill_length_mm' row 0 = 'long'"):
        pre.transform(pd.DataFrame([{**base, "tagged": True, "bill_length_mm": "long"}]))
    with pytest.raises(InputError, match="column = 'island'"):
        pre.transform(pd.DataFrame([{"bill_length_mm": 1.0}]))


def test_regression_target_is_standardised_and_decoded() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"x": rng.normal(size=50), "kind": rng.choice(["a", "b"], size=50), "y": rng.normal(100.0, 20.0, size=50)}
    )
    pre = TablePreprocessor.fit(frame, "y")
    assert pre.task == "regression" and pre.target_std > 1
    encoded = pre.encode_target(frame["y"])
    assert abs(float(encoded.mean())) < 1e-5
    assert np.allclose(pre.decode(encoded[:, None]), frame["y"], atol=1e-3)


def test_every_column_constant_or_id_is_refused() -> None:
    frame = pd.DataFrame({"id": range(30), "c": 1, "y": [0, 1] * 15})
    with pytest.raises(InputError, match="at least one usable feature column"):
        TablePreprocessor.fit(frame, "y")


def _table(**columns: object) -> pd.DataFrame:
    n = 40
    base: dict[str, object] = {"a": np.arange(n) % 7, "y": ["u", "v"] * (n // 2)}
    return pd.DataFrame({**base, **columns})


BAD = [
    ("no target column", pd.DataFrame({"a": range(30)}), "y", "target = 'y': expected one of the columns"),
    ("target missing everywhere", _table(y=[None] * 40), "y", "missing in all 40 rows"),
    ("column missing everywhere", _table(b=[np.nan] * 40), "y", "column 'b' = 'missing in all 40 rows'"),
    (
        "stray text in a number column",
        _table(age=[str(i) for i in range(39)] + ["?"]),
        "y",
        "column 'age' row 39 = '?'",
    ),
    ("infinite number", _table(b=[1.0] * 39 + [np.inf]), "y", "column 'b' row 39 = inf"),
    ("too many levels", _table(city=[f"city{i % (MAX_CATEGORY_LEVELS + 1)}" for i in range(40)]), "y", None),
    ("empty table", pd.DataFrame(), "y", "header row"),
    ("too few labelled rows", _table(y=["u", "v"] * 5 + [None] * 30), "y", "at least 20 rows with a target value"),
]


@pytest.mark.parametrize(("frame", "target", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tables_are_one_line(frame: pd.DataFrame, target: str, needle: str | None) -> None:
    if needle is None:  # more levels than rows in a unit test: use a long column instead
        frame = pd.DataFrame(
            {"a": np.arange(3000) % 5, "city": [f"c{i % 1500}" for i in range(3000)], "y": ["u", "v"] * 1500}
        )
        needle = "column 'city' = '1500 distinct values': expected at most 1000 categories"
    with pytest.raises(InputError) as info:
        check_table(frame, target)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_many_levels_in_a_column_named_like_an_id_are_dropped_not_refused() -> None:
    frame = pd.DataFrame(
        {"a": np.arange(3000) % 5, "customer_id": [f"c{i % 1500}" for i in range(3000)], "y": ["u", "v"] * 1500}
    )
    checked, _ = check_table(frame, "y")
    pre = TablePreprocessor.fit(checked, "y")
    assert [p.name for p in pre.columns] == ["a"] and pre.dropped["customer_id"].startswith("ID-like (named like an ID")


def test_rows_without_a_target_are_dropped_with_a_note() -> None:
    frame = _table(y=["u", "v"] * 15 + [None] * 10)
    checked, notes = check_table(frame, "y")
    assert len(checked) == 30 and notes == ["dropped 10 of 40 rows whose target 'y' is missing"]


def test_text_nearly_every_value_distinct_is_a_label_per_row_and_dropped_not_refused() -> None:
    # vega_datasets' airports: 'name' had 3,227 distinct values in 3,376 rows (96 %).
    n = 1_500
    names = [f"field {i - 1 if i % 20 == 0 and i else i}" for i in range(n)]  # 95 % distinct
    frame = pd.DataFrame({"name": names, "lat": np.linspace(0, 1, n), "y": ["a", "b", "c"] * (n // 3)})
    checked, _ = check_table(frame, "y")  # 1,425 levels, past the cap, but a label per row: not refused as categories
    pre = TablePreprocessor.fit(checked, "y")
    assert re.fullmatch(r"ID-like \(9\d% of its values distinct\)", pre.dropped["name"]), pre.dropped
    assert [p.name for p in pre.columns] == ["lat"]


def test_iso_date_text_becomes_seconds_and_distinct_text_past_the_cap_is_an_id() -> None:
    n = 1_500
    days = pd.date_range("2012-01-01", periods=n, freq="D")
    frame = pd.DataFrame(
        {
            "date": days.strftime("%Y-%m-%d"),
            "note": [f"n{i}" for i in range(n)],
            "t": np.arange(n) % 9,
            "y": ["a", "b", "c"] * (n // 3),
        }
    )
    checked, _ = check_table(frame, "y")  # 1,500 distinct dates and notes: not refused as categories
    pre = TablePreprocessor.fit(checked, "y")
    assert {p.name: p.kind for p in pre.columns} == {"date": "datetime", "t": "numeric"}
    assert pre.dropped == {"note": "ID-like (every value distinct)"}
    x = pre.transform(pd.DataFrame({"date": ["2012-01-01", "2016-02-08", None], "t": [1, 2, 3]}))
    step = pre.output_columns.index("date")
    assert x[0, step] < x[1, step] and np.isfinite(x).all()  # ordered in time; the missing date takes the median


def _cached(y_train: list[int], labels: tuple[str, ...]) -> CachedData:
    empty = torch.zeros((0, 1))
    y = torch.tensor(y_train)
    return CachedData("t", "classification", 1, len(labels), empty, y, empty, y, empty, y, labels, 0.0, 1.0)


def test_auto_quality_metric_follows_the_class_balance_and_the_scenario_can_choose() -> None:
    from tasks.models.evaluate import IMBALANCE_RATIO, resolve_quality_metric

    balanced = _cached([0] * 10 + [1] * 8, ("a", "b"))
    skewed = _cached([0] * 10 + [1] * (int(10 * IMBALANCE_RATIO) - 1), ("a", "b"))
    assert resolve_quality_metric("auto", balanced)[0] == "accuracy"
    metric, why = resolve_quality_metric("auto", skewed)
    assert metric == "balanced_accuracy" and "smallest class 'b' has 4 training rows" in why
    assert resolve_quality_metric("macro_f1", balanced)[0] == "macro_f1"


def test_balanced_accuracy_and_macro_f1_do_not_reward_ignoring_the_small_class() -> None:
    from tasks.models.evaluate import score

    truth = torch.tensor([0] * 9 + [1])
    always_big = torch.zeros(10, dtype=torch.int64)
    assert score("accuracy", always_big, truth) == pytest.approx(0.9)
    assert score("balanced_accuracy", always_big, truth) == pytest.approx(0.5)
    assert score("macro_f1", always_big, truth) == pytest.approx((2 * 0.9 / 1.9 + 0.0) / 2)


def test_a_rising_integer_is_a_row_number_but_distinct_unordered_integers_are_a_feature() -> None:
    rng = np.random.default_rng(2)
    n = 60
    frame = pd.DataFrame(
        {"row": np.arange(n) * 3 + 7, "age": rng.permutation(np.arange(20, 20 + n)), "y": ["a", "b"] * (n // 2)}
    )
    pre = TablePreprocessor.fit(
        frame.iloc[np.sort(rng.choice(n, 40, replace=False))], "y"
    )  # training rows, in table order
    assert pre.dropped == {"row": "ID-like (every value distinct)"} and [p.name for p in pre.columns] == ["age"]


def test_a_frame_of_numbers_is_transformed_at_once_exactly_as_column_by_column() -> None:
    """Served JSON and Parquet frames hold numbers already: one array, the same values (missing ones imputed with
    the training medians) as the column-by-column path that text frames take."""
    from tasks.data import datasets as data_mod

    frame, target, _ = data_mod._builtin_frame("digits", None, 0)
    fitted = TablePreprocessor.fit(frame, target)
    numbers = frame.drop(columns=[target]).head(50).astype(np.float64)
    numbers.iloc[3, 5] = np.nan
    as_text = numbers.astype(object).where(numbers.notna(), None).map(lambda v: v if v is None else f"{v:g}")
    assert np.array_equal(fitted.transform(numbers), fitted.transform(as_text))
    as_text.iloc[7, 2] = "?"  # text frames are still checked cell by cell
    with pytest.raises(InputError, match=r"row 7"):
        fitted.transform(as_text)
