"""The request models: one field per option, checked in one place, every bad value one line named as typed."""

from __future__ import annotations

from typing import Any

import pytest

from thresholds.cooling.request import ENVIRONMENTS, CoolingRequest
from thresholds.cooling.schema import CoolingScenario
from thresholds.core import METER_NAMES
from thresholds.energy.request import IMAGE_CACHE_MODES, LoopRequest, parse_size
from thresholds.errors import InputError
from thresholds.request import Naming, check_given, fields, from_text, parse

BASE = {"scenario": "dev-cpu", "dataset": "digits"}


@pytest.mark.parametrize(
    ("changes", "flag", "key"),
    [
        ({"samples": 3}, "--samples = 3: expected an integer >= 20", "samples = 3: expected an integer >= 20"),
        ({"samples": "many"}, "--samples = 'many': expected an integer >= 20", "samples = 'many'"),
        ({"image_size": "0x0"}, "--image-size = '0x0': expected HxW in pixels", "image_size = '0x0': expected HxW"),
        ({"image_cache": "disk"}, "--image-cache = 'disk': expected one of memory, stream, auto", "image_cache = "),
        ({"task_type": "ranking"}, "--task = 'ranking': expected one of auto, classification", "task_type = "),
        ({"meter": "wattmeter"}, "--meter = 'wattmeter': expected one of auto, codecarbon", "meter = 'wattmeter'"),
        ({"parallel": "0"}, "--parallel = '0': expected auto or an integer from 1 to 64", "parallel = '0'"),
        ({"parallel": "many"}, "--parallel = 'many': expected auto or an integer", "parallel = 'many'"),
        ({"target": 3}, "--target = 3: expected a valid string", "target = 3: expected a valid string"),
        (
            {"serving_batch_sizes": "1,x"},
            "--serving-batch-sizes = '1,x': expected comma-separated batch sizes",
            "serving_batch_sizes = '1,x': expected comma-separated",
        ),
        (
            {"serving_batch_sizes": [0]},
            "--serving-batch-sizes = [0]: expected comma-separated batch sizes",
            "serving_batch_sizes = [0]",
        ),
    ],
)
def test_a_bad_field_is_one_line_named_as_the_person_typed_it(changes: dict[str, Any], flag: str, key: str) -> None:
    for naming, needle in ((Naming.FLAG, flag), (Naming.KEY, key)):
        with pytest.raises(InputError) as raised:
            parse(LoopRequest, {**BASE, **changes}, naming)
        assert needle in str(raised.value) and "\n" not in str(raised.value), raised.value


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"scenario": "dev-cpu"}, "dataset = None: expected a value (this option is required)"),
        ({**BASE, "sample": 3}, "sample = 3: expected one of the energy loop's options: scenario, dataset, target"),
        ("dev-cpu", "request = 'dev-cpu': expected a mapping of the energy loop's options (scenario, dataset"),
        ({1: "dev-cpu"}, "request = {1: 'dev-cpu'}: expected a mapping"),
    ],
    ids=["missing", "unknown key", "not a mapping", "not keyed by name"],
)
def test_a_malformed_request_is_one_line(raw: object, needle: str) -> None:
    with pytest.raises(InputError, match=None) as raised:
        parse(LoopRequest, raw)
    assert needle in str(raised.value), raised.value


def test_good_values_are_normalised_once() -> None:
    request = parse(LoopRequest, {**BASE, "samples": "3000", "parallel": "AUTO", "image_size": "32"})
    assert request.samples == 3000 and request.parallel == "auto" and request.image_size == "32"
    assert parse(LoopRequest, {**BASE, "parallel": "4"}).parallel == 4
    assert parse(LoopRequest, request) is request  # a request passes as it is
    assert parse_size("32x24") == (32, 24) and parse_size("28") == (28, 28)
    assert request.hooks == {"loss": None, "metric": None, "train_step": None}
    # What a deployment or a Python caller leaves out: the flow's defaults (`run` forces parallel `auto`).
    assert LoopRequest(**BASE).parallel == 1 and LoopRequest(**BASE).work_root == ".energy-loop"


def test_every_field_has_its_flag_help_and_choices() -> None:
    energy = {f.name: f for f in fields(LoopRequest)}
    assert [f.name for f in energy.values() if f.required] == ["scenario", "dataset"]
    assert all(f.option.flag.startswith("--") and f.help for f in energy.values())
    assert energy["image_cache"].choices == IMAGE_CACHE_MODES and energy["meter"].choices == METER_NAMES
    assert energy["parallel"].choices is None and energy["parallel"].option.command_default == "auto"
    assert energy["samples"].integer and not energy["dataset"].integer
    flags = [f.option.flag for f in energy.values()]
    assert len(set(flags)) == len(flags)
    cooling = {f.name: f for f in fields(CoolingRequest)}
    assert cooling["env"].choices == ENVIRONMENTS == tuple(CoolingScenario.model_fields["env"].annotation.__args__)
    assert cooling["scenario"].required and not cooling["months"].required  # `cooling run` requires --scenario


def test_key_value_text_becomes_what_the_field_takes() -> None:
    assert from_text(LoopRequest, "samples", "3000") == 3000
    assert from_text(LoopRequest, "parallel", "2") == 2 and from_text(LoopRequest, "parallel", "auto") == "auto"
    assert from_text(LoopRequest, "model_name", "123") == "123"  # a name stays a name
    assert from_text(CoolingRequest, "days", "-2") == -2


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"env": "attic"}, "env = 'attic': expected one of seed, room"),
        ({"months": "x"}, "months = 'x': expected an integer"),
        ({"meter": "wattmeter"}, "meter = 'wattmeter': expected one of"),
        ({"agent": "dqn"}, "agent = 'dqn': expected one of the cooling loop's options: scenario, env, months"),
    ],
)
def test_the_cooling_request_is_checked_the_same_way(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(InputError) as raised:
        parse(CoolingRequest, {"scenario": "cooling-room", **changes})
    assert needle in str(raised.value)
    # The period's range is the scenario's to check, with the scenario as a whole (tasks/cooling/inputs.py).
    assert parse(CoolingRequest, {"months": 0}).months == 0


def test_the_schema_a_deployment_form_shows_names_every_option() -> None:
    schema = LoopRequest.model_json_schema()
    assert schema["required"] == ["scenario", "dataset"] and schema["additionalProperties"] is False
    assert schema["properties"]["samples"]["anyOf"][0]["minimum"] == 20
    assert set(schema["properties"]["image_cache"]["enum"]) == set(IMAGE_CACHE_MODES)
    assert all(p.get("description") for p in schema["properties"].values())


def test_given_fields_are_checked_alone_the_rest_left_to_the_deployment() -> None:
    check_given(LoopRequest, {"samples": 3000})  # scenario and dataset: the deployment's
    with pytest.raises(InputError, match="samples = 3: expected an integer >= 20"):
        check_given(LoopRequest, {"samples": 3})
    with pytest.raises(InputError, match="days = 'x': expected an integer"):
        check_given(CoolingRequest, {"days": "x"})


def test_serving_batch_sizes_arrive_as_text_or_as_a_list_and_override_the_scenarios() -> None:
    from tasks.energy_loop.inputs import check_request

    assert parse(LoopRequest, {**BASE, "serving_batch_sizes": "64,1,64"}).serving_batch_sizes == [1, 64]
    request = parse(LoopRequest, {**BASE, "serving_batch_sizes": [16]})  # as a breach's automation renders it
    assert check_request(request).measurement.batch_sizes_served == [16]
    assert check_request(parse(LoopRequest, BASE)).measurement.serving_batch_sizes is None


def test_the_figures_a_breach_missed_arrive_as_text_or_as_a_list() -> None:
    assert parse(LoopRequest, {**BASE, "production_breach": "energy,quality"}).production_breach == [
        "energy",
        "quality",
    ]
    assert parse(LoopRequest, {**BASE, "production_breach": ["latency"]}).production_breach == ["latency"]
