"""The deployable scorer and the models-from-code pyfunc: predictions equal the torch model's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from registry import mlflow_model
from tasks.compression import onnx_runtime
from tasks.data.preprocess import TablePreprocessor
from tasks.models import factory as models
from tasks.serving import scorer as serving
from thresholds.errors import InputError

COLUMNS = ["a", "b", "c", "d"]


def _saved(
    tmp_path: Path, task: str = "classification", precision: models.Precision = "fp32", kind: str = "mlp"
) -> tuple[Path, pd.DataFrame]:
    """A model saved behind a fitted table preprocessing, as the loop saves every candidate."""
    rng = np.random.default_rng(0)
    raw = pd.DataFrame(rng.normal(5.0, 3.0, size=(50, len(COLUMNS))), columns=COLUMNS)
    raw["d"] = rng.integers(0, 10, size=50)  # an integer column, as CSV tables have
    labels = ["cat", "dog", "eel"]
    table = raw.assign(y=[labels[i % 3] for i in range(50)] if task == "classification" else rng.normal(size=50))
    pre = TablePreprocessor.fit(table, "y", task=task, class_labels=labels if task == "classification" else None)
    out = 3 if task == "classification" else 1
    spec = models.ModelSpec(
        kind=kind, in_features=len(pre.output_columns), out_features=out, hidden=[8, 4], precision=precision
    )  # type: ignore[arg-type]
    torch.manual_seed(0)
    model_dir = models.save(models.build(spec), spec, tmp_path / "model")
    (model_dir / serving.PREPROCESSING_FILE).write_text(json.dumps(pre.to_dict()))
    serving.save_input_spec(
        serving.InputSpec(
            task=task,  # type: ignore[arg-type]
            class_labels=labels if task == "classification" else [],
            target_mean=100.0,
            target_std=10.0,
            example=json.loads(raw.head(3).to_json(orient="records")),
        ),
        model_dir,
    )
    return model_dir, raw


def _torch_output(model_dir: Path, raw: pd.DataFrame) -> torch.Tensor:
    """The reference: the saved model at its precision on the preprocessed table."""
    model, spec = models.load(model_dir)
    pre = TablePreprocessor.from_dict(json.loads((model_dir / serving.PREPROCESSING_FILE).read_text()))
    x = np.asarray(pre.transform(raw), dtype=np.float32)
    with torch.no_grad():
        return models.to_precision(model, spec.precision)(torch.from_numpy(x))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_scorer_classification_equals_softmax_of_the_torch_model(tmp_path: Path, precision: models.Precision) -> None:
    model_dir, raw = _saved(tmp_path, precision=precision)
    out = serving.Scorer(model_dir).predict(raw)
    probabilities = torch.softmax(_torch_output(model_dir, raw), dim=1).numpy()
    assert list(out.columns) == ["prediction", "probability_cat", "probability_dog", "probability_eel"]
    np.testing.assert_allclose(
        out[["probability_cat", "probability_dog", "probability_eel"]].to_numpy(), probabilities, rtol=1e-5, atol=1e-6
    )
    assert list(out["prediction"]) == [["cat", "dog", "eel"][i] for i in probabilities.argmax(axis=1)]


def test_scorer_regression_returns_the_target_in_its_own_units(tmp_path: Path) -> None:
    model_dir, raw = _saved(tmp_path, task="regression")
    out = serving.Scorer(model_dir).predict(raw)
    expected = _torch_output(model_dir, raw)[:, 0].double().numpy() * 10.0 + 100.0
    np.testing.assert_allclose(out["prediction"].to_numpy(), expected, rtol=1e-6)


def test_pyfunc_from_code_predicts_what_the_torch_model_does(tmp_path: Path) -> None:
    import mlflow

    model_dir, raw = _saved(tmp_path, kind="cnn1d")
    onnx_runtime.record(model_dir, onnx_runtime.Runtime(threads=1))  # measured at one thread, as the loop records it
    torch.set_num_threads(2)
    mlflow.pyfunc.save_model(
        tmp_path / "pyfunc",
        python_model=str(serving.PYFUNC_CODE),
        artifacts={"model": str(model_dir)},
        pip_requirements=["torch"],
    )
    assert not list((tmp_path / "pyfunc").rglob("*.pkl"))  # models-from-code: nothing pickled
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    assert torch.get_num_threads() == 1  # the serving process runs at the threads the version was measured at
    out = loaded.predict(raw)
    probabilities = torch.softmax(_torch_output(model_dir, raw), dim=1).numpy()
    np.testing.assert_allclose(out.filter(like="probability_").to_numpy(), probabilities, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="columns"):
        loaded.predict(raw.drop(columns=["b"]))


def test_check_names_missing_extra_and_mistyped_columns_in_one_line(tmp_path: Path) -> None:
    model_dir, raw = _saved(tmp_path)
    scorer = serving.Scorer(model_dir)
    scorer.check(raw)
    cases = {
        "missing 1": raw.drop(columns=["c"]),
        "remove the extra": raw.assign(extra=1.0),
        "expected numbers .* got dtype": raw.assign(b=["x"] * len(raw)),
        "at least one row": raw.iloc[:0],
    }
    for expected, frame in cases.items():
        with pytest.raises(InputError, match=expected) as info:
            scorer.check(frame, where="input t.csv")
        assert "\n" not in str(info.value) and str(info.value).startswith("input t.csv: ")


def test_read_table_refuses_empty_and_header_only_files(tmp_path: Path) -> None:
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text("a,b,c,d\n")
    for path, expected in (
        (empty, "file is empty"),
        (header, "header only"),
        (tmp_path / "x.json", "a .csv or .parquet"),
        (tmp_path / "no.csv", "existing"),
    ):
        with pytest.raises(InputError, match=expected):
            serving.read_table(path)


def test_write_table_writes_whole_files_only(tmp_path: Path) -> None:
    frame = pd.DataFrame({"prediction": ["a", "b"]})
    for name in ("out.csv", "out.parquet"):
        serving.write_table(frame, tmp_path / name)
    assert pd.read_parquet(tmp_path / "out.parquet").equals(frame)
    assert pd.read_csv(tmp_path / "out.csv").equals(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.parquet"]  # no temporary left


def test_model_references_and_meter_settings() -> None:
    assert mlflow_model.parse_ref("m@champion") == ("m", "@champion")
    assert mlflow_model.parse_ref("m/3") == ("m", "3")
    assert mlflow_model.parse_ref("team/m") == ("team/m", "@champion")
    assert (
        mlflow_model.model_uri("m", "@champion") == "models:/m@champion"
        and mlflow_model.model_uri("m", "3") == "models:/m/3"
    )
    assert serving.meter_setting({"meter": "fixed-power", "energy_source": "fixed-power:20W"}) == ("fixed-power", 20.0)
    assert serving.meter_setting({"meter": "codecarbon", "energy_source": "codecarbon:machine"}) == ("codecarbon", 10.0)
    assert serving.meter_setting({}) == ("auto", 10.0)


def test_score_measures_one_window_over_every_batch() -> None:
    from tasks.meters.simple import ReplayMeter

    frame = pd.DataFrame({"a": range(10)})
    seen: list[int] = []
    out, report = serving.score(
        lambda f: f.rename(columns={"a": "prediction"}),
        serving.table_to_score(frame),
        4,
        ReplayMeter([2.0]),
        seen.append,
    )
    assert seen == [4, 8, 10] and list(out["prediction"]) == list(range(10))
    assert report.rows == 10 and report.energy_j_per_1k == pytest.approx(200.0)


def test_score_reads_chunks_outside_the_windows_and_sums_them() -> None:
    """Rows read a chunk at a time (an image folder): each chunk is checked, then scored in its own window; the
    report sums the windows, so what reading the chunks cost is not counted."""
    from tasks.meters.simple import ReplayMeter

    chunks = [pd.DataFrame({"a": range(0, 8)}), pd.DataFrame({"a": range(8, 11)})]
    checked: list[int] = []
    source = serving.ToScore(rows=11, chunks=lambda: iter(chunks))
    seen: list[int] = []
    meter = ReplayMeter([2.0, 3.0])
    out, report = serving.score(
        lambda f: f.rename(columns={"a": "prediction"}), source, 4, meter, seen.append, lambda c: checked.append(len(c))
    )
    assert checked == [8, 3] and seen == [4, 8, 11] and list(out["prediction"]) == list(range(11))
    assert report.rows == 11 and report.energy_j == pytest.approx(5.0)


def test_input_example_is_raw_rows_in_the_training_dtypes(tmp_path: Path) -> None:
    model_dir, raw = _saved(tmp_path)
    example = serving.Scorer(model_dir).example()
    assert str(example["d"].dtype) == "int64" and str(example["a"].dtype) == "float64"
    pd.testing.assert_frame_equal(example, raw.head(3))


def test_text_and_missing_values_go_through_the_fitted_preprocessing_inside_predict(tmp_path: Path) -> None:
    """A table with a text column and gaps: predict takes the raw rows (text, NaN) and equals the torch model on
    the preprocessing's output; the text column is required, and a column of numbers must stay numbers."""
    rng = np.random.default_rng(1)
    raw = pd.DataFrame({"a": rng.normal(size=40), "colour": rng.choice(["red", "green", "blue"], size=40)})
    raw.loc[3, "a"] = np.nan
    pre = TablePreprocessor.fit(raw.assign(y=["p", "q"] * 20), "y", task="classification", class_labels=["p", "q"])
    spec = models.ModelSpec(in_features=len(pre.output_columns), out_features=2, hidden=[4, 4])
    torch.manual_seed(0)
    model_dir = models.save(models.build(spec), spec, tmp_path / "model")
    (model_dir / serving.PREPROCESSING_FILE).write_text(json.dumps(pre.to_dict()))
    serving.save_input_spec(
        serving.InputSpec(
            task="classification", class_labels=["p", "q"], example=json.loads(raw.head(2).to_json(orient="records"))
        ),
        model_dir,
    )
    scorer = serving.Scorer(model_dir)
    scorer.check(raw)
    with pytest.raises(InputError, match="missing 1"):
        scorer.check(raw.drop(columns=["colour"]))
    with pytest.raises(InputError, match="expected numbers"):
        scorer.check(raw.assign(a="x"))
    expected = torch.softmax(_torch_output(model_dir, raw), dim=1).numpy()
    np.testing.assert_allclose(
        scorer.predict(raw).filter(like="probability_").to_numpy(), expected, rtol=1e-5, atol=1e-6
    )


def test_feedback_keeps_answers_up_to_a_row_bound_oldest_first() -> None:
    from tasks.serving.feedback import Feedback

    feedback = Feedback("classification", ["0", "1"], None)
    feedback.max_rows = 10
    first = feedback.answered(None, ["0"] * 6)
    second = feedback.answered(None, ["1"] * 4)
    third = feedback.answered(None, ["1"] * 4)  # 14 rows held: the oldest answer goes
    with pytest.raises(InputError, match="request_id"):
        feedback.label([(first, ["0"] * 6)])
    assert feedback.label([(second, ["1"] * 4)]) == 4
    assert feedback._rows == 4  # labelled rows leave the bound too
    assert feedback.label([(third, ["0"] * 4)]) == 4
    assert feedback.take_quality() == (0.5, 8)
