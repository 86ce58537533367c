"""Each rung on a tiny model: shapes, accuracy within bounds, reload round-trip; and the calibration."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import platform
from pathlib import Path

import pytest
import torch

from tasks.compression import distill, onnx_runtime
from tasks.data.datasets import CachedData, load_cached, prepare
from tasks.energy_loop.calibrate import calibrate
from tasks.energy_loop.candidate import run_step
from tasks.meters.runtime import stabilise_allocator
from tasks.meters.simple import FixedPowerMeter, ReplayMeter
from tasks.models import factory as models
from tasks.models.train import TrainConfig, fit
from thresholds.energy.policy import CandidateResult, Step, StepKind
from thresholds.energy.schema import Scenario


@pytest.fixture(scope="module")
def digits_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(prepare("digits", tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def digits(digits_path: str) -> CachedData:
    return load_cached(digits_path)


def _trained_mlp(data: CachedData, hidden: list[int] | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.build(
        models.ModelSpec(in_features=data.n_features, out_features=data.out_features, hidden=hidden or [64, 32])
    )
    fit(model, data, TrainConfig(max_epochs=30, patience=3, batch_size=128))
    return model


def _accuracy(model: torch.nn.Module, data: CachedData) -> float:
    with torch.no_grad():
        return (model(data.x_test).argmax(1) == data.y_test).float().mean().item()


def test_mixed_precision_training_reaches_fp32_accuracy(digits: CachedData) -> None:
    torch.manual_seed(0)
    model = models.build(models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features))
    fit(model, digits, TrainConfig(max_epochs=30, patience=3, batch_size=128, autocast=True))
    assert next(model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast
    assert _accuracy(model, digits) > 0.9


@pytest.mark.parametrize(
    ("device", "override", "dtype", "scaled"),
    [
        ("cpu", None, torch.bfloat16, False),
        ("cuda", None, torch.float16, True),
        ("cpu", "fp16", torch.float16, True),
        ("cuda", "bf16", torch.bfloat16, False),
    ],
)
def test_amp_settings_per_device(device: str, override: str | None, dtype: torch.dtype, scaled: bool) -> None:
    from tasks.models.train import amp_settings

    assert amp_settings(device, True, override) == (dtype, scaled)
    assert amp_settings(device, False, override)[1] is False  # no scaler without autocast


def test_fp16_training_with_a_grad_scaler(digits: CachedData) -> None:
    """The CUDA recipe (fp16 autocast + GradScaler), exercised on this CPU: scaled steps still learn."""
    torch.manual_seed(0)
    model = models.build(models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features))
    report = fit(
        model, digits, TrainConfig(max_epochs=30, patience=3, batch_size=128, autocast=True, autocast_dtype="fp16")
    )
    assert next(model.parameters()).dtype == torch.float32
    assert all(math.isfinite(v) for v in report.train_losses) and report.train_losses[-1] < report.train_losses[0]
    assert _accuracy(model, digits) > 0.9


def test_distilled_student_is_half_as_wide_and_close_to_the_teacher(digits: CachedData) -> None:
    teacher = _trained_mlp(digits)
    spec = distill.student_spec(
        models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features, history=["early-stopping"]),
        0.5,
    )
    assert spec.hidden == [32, 16] and spec.history == ["early-stopping", "distill:0.5"]
    torch.manual_seed(0)
    student = models.build(spec)
    report, labelling_j = distill.distill(
        teacher, student, digits, TrainConfig(max_epochs=40, patience=3, batch_size=128), meter=ReplayMeter([0.5])
    )
    assert labelling_j == 0.5 and report.energy_j == 0.5 * report.epochs_run
    assert models.count_params(student) < models.count_params(teacher) / 2
    assert _accuracy(student, digits) > _accuracy(teacher, digits) - 0.05


def test_distillation_loss_is_zero_alpha_cross_entropy_and_needs_a_fraction() -> None:
    teacher_out = torch.randn(8, 3)
    y = torch.randint(0, 3, (8,))
    out = torch.randn(8, 3)
    hard_only = distill.distillation_loss(teacher_out, y, "classification", 4.0, alpha=0.0)
    assert hard_only(out, torch.arange(8)).item() == pytest.approx(torch.nn.functional.cross_entropy(out, y).item())
    soft_only = distill.distillation_loss(teacher_out, y, "classification", 4.0, alpha=1.0)
    assert soft_only(teacher_out, torch.arange(8)).item() == pytest.approx(0.0, abs=1e-6)  # the teacher matches itself
    with pytest.raises(ValueError, match="width_factor"):
        distill.student_spec(models.ModelSpec(in_features=4, out_features=2), 1.5)


def _scenario(**measurement: object) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "rungs",
            "training": {"max_epochs": 20, "patience": 2, "batch_size": 128, "fine_tune_epochs": 3},
            "measurement": {
                "inference_batch_size": 128,
                "min_window_s": 0.01,
                "repeats_min": 2,
                "repeats_max": 2,
                **measurement,
            },
        }
    )


def test_every_rung_runs_through_run_step_and_reloads(tmp_path: Path, digits_path: str) -> None:
    scenario = _scenario()
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    steps = [
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.MIXED_PRECISION, value="autocast", parent=0),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1),
        Step(kind=StepKind.DISTILL, value=0.5, parent=1),
        Step(kind=StepKind.PRECISION, value="int8", parent=3),
    ]
    for step in steps:
        result = run_step(scenario, step, history, digits_path, tmp_path, meter)
        assert result.ok, result.rejected_reason
        history.append(result)
    lineages = [c.lineage for c in history]
    assert lineages == [
        [],
        ["early-stopping"],
        ["early-stopping", "mixed-precision:bf16"],
        ["early-stopping", "prune:0.5"],
        ["early-stopping", "distill:0.5"],
        ["early-stopping", "prune:0.5", "precision:int8"],
    ]
    baseline = history[0]
    for c in history:
        assert c.accuracy is not None and c.accuracy > 0.85, (c.lineage, c.accuracy)
        assert c.inference_repeats == 2 and c.analytic_inference_energy_j_per_1k is not None
        model, spec = models.load(Path(c.model_dir or ""))
        assert spec.history == c.lineage
    # A child's training energy is its lineage: parent's plus its own fine-tuning / distillation.
    assert history[3].train_energy_j > history[1].train_energy_j  # type: ignore[operator]
    assert history[5].train_energy_j == history[3].train_energy_j
    assert history[3].params < baseline.params / 2  # type: ignore[operator]
    assert "macs_before" in history[3].tags and "teacher_params" in history[4].tags


class ConvOnTable(torch.nn.Module):
    """A user's model: the table's features lifted to a 1x8x8 image, a residual block with BatchNorm."""

    def __init__(self, features: int, n_outputs: int) -> None:
        super().__init__()
        self.lift = torch.nn.Linear(features, 64)
        self.stem = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(32)
        self.head = torch.nn.Linear(32, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(self.lift(x).view(-1, 1, 8, 8)))
        h = torch.relu(h + self.bn(self.conv(h)))
        return self.head(h.mean(dim=(2, 3)))


def conv_on_table(input_shape: tuple[int, ...], n_outputs: int) -> torch.nn.Module:
    return ConvOnTable(input_shape[0], n_outputs)


def test_a_users_model_goes_through_the_rungs_and_int8_is_skipped_with_the_reason(
    tmp_path: Path, digits_path: str
) -> None:
    scenario = Scenario.model_validate(
        {
            **_scenario().model_dump(include={"name", "measurement"}),
            "training": {"max_epochs": 8, "patience": 2, "batch_size": 128, "fine_tune_epochs": 2},
            "model": {"factory": "tests.tasks.energy_loop.test_candidate:conv_on_table"},
        }
    )
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    steps = [
        Step(kind=StepKind.EARLY_STOPPING),
        Step(kind=StepKind.PRUNE, value=0.5, parent=0),
        Step(kind=StepKind.DISTILL, value=0.5, parent=0),
        Step(kind=StepKind.PRECISION, value="bf16", parent=1),
        Step(kind=StepKind.PRECISION, value="int8", parent=1),
        Step(kind=StepKind.QAT, value="int8", parent=1),
    ]
    for step in steps:
        history.append(run_step(scenario, step, history, digits_path, tmp_path, meter))
    assert [c.ok for c in history] == [True, True, True, True, False, False]
    assert all("static (PT2E)" in (c.rejected_reason or "") for c in history[4:])
    assert [c.not_applicable for c in history] == [False] * 4 + [True] * 2  # refused: no iteration of the budget used
    base, pruned, student = history[:3]
    assert pruned.params < base.params / 2 and pruned.macs < base.macs / 2  # type: ignore[operator]
    assert student.params < base.params and student.lineage == ["early-stopping", "distill:0.5"]  # type: ignore[operator]
    for c in history[:4]:
        assert c.accuracy is not None and c.accuracy > 0.5, (c.lineage, c.accuracy)
        model, spec = models.load(Path(c.model_dir or ""))
        assert spec.factory == "tests.tasks.energy_loop.test_candidate:conv_on_table" and spec.history == c.lineage
        assert models.count_params(model) == c.params


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mmapped_blocks_for(libc: ctypes.CDLL, size_bytes: int) -> int:
    """How many new mmapped blocks one malloc of `size_bytes` takes (pages are never touched)."""
    before = libc.mallinfo2().hblks
    pointer = libc.malloc(ctypes.c_size_t(size_bytes))
    assert pointer
    try:
        return int(libc.mallinfo2().hblks - before)
    finally:
        libc.free(ctypes.c_void_p(pointer))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc tunables only")
def test_stabilise_allocator_pins_glibcs_mmap_threshold() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    assert stabilise_allocator() is True
    # 64 MiB is above glibc's own dynamic ceiling (32 MiB), so it would be mmapped without the pin;
    # pinned at 256 MiB it comes from the heap. The 512 MiB control shows the probe sees an mmap.
    assert _mmapped_blocks_for(libc, 64 << 20) == 0
    assert _mmapped_blocks_for(libc, 512 << 20) == 1


class ThreadsSeen(FixedPowerMeter):
    """A fixed-power meter that notes torch's thread count in every window it measures."""

    def __init__(self) -> None:
        super().__init__(10.0)
        self.threads: list[tuple[str, int]] = []

    def _begin(self, label: str) -> None:
        self.threads.append((label, torch.get_num_threads()))


def test_inference_is_measured_at_the_scenarios_threads_and_they_are_recorded(tmp_path: Path, digits_path: str) -> None:
    scenario = _scenario(inference_threads=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        meter = ThreadsSeen()
        result = run_step(scenario, Step(kind=StepKind.BASELINE), [], digits_path, tmp_path, meter)
        assert result.ok, result.rejected_reason
        assert {n for label, n in meter.threads if "inference" in label} == {1}
        assert {n for label, n in meter.threads if "inference" not in label} == {2}  # training: the process's own count
        assert torch.get_num_threads() == 2  # and put back after
        assert onnx_runtime.runtime_of(Path(result.model_dir or "")).threads == 1  # the served model reads it back
        assert result.tags["serving.threads"] == "1"
    finally:
        torch.set_num_threads(before)


def test_calibration_is_measured_once_per_machine_and_cached(tmp_path: Path) -> None:
    first = calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=256, window_s=0.02, repeats=1)
    assert set(first.inference_ratio) == {"int8", "fp16", "bf16"} and set(first.train_ratio) == {"autocast"}
    assert all(v > 0 for v in first.inference_ratio.values())
    cached = list(tmp_path.glob("calibration-*.json"))
    assert len(cached) == 1
    assert calibrate(FixedPowerMeter(5.0), tmp_path, batch_size=256) == first  # read back, not re-measured


def test_analytic_calibration_says_int8_helps_on_a_45nm_device() -> None:
    from tasks.energy_loop.calibrate import analytic_calibration

    table = analytic_calibration(4096)
    assert table.inference_ratio["int8"] < 0.1 < table.inference_ratio["fp16"] < 1.0
    assert table.helps(table.inference_ratio, "int8", 3.0)


@pytest.mark.parametrize(
    ("options", "label", "hidden"),
    [
        ({"pruning_importance": "taylor"}, "prune:0.5(taylor)", [32, 16]),
        ({"pruning_global": True}, "prune:0.5(global)", None),
        ({"pruning_iterative_steps": 2}, "prune:0.5(x2)", [32, 16]),
    ],
)
def test_pruning_options_run_and_reload(
    tmp_path: Path, digits_path: str, options: dict[str, object], label: str, hidden: list[int] | None
) -> None:
    scenario = _scenario()
    scenario = scenario.model_copy(update={"ladder": scenario.ladder.model_copy(update=options)})
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    for step in (
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1),
    ):
        history.append(run_step(scenario, step, history, digits_path, tmp_path, meter))
    pruned = history[-1]
    assert pruned.ok and pruned.lineage == ["early-stopping", label]
    _, spec = models.load(Path(pruned.model_dir or ""))
    assert sum(spec.hidden) < 96 * 0.6 and (hidden is None or spec.hidden == hidden)
    assert pruned.accuracy is not None and pruned.accuracy > 0.8  # 3 fine-tune epochs only


def test_quantization_aware_training_rung(tmp_path: Path, digits_path: str) -> None:
    scenario = _scenario()
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    for step in (
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.QAT, value="int8", parent=1),
    ):
        history.append(run_step(scenario, step, history, digits_path, tmp_path, meter))
    qat = history[-1]
    assert qat.ok and qat.lineage == ["early-stopping", "qat:int8"]
    model, spec = models.load(Path(qat.model_dir or ""))
    assert spec.precision == "int8"
    assert not any("parametrizations" in k for k in model.state_dict())  # fake quantizers removed before saving
    assert qat.accuracy is not None and qat.accuracy > 0.85
    assert (
        qat.train_energy_j is not None
        and history[1].train_energy_j is not None
        and qat.train_energy_j > history[1].train_energy_j
    )


def test_pareto_front_and_pick() -> None:
    from tasks.compression.search import Point, pareto_front, pick

    a = Point(hidden=[64], val_accuracy=0.95, energy_j_per_1k=4.0, train_energy_j=1.0)
    b = Point(hidden=[32], val_accuracy=0.93, energy_j_per_1k=2.0, train_energy_j=1.0)
    c = Point(hidden=[48], val_accuracy=0.92, energy_j_per_1k=3.0, train_energy_j=1.0)  # dominated by b
    d = Point(hidden=[8], val_accuracy=0.80, energy_j_per_1k=0.5, train_energy_j=1.0)
    assert pareto_front([a, b, c, d]) == [d, b, a]
    assert pick(pareto_front([a, b, c, d])) == a and pick([]) is None
    twin = Point(hidden=[16, 16], val_accuracy=0.95, energy_j_per_1k=3.5, train_energy_j=1.0)
    assert pick(pareto_front([a, twin])) == twin  # equally accurate: the cheaper one


def test_architecture_search_rung_keeps_the_energy_cap(tmp_path: Path, digits_path: str) -> None:
    import json

    scenario = _scenario().model_copy(
        update={
            "ladder": _scenario().ladder.model_copy(
                update={"search_hidden": [[16], [8, 8], [256, 256]], "search_max_energy_vs_baseline": 0.5}
            )
        }
    )
    meter = FixedPowerMeter(10.0)
    history = [run_step(scenario, Step(kind=StepKind.BASELINE), [], digits_path, tmp_path, meter)]
    history.append(run_step(scenario, Step(kind=StepKind.SEARCH, parent=0), history, digits_path, tmp_path, meter))
    found = history[1]
    assert found.ok, found.rejected_reason
    cap = float(found.tags["search.cap_j_per_1k"])
    baseline_j = history[0].analytic_inference_energy_j_per_1k
    assert baseline_j is not None and baseline_j > 0
    assert cap == pytest.approx(baseline_j * 0.5, rel=1e-5)
    tried = json.loads(found.tags["search.points"])
    assert [p["hidden"] for p in tried] == [[16], [8, 8]]  # 256-256 is over the cap: never trained
    front = json.loads(found.tags["search.pareto"])
    assert all(p["energy_j_per_1k"] <= cap for p in front)
    model, spec = models.load(Path(found.model_dir or ""))
    assert spec.hidden in [p["hidden"] for p in front] and spec.history[-1].startswith("search:")
    assert found.analytic_inference_energy_j_per_1k is not None and 0 < found.analytic_inference_energy_j_per_1k <= cap
    assert found.accuracy is not None and found.accuracy > 0.8
    assert found.train_energy_j == pytest.approx(
        sum(p["train_energy_j"] for p in tried)
    )  # the whole search is its cost


def test_a_search_with_nothing_under_the_cap_is_rejected_not_fatal(tmp_path: Path, digits_path: str) -> None:
    scenario = _scenario().model_copy(
        update={
            "ladder": _scenario().ladder.model_copy(
                update={"search_hidden": [[512, 512]], "search_max_energy_vs_baseline": 0.1}
            )
        }
    )
    meter = FixedPowerMeter(10.0)
    history = [run_step(scenario, Step(kind=StepKind.BASELINE), [], digits_path, tmp_path, meter)]
    rejected = run_step(scenario, Step(kind=StepKind.SEARCH, parent=0), history, digits_path, tmp_path, meter)
    assert not rejected.ok and rejected.not_applicable and "fits the energy cap" in (rejected.rejected_reason or "")


def test_larger_batch_recipe_and_its_children_train_at_that_batch(tmp_path: Path, digits_path: str) -> None:
    from tasks.energy_loop.candidate import batch_factor

    assert batch_factor(["early-stopping", "batch:4", "prune:0.5"]) == 4 and batch_factor(["early-stopping"]) == 1
    scenario = _scenario()
    meter = FixedPowerMeter(10.0)
    history = [run_step(scenario, Step(kind=StepKind.BASELINE), [], digits_path, tmp_path, meter)]
    history.append(
        run_step(scenario, Step(kind=StepKind.BATCH, value=4.0, parent=0), history, digits_path, tmp_path, meter)
    )
    big = history[1]
    assert big.ok and big.lineage == ["early-stopping", "batch:4"]
    assert big.accuracy is not None and big.accuracy > 0.8
    history.append(
        run_step(scenario, Step(kind=StepKind.PRUNE, value=0.5, parent=1), history, digits_path, tmp_path, meter)
    )
    assert history[2].lineage[:2] == ["early-stopping", "batch:4"] and batch_factor(history[2].lineage) == 4


def test_lineages_record_their_training_runs_by_kind_of_work(tmp_path: Path, digits_path: str) -> None:
    """The baseline and the recipe train the same work (their epochs are priced alike); a pruned model's
    lineage is its parent's runs plus its fine-tune, on a different architecture; precision trains nothing."""
    scenario = _scenario()
    meter = FixedPowerMeter(10.0)
    history: list[CandidateResult] = []
    steps = (
        Step(kind=StepKind.BASELINE),
        Step(kind=StepKind.EARLY_STOPPING, parent=0),
        Step(kind=StepKind.PRUNE, value=0.5, parent=1),
        Step(kind=StepKind.PRECISION, value="fp16", parent=2),
    )
    for step in steps:
        history.append(run_step(scenario, step, history, digits_path, tmp_path, meter))
    base, recipe, pruned, half = history
    assert [s.origin for s in base.train_segments] == [0] and [s.origin for s in recipe.train_segments] == [1]
    assert base.train_segments[0].work == recipe.train_segments[0].work
    assert base.train_segments[0].epochs == base.epochs_run and recipe.train_segments[0].epochs == recipe.epochs_run
    assert (
        pruned.train_segments[0] == recipe.train_segments[0]
        and pruned.train_segments[-1].work != recipe.train_segments[0].work
    )
    assert half.train_segments == pruned.train_segments
    assert base.train_ratio_vs_baseline == pytest.approx(1.0)
    assert recipe.train_ratio_vs_baseline == pytest.approx(
        recipe.train_segments[0].epochs / base.train_segments[0].epochs
    )
    assert (
        pruned.train_ratio_vs_baseline is not None and pruned.train_ratio_vs_baseline > recipe.train_ratio_vs_baseline
    )
