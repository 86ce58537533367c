"""The rung table: every rung kind is one entry of `RUNGS` and has one producer. Every property the policy reads about
a rung comes from its entry, and the entry agrees with its producer, the `Ladder` schema and the walk."""

from __future__ import annotations

import pytest

from tasks.energy_loop import producers
from tasks.energy_loop.candidate import PRODUCERS
from thresholds.energy.policy import (
    COMPRESSED,
    DERIVED,
    INFERENCE_TARGETS,
    QUALITY_TARGETS,
    RECIPE_VARIANTS,
    REFERENCES,
    RUNG,
    RUNGS,
    SERVING_FORMS,
    TRAINING_MOVES,
    TRAINING_TARGETS,
    Calibration,
    CandidateResult,
    Next,
    Rung,
    Step,
    StepKind,
    decide,
    serving_forms,
)
from thresholds.energy.policy.rungs import LADDER_WIDE
from thresholds.energy.policy.walk import LadderWalk
from thresholds.energy.schema import Ladder, Scenario

K = StepKind


def test_every_rung_kind_has_one_table_entry_and_one_producer() -> None:
    kinds = [rung.kind for rung in RUNGS]
    assert sorted(kinds) == sorted(StepKind) and len(kinds) == len(set(kinds))
    assert RUNG == {rung.kind: rung for rung in RUNGS}
    assert set(PRODUCERS) == set(StepKind)
    assert all(callable(PRODUCERS[kind]) for kind in StepKind)
    with pytest.raises(ValueError, match="'fuse' has a producer already: fuse_form"):
        producers.producer(K.FUSE)(producers.precision)
    assert PRODUCERS[K.FUSE] is producers.fuse_form  # the refused registration changed nothing


def test_the_baseline_comes_first_and_the_ladder_keeps_its_order() -> None:
    assert [rung.kind.value for rung in RUNGS] == [
        "baseline", "early-stopping", "mixed-precision", "batch", "prune", "distill", "search", "fuse",
        "precision", "qat", "ort",
        "prune-early", "prune-es", "scratch",  # training-cost moves: only a missed training target picks them
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kinds", "field", "expected"),
    [
        (REFERENCES, "reference", {K.BASELINE, K.EARLY_STOPPING}),
        (RECIPE_VARIANTS, "recipe_variant", {K.MIXED_PRECISION, K.BATCH}),
        (COMPRESSED, "compressed", {K.PRUNE, K.DISTILL, K.SEARCH, K.PRUNE_EARLY, K.PRUNE_ES}),
        (DERIVED, "derived", {K.PRUNE, K.DISTILL, K.PRUNE_ES, K.FUSE, K.PRECISION, K.QAT, K.ORT}),
        (SERVING_FORMS, "serving_form", {K.FUSE, K.PRECISION, K.QAT, K.ORT}),
        (TRAINING_MOVES, "training_move", {K.PRUNE_EARLY, K.PRUNE_ES, K.SCRATCH}),
    ],
)
def test_each_tuple_of_rung_kinds_is_what_the_table_says(
    kinds: tuple[StepKind, ...], field: str, expected: set[StepKind]
) -> None:
    assert kinds == tuple(rung.kind for rung in RUNGS if getattr(rung, field))  # derived from the entries, in order
    assert set(kinds) == expected


@pytest.mark.parametrize("r", RUNGS, ids=[rung.kind.value for rung in RUNGS])
def test_the_properties_of_a_rung_agree_with_each_other(r: Rung) -> None:
    assert r.what
    gate_checks = {*QUALITY_TARGETS, *INFERENCE_TARGETS, *TRAINING_TARGETS}
    assert set(r.targets) <= gate_checks and len(r.targets) == len(set(r.targets))
    assert r.targets or r.kind == K.BASELINE  # every rung but the reference moves some target
    walked = not r.training_move and r.kind != K.BASELINE  # `decide` measures the baseline before any walk
    assert (r.move is not None or r.tried_at is not None) == walked
    if r.serving_form:
        assert r.derived and not (r.compressed or r.recipe_variant or r.training_move or r.reference)
        assert set(INFERENCE_TARGETS) <= set(r.targets)
    if r.tried_at is not None:  # a served form: the shared move, nothing of its own
        assert r.serving_form and r.move is None and r.siblings is None and "{parent}" in r.why
    else:
        assert not r.why
    if r.training_move:  # picked only by training_moves.py: the walk passes over it
        assert r.move is None and r.siblings is None and set(r.targets) == set(TRAINING_TARGETS)
        assert not (r.serving_form or r.recipe_variant or r.reference)
    if r.recipe_variant:  # the recipe retrained: the same model, cheaper to train
        assert set(r.targets) == set(TRAINING_TARGETS) and not (r.compressed or r.derived or r.serving_form)


def test_every_ladder_field_a_rung_names_exists_and_every_field_configures_a_rung_or_the_walk() -> None:
    fields = set(Ladder.model_fields)
    named = {name for rung in RUNGS for name in rung.configured_by}
    assert named <= fields, f"not Ladder fields: {sorted(named - fields)}"
    assert set(LADDER_WIDE) <= fields and not set(LADDER_WIDE) & named
    assert fields == named | set(LADDER_WIDE), f"configures nothing: {sorted(fields - named - set(LADDER_WIDE))}"


def _scenario(**ladder: object) -> Scenario:
    every_form = {"fuse_inference": True, "precisions": ["int8", "fp16"], "onnx_runtime": ["fp32", "int8"]}
    return Scenario.model_validate(
        {
            "name": "t",
            "targets": {"max_accuracy_drop_pt": 2.0, "max_inference_energy_vs_baseline": 0.5},
            "ladder": {**every_form, "min_gain_pct": 3.0, **ladder},
        }
    )


def _c(
    index: int, kind: StepKind, value: float | str | None = None, parent: int | None = None, inf: float = 1.0
) -> CandidateResult:
    step = Step(kind=kind, value=value, parent=parent)
    return CandidateResult(
        index=index,
        step=step,
        lineage=[step.label],
        accuracy=0.90,
        inference_energy_j_per_1k=inf,
        latency_ms_per_batch=inf,
        train_energy_j=100.0,
        energy_source="replay",
        model_dir=f"/m/{index}",
    )


HISTORY = [_c(0, K.BASELINE), _c(1, K.EARLY_STOPPING, parent=0), _c(2, K.PRUNE, 0.3, parent=1, inf=0.8)]
PARENT = HISTORY[2]  # the best fp32 model: kept (20 % cheaper than the recipe), misses 0.5x
SERVED = [rung for rung in RUNGS if rung.tried_at is not None]


def test_the_serving_forms_offered_to_a_passing_model_are_the_served_forms_of_the_table_in_ladder_order() -> None:
    s = _scenario()
    offered = serving_forms(s, HISTORY, PARENT, None)
    assert [f.label for f in offered] == ["fuse", "precision:int8", "precision:fp16", "ort:fp32", "ort:int8"]
    kinds = [f.kind for f in offered]
    assert kinds == sorted(kinds, key=[r.kind for r in SERVED].index)  # table order
    assert {f.kind for f in offered} == {r.kind for r in SERVED} and all(f.parent == PARENT.index for f in offered)
    no_fp16 = Calibration(machine="m", inference_ratio={"fp16": 1.1})  # this machine showed fp16 is not cheaper
    assert "precision:fp16" not in [f.label for f in serving_forms(s, HISTORY, PARENT, no_fp16)]
    fused = _c(3, K.FUSE, parent=PARENT.index, inf=0.7)
    assert "fuse" not in [f.label for f in serving_forms(s, [*HISTORY, fused], PARENT, None)]  # measured: once
    elsewhere = fused.model_copy(update={"step": fused.step.model_copy(update={"parent": 1})})
    assert "fuse" in [f.label for f in serving_forms(s, [*HISTORY, elsewhere], PARENT, None)]  # another parent's


@pytest.mark.parametrize("r", SERVED, ids=[rung.kind.value for rung in SERVED])
def test_the_ladder_field_a_served_form_names_turns_it_off(r: Rung) -> None:
    (field,) = r.configured_by
    off = _scenario(**{field: type(getattr(Ladder(), field))()})  # false, or an empty list
    offered = {f.kind for f in serving_forms(off, HISTORY, PARENT, None)}
    assert offered == {other.kind for other in SERVED} - {r.kind}


@pytest.mark.parametrize("r", SERVED, ids=[rung.kind.value for rung in SERVED])
def test_the_walk_offers_a_served_form_of_the_best_fp32_model_at_each_value_the_table_gives(r: Rung) -> None:
    s = _scenario()
    walk = LadderWalk.at(s, HISTORY, None)
    forms = [f for f in serving_forms(s, HISTORY, PARENT, None) if f.kind == r.kind]
    first = r.next(walk)
    assert isinstance(first, Next) and first.step == forms[0] and f"#{PARENT.index}" in first.why
    assert r.alongside(walk, first.step) == forms[1:]
    tried = [*HISTORY, _c(3, r.kind, forms[0].value, parent=PARENT.index, inf=0.7)]
    again = r.next(LadderWalk.at(s, tried, None))
    assert (again.step if again is not None else None) == (forms[1] if len(forms) > 1 else None)


def test_a_passing_model_is_served_next_in_the_first_form_the_table_offers() -> None:
    s = _scenario()
    passing = _c(3, K.PRUNE, 0.5, parent=1, inf=0.4)
    history = [*HISTORY, passing]
    step = decide(s, history)
    assert isinstance(step, Next) and step.step == serving_forms(s, history, passing, None)[0]
