"""Rungs as a table: every rung kind has one entry in the policy's ladder and one producer that makes it."""

from __future__ import annotations

from tasks.energy_loop.candidate import PRODUCERS
from thresholds.energy.policy import RUNGS, StepKind


def test_every_rung_kind_has_one_table_entry_and_one_producer() -> None:
    kinds = [rung.kind for rung in RUNGS]
    assert sorted(kinds) == sorted(StepKind) and len(kinds) == len(set(kinds))
    assert set(PRODUCERS) == set(StepKind)
    assert all(callable(PRODUCERS[kind]) for kind in StepKind)


def test_the_baseline_comes_first_and_the_ladder_keeps_its_order() -> None:
    assert [rung.kind.value for rung in RUNGS] == [
        "baseline", "early-stopping", "mixed-precision", "batch", "prune", "distill", "search", "fuse",
        "precision", "qat", "ort",
        "prune-early", "prune-es", "scratch",  # training-cost moves: only a missed training target picks them
    ]  # fmt: skip
