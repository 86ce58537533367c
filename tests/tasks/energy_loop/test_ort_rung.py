"""The onnxruntime rung: exported, served by an onnxruntime session, measured paired with its torch
parent at the serving batch sizes on a replayed meter, and kept only on a measured gain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.compression import onnx_runtime
from tasks.data.datasets import prepare
from tasks.energy_loop.candidate import run_step
from tasks.meters.simple import FixedPowerMeter, ReplayMeter
from thresholds.energy.policy import CandidateResult, Step, StepKind, kept
from thresholds.energy.schema import Scenario


@pytest.fixture(scope="module")
def digits_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(prepare("digits", tmp_path_factory.mktemp("data")))


def _scenario() -> Scenario:
    # A negligible window: every window is exactly 20 batches, so a replayed energy gives a known J per 1k.
    measurement = {
        "min_window_s": 1e-6,
        "repeats_min": 2,
        "repeats_max": 4,
        "serving_batch_sizes": [1, 64],
        "inference_batch_size": 64,
    }
    return Scenario.model_validate(
        {"name": "ort", "training": {"max_epochs": 3, "patience": 1, "batch_size": 128}, "measurement": measurement}
    )


@pytest.fixture(scope="module")
def baseline(digits_path: str, tmp_path_factory: pytest.TempPathFactory) -> CandidateResult:
    result = run_step(
        _scenario(),
        Step(kind=StepKind.BASELINE),
        [],
        digits_path,
        tmp_path_factory.mktemp("work"),
        FixedPowerMeter(10.0),
    )
    assert result.ok, result.rejected_reason
    return result


def _needs_onnx() -> None:
    from tests.conftest import require

    require(onnx_runtime.unavailable() is None, "the ONNX extra (pip install -e '.[onnx]')")


@pytest.mark.parametrize(
    ("windows_j", "keep", "why"),
    [
        (
            [4.0, 2.0, 2.0, 4.0],
            True,
            "saved 50.0% inference cost vs #0 (paired)",
        ),  # ABBA: torch 4 J, onnxruntime 2 J per window
        ([4.0, 4.0, 4.0, 4.0], False, "saved 0.0%"),  # no gain: not kept
    ],
)
def test_the_onnxruntime_rung_is_measured_paired_at_each_serving_size_and_kept_only_on_a_gain(
    tmp_path: Path, digits_path: str, baseline: CandidateResult, windows_j: list[float], keep: bool, why: str
) -> None:
    _needs_onnx()
    scenario = _scenario()
    result = run_step(
        scenario,
        Step(kind=StepKind.ORT, value="fp32", parent=0),
        [baseline],
        digits_path,
        tmp_path,
        ReplayMeter(windows_j),
    )
    assert result.ok, result.rejected_reason
    assert result.lineage == ["ort:fp32"]
    assert result.tags["serving.runtime"] == "onnxruntime" and result.tags["serving.precision"] == "fp32"
    assert result.tags["serving.batch_sizes"] == "1,64"
    expected = windows_j[1] / windows_j[0]
    assert result.inference_ratio_vs_baseline == pytest.approx(expected)
    assert result.tags["inference_ratio_at_batch_1"] == result.tags["inference_ratio_at_batch_64"] == f"{expected:.6g}"
    assert result.inference_pairs == 4  # two pairs at each of the two sizes
    assert result.accuracy == pytest.approx(baseline.accuracy)  # fp32 onnxruntime computes what torch computes
    assert result.train_energy_j == baseline.train_energy_j  # nothing trained
    model_dir = Path(result.model_dir or "")
    assert (model_dir / onnx_runtime.ONNX_FILE).is_file() and onnx_runtime.runtime_of(
        model_dir
    ).runtime == "onnxruntime"
    ok, reason = kept(scenario, [baseline, result], result)
    assert ok is keep and why in reason, reason


def test_int8_under_onnxruntime_is_a_second_option_served_from_a_quantized_graph(
    tmp_path: Path, digits_path: str, baseline: CandidateResult
) -> None:
    _needs_onnx()
    result = run_step(
        _scenario(),
        Step(kind=StepKind.ORT, value="int8", parent=0),
        [baseline],
        digits_path,
        tmp_path,
        ReplayMeter([4.0, 3.0, 3.0, 4.0]),
    )
    assert result.ok, result.rejected_reason
    assert result.tags["serving.precision"] == "int8" and result.lineage == ["ort:int8"]
    assert result.inference_ratio_vs_baseline == pytest.approx(0.75)
    assert abs((result.accuracy or 0.0) - (baseline.accuracy or 0.0)) < 0.05
    onnx_file = Path(result.model_dir or "") / onnx_runtime.ONNX_FILE
    assert sorted(p.name for p in onnx_file.parent.glob("*.onnx")) == [
        onnx_runtime.ONNX_FILE
    ]  # the fp32 graph is not left behind
    assert (
        onnx_file.stat().st_size < 0.5 * (Path(baseline.model_dir or "") / "state_dict.pt").stat().st_size
    )  # int8 weights


def test_without_onnxruntime_the_rung_is_not_applicable(
    tmp_path: Path, digits_path: str, baseline: CandidateResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_runtime, "unavailable", lambda: "needs onnxruntime: pip install -e '.[onnx]'")
    result = run_step(
        _scenario(),
        Step(kind=StepKind.ORT, value="fp32", parent=0),
        [baseline],
        digits_path,
        tmp_path,
        ReplayMeter([1.0]),
    )
    assert (
        not result.ok and result.rejected_reason == "the onnxruntime rung needs onnxruntime: pip install -e '.[onnx]'"
    )
    assert result.model_dir is None
