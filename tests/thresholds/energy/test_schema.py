"""Scenario validation: bundled files load; bad ones give one clear line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresholds import SCENARIO_DIR, scenario_path
from thresholds.energy.schema import Scenario, load_scenario, parse_scenario
from thresholds.errors import InputError


@pytest.mark.parametrize("name", ["dev-cpu", "strict", "impossible", "paper", "paper-serving", "edge-45nm", "byo-cpu"])
def test_bundled_scenarios_load(name: str) -> None:
    scenario = load_scenario(scenario_path(name))
    assert scenario.name == name
    assert scenario_path(name) == SCENARIO_DIR / f"{name}.yaml"


BAD: list[tuple[str, str, str]] = [
    ("unknown key", "name: x\ntargets:\n  max_acuracy: 0.9\n", "targets.max_acuracy"),
    ("string for a number", "name: x\ntargets:\n  min_accuracy: 'high'\n", "targets.min_accuracy"),
    ("accuracy as percent", "name: x\ntargets:\n  min_accuracy: 95\n", "fraction in [0, 1]"),
    ("negative energy", "name: x\ntargets:\n  max_train_energy_j: -5\n", "targets.max_train_energy_j"),
    ("NaN", "name: x\ntargets:\n  max_inference_energy_j_per_1k: .nan\n", "targets.max_inference_energy_j_per_1k"),
    ("infinite budget", "name: x\nbudget:\n  max_total_energy_j: .inf\n", "budget.max_total_energy_j"),
    ("zero iterations", "name: x\nbudget:\n  max_iterations: 0\n", "budget.max_iterations"),
    ("absurd iterations", "name: x\nbudget:\n  max_iterations: 1000000\n", "budget.max_iterations"),
    ("float iterations", "name: x\nbudget:\n  max_iterations: 2.5\n", "budget.max_iterations"),
    ("missing name", "targets: {}\n", "name"),
    ("ratio out of range", "name: x\nladder:\n  pruning_ratios: [0.3, 1.2]\n", "ladder.pruning_ratios"),
    ("ratios decreasing", "name: x\nladder:\n  pruning_ratios: [0.5, 0.3]\n", "strictly increasing"),
    ("unknown precision", "name: x\nladder:\n  precisions: [int4]\n", "ladder.precisions"),
    ("search width zero", "name: x\nladder:\n  search_hidden: [[32, 0]]\n", "ladder.search_hidden"),
    (
        "search cap above the baseline",
        "name: x\nladder:\n  search_max_energy_vs_baseline: 1.5\n",
        "ladder.search_max_energy_vs_baseline",
    ),
    ("unknown meter", "name: x\nmeasurement:\n  meter: wattmeter\n", "measurement.meter"),
    ("patience beyond epochs", "name: x\ntraining:\n  max_epochs: 3\n  patience: 5\n", "patience"),
    ("list document", "- a\n- b\n", "document"),
    ("empty document", "", "document"),
    ("broken YAML", "name: x\ntargets: [\n", "valid YAML"),
    ("tab indentation", "name: x\ntargets:\n\tmin_accuracy: 0.9\n", "valid YAML"),
    ("zero hidden width", "name: x\nmodel:\n  hidden: [64, 0]\n", "model.hidden"),
    (
        "serving batch size zero",
        "name: x\nmeasurement:\n  serving_batch_sizes: [0, 64]\n",
        "measurement.serving_batch_sizes",
    ),
    (
        "serving batch sizes decreasing",
        "name: x\nmeasurement:\n  serving_batch_sizes: [64, 1]\n",
        "strictly increasing batch sizes",
    ),
    (
        "serving batch sizes repeated",
        "name: x\nmeasurement:\n  serving_batch_sizes: [1, 1]\n",
        "measurement.serving_batch_sizes",
    ),
    (
        "serving batch sizes empty",
        "name: x\nmeasurement:\n  serving_batch_sizes: []\n",
        "measurement.serving_batch_sizes",
    ),
    (
        "serving batch size as text",
        "name: x\nmeasurement:\n  serving_batch_sizes: [one]\n",
        "measurement.serving_batch_sizes",
    ),
    ("measurement budget under a second", "name: x\nmeasurement:\n  measure_budget_s: 0.5\n", "measure_budget_s"),
    ("call share of a window zero", "name: x\nmeasurement:\n  max_call_window_share: 0\n", "max_call_window_share"),
    ("unknown onnxruntime precision", "name: x\nladder:\n  onnx_runtime: [int4]\n", "ladder.onnx_runtime"),
    ("kept layer not a module name", "name: x\nmodel:\n  keep_layers: ['stem/0']\n", "model.keep_layers"),
    ("kept layer twice", "name: x\nmodel:\n  keep_layers: [head, head]\n", "model.keep_layers"),
    ("student not an entry point", "name: x\nmodel:\n  student: students.py\n", "model.student"),
]


@pytest.mark.parametrize(("text", "needle"), [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_scenarios_give_one_line_naming_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    assert needle in message
    assert str(path) in message


def test_missing_file_and_huge_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected an existing YAML file"):
        load_scenario(tmp_path / "nope.yaml")
    huge = tmp_path / "huge.yaml"
    huge.write_text("name: x\n" + "# pad\n" * 100_000)
    with pytest.raises(InputError, match="scenario size"):
        load_scenario(huge)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        load_scenario(path)


def test_relative_and_absolute_targets_together() -> None:
    s = parse_scenario(
        {"name": "x", "targets": {"max_inference_energy_j_per_1k": 0.5, "max_inference_energy_vs_baseline": 0.6}}
    )
    assert s.targets.max_inference_energy_vs_baseline == 0.6
    assert s.targets.max_inference_energy_j_per_1k == 0.5


def test_analytic_target_needs_an_mlp() -> None:
    with pytest.raises(InputError, match="fully connected models only"):
        parse_scenario({"name": "x", "measurement": {"inference_target": "analytic-45nm"}, "model": {"kind": "cnn1d"}})
    with pytest.raises(InputError, match="fully connected models only"):
        parse_scenario(
            {
                "name": "x",
                "measurement": {"inference_target": "analytic-45nm"},
                "model": {"factory": "examples.resnet_digits:make"},
            }
        )
    assert load_scenario(scenario_path("edge-45nm")).measurement.inference_target == "analytic-45nm"


def test_the_scenario_names_its_promotion_mode() -> None:
    assert parse_scenario({"name": "x"}).promotion == "warn"
    assert parse_scenario({"name": "x", "promotion": "enforce"}).promotion == "enforce"
    with pytest.raises(Exception, match="promotion"):
        parse_scenario({"name": "x", "promotion": "block"})


def test_serving_batch_sizes_default_to_the_single_measurement_batch_size() -> None:
    assert parse_scenario(
        {"name": "x", "measurement": {"inference_batch_size": 512}}
    ).measurement.batch_sizes_served == [512]
    served = parse_scenario({"name": "x", "measurement": {"serving_batch_sizes": [1, 64]}}).measurement
    assert (
        served.batch_sizes_served == [1, 64] and served.inference_batch_size == 1024
    )  # the analytic estimate's size stays


def test_the_onnxruntime_rung_is_on_the_ladder_unless_the_scenario_empties_it() -> None:
    assert parse_scenario({"name": "x"}).ladder.onnx_runtime == ["fp32", "int8"]
    assert parse_scenario({"name": "x", "ladder": {"onnx_runtime": []}}).ladder.onnx_runtime == []


def test_kept_layers_and_a_student_factory_parse() -> None:
    model = Scenario.model_validate(
        {"name": "x", "model": {"keep_layers": ["stages.0.conv1", "head"], "student": "examples.transformer_seq:make"}}
    ).model
    assert model.keep_layers == ["stages.0.conv1", "head"] and model.student == "examples.transformer_seq:make"
