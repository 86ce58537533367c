"""Cooling thresholds: bundled files load by name; bad ones give one line naming field, value and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from thresholds import SCENARIO_DIR
from thresholds.cooling.schema import load, parse, path_of
from thresholds.errors import InputError


@pytest.mark.parametrize(("name", "env"), [("cooling-room", "room"), ("cooling-seed", "seed")])
def test_bundled_load_by_name(name: str, env: str) -> None:
    scenario = load(name)
    assert scenario.name == name and scenario.env == env
    assert path_of(name) == SCENARIO_DIR / f"{name}.yaml"
    assert scenario.training.hidden_units == (64, 32)  # the paper's network
    t = scenario.targets
    assert t.min_energy_saved_pct is not None or t.min_saved_vs_best_controller_pct is not None


def test_room_scenario_holds_the_issue_targets() -> None:
    room = load("cooling-room")
    t = room.targets
    assert t.min_saved_vs_best_controller_pct == 5.0 and t.max_minutes_outside_vs_best_controller == 0
    assert t.min_energy_saved_pct is None  # the 21 C thermostat is no bar
    assert len(room.evaluation.seeds) >= 5 and not set(room.evaluation.seeds) & set(room.evaluation.training_years)
    seed = load("cooling-seed")
    assert (
        seed.targets.min_energy_saved_pct == 68.0
        and seed.training.epsilon == 0.3
        and seed.training.memory_transitions == 3000
    )


def test_fixture_loads_by_path() -> None:
    assert load(str(FIXTURES / "cooling-quick.yaml")).evaluation.days == 3


BAD: list[tuple[str, str, str]] = [
    ("unknown key", "name: x\ntargets:\n  min_saving: 3\n", "targets.min_saving"),
    ("string for a number", "name: x\ntargets:\n  max_train_energy_j: lots\n", "targets.max_train_energy_j"),
    ("negative energy", "name: x\ntargets:\n  max_inference_energy_j_per_year: -1\n", "joules per simulated year"),
    ("NaN", "name: x\ntargets:\n  min_energy_saved_pct: .nan\n", "targets.min_energy_saved_pct"),
    ("saving over 100 %", "name: x\ntargets:\n  min_energy_saved_pct: 120\n", "percent saved"),
    ("unknown environment", "name: x\nenv: garage\n", "env"),
    ("zero attempts", "name: x\nbudget:\n  max_attempts: 0\n", "budget.max_attempts"),
    ("one hidden layer", "name: x\ntraining:\n  hidden_units: [64]\n", "training.hidden_units"),
    ("discount of 1", "name: x\ntraining:\n  discount: 1.0\n", "training.discount"),
    ("duplicate seeds", "name: x\nevaluation:\n  seeds: [1, 1]\n", "distinct"),
    ("a held-out year trained on", "name: x\nevaluation:\n  seeds: [7, 8]\n  training_years: [8, 9]\n", "share [8]"),
    ("band min >= max", "name: x\nroom_env:\n  recommended_min_temperature_c: 28\n", "recommended_min_temperature_c"),
    ("negative users", "name: x\nseed_env:\n  workload:\n    min_users: -3\n", "seed_env.workload.min_users"),
    ("empty month table", "name: x\nseed_env:\n  monthly_atmospheric_temperature_c: []\n", "12 monthly values"),
    ("band outside the safe range", "name: x\nseed_env:\n  safe_max_temperature_c: 20\n", "inside the safe range"),
    ("missing name", "env: room\n", "name"),
    ("list document", "- a\n", "document"),
    ("broken YAML", "name: x\ntargets: [\n", "valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_thresholds_fail_with_one_line(case: str, text: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load(str(path))
    message = str(err.value)
    assert needle in message, message
    assert "\n" not in message and "expected" in message


def test_missing_file_names_the_bundled_choices() -> None:
    with pytest.raises(InputError, match="cooling-room, cooling-seed"):
        load("cooling-nowhere")


def test_parse_rejects_a_non_mapping() -> None:
    with pytest.raises(InputError, match="document"):
        parse(["x"])
