"""Property-based: whatever document arrives, the schema either returns a valid Scenario or raises
one `InputError` line naming a field; it never crashes with anything else and never accepts a
value outside the documented range."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresholds.energy.schema import Scenario, load_scenario, parse_scenario
from thresholds.errors import InputError

SECTIONS = ["targets", "budget", "training", "measurement", "ladder", "model"]
FIELDS = {name: sorted(getattr(Scenario.model_fields[name].annotation, "model_fields", {})) for name in SECTIONS}
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def documents(draw: st.DrawFn) -> object:
    """Mostly well-shaped scenarios with random values in real fields, sometimes random junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    doc: dict[str, object] = {"name": draw(st.one_of(st.text(min_size=1, max_size=12), values))}
    for section in draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=4)):
        keys = draw(st.lists(st.sampled_from(FIELDS[section] + ["bogus_key"]), unique=True, max_size=3))
        doc[section] = {k: draw(values) for k in keys}
    return doc


def _check_error(exc: InputError) -> None:
    line = str(exc)
    assert "\n" not in line and "expected" in line and exc.field


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_any_document_gives_a_scenario_or_one_line_error(doc: object) -> None:
    try:
        scenario = parse_scenario(doc)
    except InputError as exc:
        _check_error(exc)
        return
    t, b = scenario.targets, scenario.budget
    for value in (
        t.min_accuracy,
        t.max_accuracy_drop_pt,
        t.max_inference_energy_j_per_1k,
        t.max_train_energy_j,
        b.max_total_energy_j,
    ):
        assert value is None or (math.isfinite(value) and value >= 0)
    assert t.min_accuracy is None or t.min_accuracy <= 1
    assert 1 <= b.max_iterations <= 100
    assert scenario.training.patience <= scenario.training.max_epochs
    ratios = scenario.ladder.pruning_ratios
    assert all(0 < r < 1 for r in ratios) and ratios == sorted(set(ratios))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_file_gives_a_scenario_or_one_line_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_scenario(path)
        except InputError as exc:
            _check_error(exc)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=1, allow_nan=False), st.integers(min_value=1, max_value=100))
def test_valid_values_round_trip_through_yaml(min_accuracy: float, iterations: int) -> None:
    doc = {"name": "p", "targets": {"min_accuracy": min_accuracy}, "budget": {"max_iterations": iterations}}
    scenario = parse_scenario(yaml.safe_load(yaml.safe_dump(doc)))
    assert scenario.targets.min_accuracy == min_accuracy and scenario.budget.max_iterations == iterations
    assert parse_scenario(scenario.model_dump(mode="json")) == scenario
