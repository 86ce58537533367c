"""The escalation policy as a table: (history, scenario) -> next step or final state."""

from __future__ import annotations

import math

import pytest

from thresholds.energy.policy import (
    Calibration,
    CandidateResult,
    ChampionFigures,
    Final,
    FinalState,
    Next,
    Step,
    StepKind,
    beats_champion,
    decide,
    gate,
    iterations_used,
    kept,
    plan_batch,
)
from thresholds.energy.schema import Scenario

B, ES, PR, PC = StepKind.BASELINE, StepKind.EARLY_STOPPING, StepKind.PRUNE, StepKind.PRECISION
MP, DI = StepKind.MIXED_PRECISION, StepKind.DISTILL


LADDER = {
    "pruning_ratios": [0.3, 0.5, 0.7],
    "precisions": ["int8", "fp16"],
    "min_gain_pct": 3.0,
    "onnx_runtime": [],
    "fuse_inference": False,
    "serve_every_form": False,
}  # ORT, fuse, the forms of a passing model: own tests
SHORT = {**LADDER, "mixed_precision_training": False, "distill_width_factors": [], "accuracy_backoff": False}


def scenario(ladder: dict[str, object] | None = None, **targets: float) -> Scenario:
    """A test scenario; by default the short ladder (early stopping, pruning, precision)."""
    return Scenario.model_validate(
        {
            "name": "t",
            "targets": targets or {"max_accuracy_drop_pt": 2.0, "max_inference_energy_vs_baseline": 0.5},
            "budget": {"max_iterations": 12, "max_total_energy_j": 1000.0},
            "ladder": SHORT if ladder is None else ladder,
        }
    )


def c(
    index: int,
    kind: StepKind,
    value: float | str | None = None,
    parent: int | None = None,
    acc: float = 0.90,
    inf: float = 1.0,
    train: float = 100.0,
    spent: float = 10.0,
    rejected: str | None = None,
) -> CandidateResult:
    step = Step(kind=kind, value=value, parent=parent)
    return CandidateResult(
        index=index,
        step=step,
        lineage=[] if kind == B else [step.label],
        accuracy=None if rejected else acc,
        inference_energy_j_per_1k=None if rejected else inf,
        latency_ms_per_batch=None if rejected else inf,
        train_energy_j=None if rejected else train,
        spent_energy_j=spent,
        rejected_reason=rejected,
        energy_source="replay",
        model_dir=None if rejected else f"/m/{index}",
    )


BASE = c(0, B)
RECIPE = c(1, ES, parent=0, inf=1.0, train=50.0)
P3 = c(2, PR, 0.3, parent=1, inf=0.8)
P5 = c(3, PR, 0.5, parent=1, inf=0.6)
P7_BAD = c(4, PR, 0.7, parent=1, acc=0.80, inf=0.45)

TABLE: list[tuple[str, list[CandidateResult], Scenario, tuple[str, object, int | None]]] = [
    ("empty history measures the baseline", [], scenario(), ("next", B, None)),
    ("baseline then the early-stopping recipe", [BASE], scenario(), ("next", ES, 0)),
    (
        "a failed baseline ends the loop",
        [c(0, B, rejected="loss became nan")],
        scenario(),
        ("final", FinalState.FAILED, None),
    ),
    ("recipe misses: prune 30% of the recipe", [BASE, RECIPE], scenario(), ("next", PR, 1)),
    ("pruning goes on to the next ratio", [BASE, RECIPE, P3], scenario(), ("next", PR, 1)),
    (
        "accuracy broken by 70%: precision on the best kept fp32",
        [BASE, RECIPE, P3, P5, P7_BAD],
        scenario(),
        ("next", PC, 3),
    ),
    (
        "a slower int8 is not kept: fp16 still starts from #3",
        [BASE, RECIPE, P3, P5, P7_BAD, c(5, PC, "int8", parent=3, inf=1.2)],
        scenario(),
        ("next", PC, 3),
    ),
    (
        "ladder exhausted without a pass",
        [BASE, RECIPE, P3, P5, P7_BAD, c(5, PC, "int8", parent=3, inf=1.2), c(6, PC, "fp16", parent=3, inf=1.1)],
        scenario(),
        ("final", FinalState.FAILED, None),
    ),
    (
        "latest candidate meets every target",
        [BASE, RECIPE, P3, c(3, PR, 0.5, parent=1, inf=0.4)],
        scenario(),
        ("final", FinalState.PASSED, 3),
    ),
    (
        "recipe alone can pass",
        [BASE, RECIPE],
        scenario(max_train_energy_vs_baseline=0.6),
        ("final", FinalState.PASSED, 1),
    ),
    (
        "iterations used up",
        [BASE, RECIPE, P3],
        scenario().model_copy(update={"budget": scenario().budget.model_copy(update={"max_iterations": 3})}),
        ("final", FinalState.BUDGET_EXHAUSTED, None),
    ),
    (
        "energy budget used up",
        [c(0, B, spent=600.0), c(1, ES, parent=0, spent=500.0)],
        scenario(),
        ("final", FinalState.BUDGET_EXHAUSTED, None),
    ),
    (
        "a diverged pruning run breaks pruning: go to precision",
        [BASE, RECIPE, c(2, PR, 0.3, parent=1, rejected="loss became inf")],
        scenario(),
        ("next", PC, 1),
    ),
    (
        "a diverged recipe: pruning starts from the baseline",
        [BASE, c(1, ES, parent=0, rejected="loss became nan")],
        scenario(),
        ("next", PR, 0),
    ),
]


FULL = scenario(LADDER)
MP_SLOW = c(2, MP, "autocast", parent=0, train=60.0)
MP_FAST = c(2, MP, "autocast", parent=0, train=30.0)
INT8_HURTS = Calibration(
    machine="2-core cpu", inference_ratio={"int8": 2.7, "fp16": 1.3, "bf16": 15.0}, train_ratio={"autocast": 1.4}
)
INT8_HELPS = Calibration(machine="edge npu", inference_ratio={"int8": 0.4, "fp16": 0.7}, train_ratio={"autocast": 0.6})
FULL_TABLE: list[tuple[str, list[CandidateResult], Calibration | None, tuple[str, object, int | None]]] = [
    (
        "no training target: a model that misses only inference is not retrained under autocast",
        [BASE, RECIPE],
        None,
        ("next", PR, 1),
    ),
    ("calibration says autocast costs more here: skip it", [BASE, RECIPE], INT8_HURTS, ("next", PR, 1)),
    ("slower autocast is not kept: prune the early-stopping recipe", [BASE, RECIPE, MP_SLOW], None, ("next", PR, 1)),
    ("faster autocast is kept: prune it", [BASE, RECIPE, MP_FAST], None, ("next", PR, 2)),
    (
        "pruning done: distil the best fp32 model",
        [
            BASE,
            RECIPE,
            MP_SLOW,
            c(3, PR, 0.3, parent=1, inf=0.8),
            c(4, PR, 0.5, parent=1, inf=0.6),
            c(5, PR, 0.7, parent=1, acc=0.5),
        ],
        None,
        ("next", DI, 4),
    ),
    (
        "after distillation: int8 when calibration says it helps",
        [BASE, RECIPE, MP_SLOW, c(3, PR, 0.3, parent=1, acc=0.5), c(4, DI, 0.5, parent=1, inf=0.7)],
        INT8_HELPS,
        ("next", PC, 4),
    ),
    (
        "int8 PTQ broke accuracy where int8 helps: quantization-aware training of its parent",
        [
            *[BASE, RECIPE, MP_SLOW, c(3, PR, 0.3, parent=1, acc=0.5), c(4, DI, 0.5, parent=1, inf=0.7)],
            *[c(5, PC, "int8", parent=4, acc=0.8, inf=0.2), c(6, PC, "fp16", parent=4, inf=0.69)],
        ],
        INT8_HELPS,
        ("next", StepKind.QAT, 4),
    ),
    (
        "calibration says no precision helps here: the ladder ends",
        [BASE, RECIPE, MP_SLOW, c(3, PR, 0.3, parent=1, acc=0.5), c(4, DI, 0.5, parent=1, inf=0.7)],
        INT8_HURTS,
        ("final", FinalState.FAILED, None),
    ),
]


FULL_TABLE.append(
    (
        "search after distillation when the scenario lists architectures",
        [BASE, RECIPE, MP_SLOW, c(3, PR, 0.3, parent=1, acc=0.5), c(4, DI, 0.5, parent=1, inf=0.7)],
        None,
        ("next", StepKind.SEARCH, 1),
    )
)
SEARCHING = scenario({**LADDER, "search_hidden": [[32, 16], [16]]})
BT = StepKind.BATCH
# A training target below the baseline's cost leaves no room for a fine-tune on the recipe: the cheaper recipes come
# first.
TIGHT = {"max_accuracy_drop_pt": 2.0, "max_inference_energy_vs_baseline": 0.5, "max_train_energy_vs_baseline": 0.9}
BATCHING = scenario({**LADDER, "training_batch_factors": [4]}, **TIGHT)
BATCH_TABLE_ROWS: list[tuple[str, list[CandidateResult], tuple[str, object, int | None]]] = [
    ("after mixed precision: the recipe at a larger batch", [BASE, RECIPE, MP_SLOW], ("next", BT, 0)),
    (
        "a cheaper larger-batch recipe is the compression base",
        [BASE, RECIPE, MP_SLOW, c(3, BT, 4.0, parent=0, train=25.0)],
        ("next", PR, 3),
    ),
    (
        "a larger batch that saves nothing is not kept",
        [BASE, RECIPE, MP_SLOW, c(3, BT, 4.0, parent=0, train=55.0)],
        ("next", PR, 1),
    ),
    ("the cheapest kept variant wins", [BASE, RECIPE, MP_FAST, c(3, BT, 4.0, parent=0, train=25.0)], ("next", PR, 3)),
    (
        "a larger batch that loses accuracy is not kept",
        [BASE, RECIPE, MP_SLOW, c(3, BT, 4.0, parent=0, acc=0.8, train=20.0)],
        ("next", PR, 1),
    ),
]


@pytest.mark.parametrize(
    ("history", "expected"), [r[1:] for r in BATCH_TABLE_ROWS], ids=[r[0] for r in BATCH_TABLE_ROWS]
)
def test_training_batch_rung(history: list[CandidateResult], expected: tuple[str, object, int | None]) -> None:
    _check(decide(BATCHING, history), expected)


@pytest.mark.parametrize(
    ("history", "calibration", "expected"), [row[1:] for row in FULL_TABLE], ids=[row[0] for row in FULL_TABLE]
)
def test_decide_full_ladder(
    history: list[CandidateResult], calibration: Calibration | None, expected: tuple[str, object, int | None]
) -> None:
    settings = SEARCHING if expected[1] == StepKind.SEARCH else FULL
    _check(decide(settings, history, calibration), expected)


def test_calibration_can_be_switched_off() -> None:
    off = scenario({**LADDER, "use_calibration": False}, **TIGHT)
    assert decide(off, [BASE, RECIPE], INT8_HURTS).step.kind == MP  # type: ignore[union-attr]


def test_cheaper_recipes_come_first_only_when_the_training_target_is_below_the_baseline() -> None:
    tight, roomy = scenario(LADDER, **TIGHT), scenario(LADDER, **{**TIGHT, "max_train_energy_vs_baseline": 1.2})
    assert decide(tight, [BASE, RECIPE]).step.kind == MP  # type: ignore[union-attr]
    assert decide(roomy, [BASE, RECIPE]).step.kind == PR  # type: ignore[union-attr]
    # A missed training target brings them back (the recipe's training variants are the first training-cost moves).
    over = c(2, PR, 0.5, parent=1, inf=0.4, train=130.0)
    nxt = decide(roomy, [BASE, RECIPE, over])
    assert isinstance(nxt, Next) and nxt.step.kind == MP and nxt.target == "train_energy_vs_baseline"


@pytest.mark.parametrize(("history", "settings", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_decide(history: list[CandidateResult], settings: Scenario, expected: tuple[str, object, int | None]) -> None:
    _check(decide(settings, history), expected)


def _check(decision: object, expected: tuple[str, object, int | None]) -> None:
    kind, what, index = expected
    if kind == "next":
        assert isinstance(decision, Next), decision
        assert decision.step.kind == what
        assert decision.step.parent == index
    else:
        assert isinstance(decision, Final), decision
        assert decision.state == what
        assert decision.chosen == index
        assert decision.reason


def test_pruning_ratios_increase_and_precisions_follow_the_ladder_order() -> None:
    s = scenario()
    assert decide(s, [BASE, RECIPE]).step.value == 0.3  # type: ignore[union-attr]
    assert decide(s, [BASE, RECIPE, P3]).step.value == 0.5  # type: ignore[union-attr]
    assert decide(s, [BASE, RECIPE, P3, P5]).step.value == 0.7  # type: ignore[union-attr]
    assert decide(s, [BASE, RECIPE, P3, P5, P7_BAD]).step.value == "int8"  # type: ignore[union-attr]


def test_budget_reason_names_the_closest_candidate_and_what_it_missed() -> None:
    s = scenario()
    final = decide(
        s.model_copy(update={"budget": s.budget.model_copy(update={"max_iterations": 4})}), [BASE, RECIPE, P3, P5]
    )
    assert isinstance(final, Final)
    assert "closest was #3" in final.reason
    assert "inference_energy_vs_baseline 0.6x > 0.5x" in final.reason


@pytest.mark.parametrize(
    ("candidate", "keep", "why"),
    [
        (c(2, PR, 0.3, parent=1, inf=0.98), False, "saved 2.0%"),
        (c(2, PR, 0.3, parent=1, inf=0.90), True, "saved 10.0%"),
        (c(2, PR, 0.3, parent=1, inf=0.5, acc=0.85), False, "accuracy"),
        (c(2, PC, "int8", parent=1, inf=2.76), False, "saved -176.0%"),
        (c(2, PR, 0.3, parent=1, rejected="loss became nan"), False, "rejected"),
    ],
)
def test_kept_only_when_measured_gain_and_quality_hold(candidate: CandidateResult, keep: bool, why: str) -> None:
    ok, reason = kept(scenario(), [BASE, RECIPE, candidate], candidate)
    assert ok is keep
    assert why in reason


@pytest.mark.parametrize(
    ("targets", "candidate", "failed"),
    [
        ({"min_accuracy": 0.95}, c(1, ES, acc=0.94), ["accuracy"]),
        ({"max_accuracy_drop_pt": 1.0}, c(1, ES, acc=0.885), ["accuracy_drop_pt"]),
        ({"max_inference_energy_j_per_1k": 0.5}, c(1, ES, inf=0.6), ["inference_energy_j_per_1k"]),
        (
            {"max_train_energy_j": 10.0, "max_train_energy_vs_baseline": 0.4},
            c(1, ES, train=50.0),
            ["train_energy_j", "train_energy_vs_baseline"],
        ),
        (
            {"max_latency_ms_per_batch": 2.0, "max_latency_vs_baseline": 0.99},
            c(1, ES, inf=1.0),
            ["latency_vs_baseline"],
        ),
        ({"min_accuracy": 0.5, "max_inference_energy_vs_baseline": 1.0}, c(1, ES), []),
    ],
)
def test_gate_checks_every_target_that_is_set(
    targets: dict[str, float], candidate: CandidateResult, failed: list[str]
) -> None:
    report = gate(scenario(**targets).targets, candidate, BASE)
    assert [x.name for x in report.failed] == failed
    assert report.passed is (not failed)


def test_gate_on_regression_uses_rmse() -> None:
    base = CandidateResult(index=0, step=Step(kind=B), rmse=2.0, inference_energy_j_per_1k=1.0)
    worse = CandidateResult(index=1, step=Step(kind=ES), rmse=2.5, inference_energy_j_per_1k=1.0)
    report = gate(scenario(max_rmse=3.0, max_rmse_increase_pct=10.0).targets, worse, base)
    assert [x.name for x in report.failed] == ["rmse_increase_pct"]


@pytest.mark.parametrize(
    ("champion", "wins", "why"),
    [
        (None, True, "no champion"),
        (ChampionFigures("replay", 0.5, accuracy=0.9), True, "< champion"),
        (ChampionFigures("replay", 0.3, accuracy=0.9), False, "above the champion's 0.3 J/1k beyond noise"),
        (ChampionFigures("replay", 0.5, accuracy=0.95), False, "more than 1 pt below"),
        (ChampionFigures("nvml", 0.5, accuracy=0.9), False, "not comparable"),
        (ChampionFigures("replay", None, accuracy=0.9), True, "no recorded inference energy"),
    ],
)
def test_beats_champion(champion: ChampionFigures | None, wins: bool, why: str) -> None:
    candidate = c(3, PR, 0.5, parent=1, inf=0.4, acc=0.9)
    ok, reason = beats_champion(candidate, champion)
    assert ok is wins
    assert why in reason


def test_a_gain_inside_the_noise_is_not_kept() -> None:
    noisy_parent = RECIPE.model_copy(update={"inference_energy_sem_j_per_1k": 0.05})
    child = c(2, PR, 0.3, parent=1, inf=0.9).model_copy(update={"inference_energy_sem_j_per_1k": 0.05})
    ok, reason = kept(scenario(), [BASE, noisy_parent, child], child)
    assert not ok and "noise, not a gain" in reason
    clear = c(2, PR, 0.3, parent=1, inf=0.7).model_copy(update={"inference_energy_sem_j_per_1k": 0.05})
    assert kept(scenario(), [BASE, noisy_parent, clear], clear)[0]


@pytest.mark.parametrize(
    ("params", "train", "champion_params", "wins", "why"),
    [
        (1000, 50.0, 2000, True, "simpler (1000 < 2000 params)"),
        (2000, 50.0, 2000, True, "cheaper to train (50 < 80 J)"),
        (2000, 79.0, 2000, False, "it stays"),
        (3000, 50.0, 2000, False, "it stays"),
    ],
)
def test_within_noise_the_simpler_then_cheaper_to_train_model_wins(
    params: int, train: float, champion_params: int, wins: bool, why: str
) -> None:
    candidate = c(3, PR, 0.5, parent=1, inf=0.49, acc=0.9, train=train).model_copy(
        update={"params": params, "inference_energy_sem_j_per_1k": 0.01}
    )
    champion = ChampionFigures(
        energy_source="replay",
        inference_energy_j_per_1k=0.5,
        inference_energy_sem_j_per_1k=0.01,
        accuracy=0.9,
        params=champion_params,
        train_energy_j=80.0,
        train_energy_sem_j=0.5,
    )
    ok, reason = beats_champion(candidate, champion)
    assert ok is wins
    assert "within 2 combined standard errors" in reason and why in reason


def test_energy_gates_judge_the_unfavourable_side_of_the_noise() -> None:
    targets = scenario(max_inference_energy_vs_baseline=0.75).targets
    base = BASE.model_copy(update={"inference_energy_sem_j_per_1k": 0.02})
    lucky = c(1, ES, inf=0.72).model_copy(update={"inference_energy_sem_j_per_1k": 0.02})
    assert gate(targets, lucky, base, sigmas=0.0).passed
    # (0.72 + 2 x 0.02) / (1.0 - 2 x 0.02) = 0.79 > 0.75
    report = gate(targets, lucky, base, sigmas=2.0)
    assert not report.passed and "0.7917x > 0.75x" in report.summary()


def test_payback_counts_every_joule_the_loop_spent() -> None:
    from thresholds.energy.policy import payback

    history = [c(0, B, inf=2.0, spent=30.0), c(1, ES, parent=0, inf=1.5, spent=20.0)]
    back = payback(history, history[1])
    assert back.loop_energy_j == 50.0 and back.saved_j_per_1k == 0.5
    assert back.predictions_to_payback == pytest.approx(100_000)
    assert "pays back after 100,000 predictions" in back.summary()
    assert payback(history, history[0]).predictions_to_payback is None


def test_closest_prefers_a_candidate_that_keeps_quality() -> None:
    from thresholds.energy.policy import closest

    cheap_but_wrong = c(4, DI, 0.5, parent=3, acc=0.5, inf=0.3)  # cheapest, but 40 pt less accurate
    best = closest(scenario(), [BASE, RECIPE, P3, P5, cheap_but_wrong])
    assert best is not None and best.index == 3


def test_candidates_rank_by_their_paired_ratio_not_by_joules_measured_apart() -> None:
    from thresholds.energy.policy import closest

    # #3's windows ran in a slow stretch (more J/1k), yet paired with the baseline it is the cheaper one.
    fast_stretch = c(2, PC, "fp16", parent=1, inf=0.9).model_copy(update={"inference_ratio_vs_baseline": 1.1})
    slow_stretch = c(3, PC, "int8", parent=1, inf=1.4).model_copy(update={"inference_ratio_vs_baseline": 0.56})
    best = closest(scenario(), [BASE, RECIPE, fast_stretch, slow_stretch])
    assert best is not None and best.index == 3


def test_a_pass_on_the_subset_must_hold_on_the_full_test_split() -> None:
    from thresholds.energy.policy import confirm_on_full

    s = scenario(max_accuracy_drop_pt=1.0)
    history = [BASE, c(1, ES, parent=0, acc=0.90, train=50.0)]
    passed = Final(state=FinalState.PASSED, reason="#1 meets every target", chosen=1)
    holds, updated = confirm_on_full(s, passed, history, {0: (0.91, None), 1: (0.905, None)})
    assert holds.state == FinalState.PASSED and "confirmed on the full test split" in holds.reason
    assert updated[1].accuracy == 0.905 and updated[1].tags["subset_accuracy"] == "0.9000"
    breaks, _ = confirm_on_full(s, passed, history, {0: (0.93, None), 1: (0.90, None)})
    assert breaks.state == FinalState.FAILED and "not on the full test split" in breaks.reason
    unchanged, same = confirm_on_full(s, Final(state=FinalState.BUDGET_EXHAUSTED, reason="x"), history, {})
    assert unchanged.state == FinalState.BUDGET_EXHAUSTED and same == history


BATCH_TABLE: list[tuple[str, list[CandidateResult], Scenario, Calibration | None, int, list[str] | FinalState]] = [
    ("width 1 is the serial ladder", [BASE, RECIPE], scenario(), None, 1, ["prune:0.3"]),
    (
        "first batch: all three train from scratch",
        [],
        FULL,
        None,
        3,
        ["baseline", "early-stopping", "mixed-precision:autocast"],
    ),
    ("calibration skips autocast in the first batch too", [], FULL, INT8_HURTS, 3, ["baseline", "early-stopping"]),
    ("width caps the batch", [], FULL, None, 2, ["baseline", "early-stopping"]),
    (
        "pruning ratios at once, all from the same base",
        [BASE, RECIPE],
        scenario(),
        None,
        4,
        ["prune:0.3", "prune:0.5", "prune:0.7"],
    ),
    ("only ratios above the tried ones", [BASE, RECIPE, P3], scenario(), None, 4, ["prune:0.5", "prune:0.7"]),
    (
        "precisions the calibration allows, from the best fp32 model",
        [BASE, RECIPE, MP_SLOW, c(3, PR, 0.3, parent=1, acc=0.5), c(4, DI, 0.5, parent=1, inf=0.7)],
        FULL,
        INT8_HELPS,
        4,
        ["precision:int8", "precision:fp16"],
    ),
    (
        "never beyond the iteration budget",
        [BASE, RECIPE],
        scenario().model_copy(update={"budget": scenario().budget.model_copy(update={"max_iterations": 3})}),
        None,
        4,
        ["prune:0.3"],
    ),
    (
        "a final state is returned as is",
        [BASE, RECIPE, c(2, PR, 0.3, parent=1, inf=0.4)],
        scenario(),
        None,
        4,
        FinalState.PASSED,
    ),
]


@pytest.mark.parametrize(
    ("history", "settings", "calibration", "width", "expected"),
    [r[1:] for r in BATCH_TABLE],
    ids=[r[0] for r in BATCH_TABLE],
)
def test_plan_batch(
    history: list[CandidateResult],
    settings: Scenario,
    calibration: Calibration | None,
    width: int,
    expected: list[str] | FinalState,
) -> None:
    batch = plan_batch(settings, history, calibration, width)
    if isinstance(expected, FinalState):
        assert isinstance(batch, Final) and batch.state == expected
        return
    assert isinstance(batch, list)
    assert [n.step.label for n in batch] == expected
    parents = {n.step.parent for n in batch if n.step.kind in (PR, DI, PC)}
    assert len(parents) <= 1 and all(
        p is None or p < len(history) for p in parents
    )  # siblings never depend on each other


def test_a_parallel_batch_with_several_passes_chooses_the_cheapest() -> None:
    history = [
        BASE,
        RECIPE,
        c(2, PR, 0.3, parent=1, inf=0.45),
        c(3, PR, 0.5, parent=1, inf=0.35),
        c(4, PR, 0.7, parent=1, acc=0.5, inf=0.2),
    ]
    final = decide(scenario(), history)
    assert isinstance(final, Final) and final.state == FinalState.PASSED and final.chosen == 3


# Target-aware escalation: each missed target picks the moves that can fix it.
PE, PES, SC = StepKind.PRUNE_EARLY, StepKind.PRUNE_ES, StepKind.SCRATCH
TRAIN_AWARE = scenario(
    {**SHORT, "accuracy_backoff": True},
    max_accuracy_drop_pt=2.0,
    max_inference_energy_vs_baseline=0.75,
    max_train_energy_vs_baseline=1.2,
)
TP3 = c(2, PR, 0.3, parent=1, inf=0.8, train=140.0)
TP5 = c(3, PR, 0.5, parent=1, inf=0.5, train=140.0)  # meets inference; pruning's fine-tune pushed the lineage to 1.4x
PE5_BROKE = c(4, PE, 0.5, parent=1, acc=0.85, inf=0.5, train=60.0)
PES5 = c(5, PES, 0.5, parent=1, inf=0.5, train=125.0)
LONG7_BAD = c(6, PR, 0.7, parent=1, acc=0.85, inf=0.45).model_copy(
    update={"step": Step(kind=PR, value=0.7, parent=1, epochs=30, target="accuracy_drop_pt")}
)
TAUGHT = {**SHORT, "accuracy_backoff": True, "backoff_teacher": True}
KD7_BAD = c(6, PR, 0.7, parent=1, acc=0.85, inf=0.45).model_copy(
    update={"step": Step(kind=PR, value=0.7, parent=1, teacher=0, target="accuracy_drop_pt")}
)
FUSING = scenario(
    {**SHORT, "fuse_inference": True},
    max_accuracy_drop_pt=2.0,
    max_inference_energy_vs_baseline=0.75,
    max_train_energy_vs_baseline=1.2,
)
# 30 % kept every target but inference; 50 % runs cheaper but its fine-tune took the lineage over 1.2x; 70 % broke
# accuracy.
CHEAP_MISSED_TRAINING = [
    BASE,
    RECIPE,
    c(2, PR, 0.3, parent=1, inf=0.9, train=110.0),
    c(3, PR, 0.5, parent=1, inf=0.8, train=125.0),
    P7_BAD,
]
TARGET_TABLE: list[tuple[str, list[CandidateResult], Scenario, tuple[str, object, int | None], str | None]] = [
    (
        "inference and training missed: compression goes on, for inference",
        [BASE, RECIPE, TP3],
        TRAIN_AWARE,
        ("next", PR, 1),
        "inference_energy_vs_baseline",
    ),
    (
        "only training missed: prune inside the recipe instead of more compression",
        [BASE, RECIPE, TP3, TP5],
        TRAIN_AWARE,
        ("next", PE, 1),
        "train_energy_vs_baseline",
    ),
    (
        "prune-early broke accuracy: prune and fine-tune on the budget the target leaves",
        [BASE, RECIPE, TP3, TP5, PE5_BROKE],
        TRAIN_AWARE,
        ("next", PES, 1),
        "train_energy_vs_baseline",
    ),
    (
        "budgeted fine-tune still too costly: the architecture from scratch",
        [BASE, RECIPE, TP3, TP5, PE5_BROKE, PES5],
        TRAIN_AWARE,
        ("next", SC, 3),
        "train_energy_vs_baseline",
    ),
    (
        "no training move left: pruning 70% would cost at least 1.4x, so the ladder skips to precision of the "
        "recipe, within the target",
        [BASE, RECIPE, TP3, TP5, PE5_BROKE, PES5, c(6, SC, parent=3, acc=0.8, inf=0.5, train=40.0)],
        TRAIN_AWARE,
        ("next", PC, 1),
        "train_energy_vs_baseline",
    ),
    (
        "no training move left; the architecture from scratch kept quality and training but missed inference: "
        "precision serves it",
        [BASE, RECIPE, TP3, TP5, PE5_BROKE, PES5, c(6, SC, parent=3, inf=0.8, train=60.0)],
        TRAIN_AWARE,
        ("next", PC, 6),
        "train_energy_vs_baseline",
    ),
    (
        "training missed, no training move left: precision starts from the best model within the training target",
        [
            BASE,
            RECIPE,
            c(2, PR, 0.3, parent=1, inf=0.8, train=60.0),
            TP5,
            c(4, PR, 0.7, parent=1, acc=0.85, inf=0.45, train=150.0),
        ],
        scenario(
            {**SHORT, "training_moves": False},
            max_accuracy_drop_pt=2.0,
            max_inference_energy_vs_baseline=0.75,
            max_train_energy_vs_baseline=1.2,
        ),
        ("next", PC, 2),
        "train_energy_vs_baseline",
    ),
    (
        "training missed, no pruning ratio left and every other rung derives from a costly lineage: unreachable",
        [
            BASE,
            c(1, ES, parent=0, inf=1.0, train=130.0),
            c(2, PR, 0.3, parent=1, inf=0.8, train=135.0),
            c(3, PR, 0.5, parent=1, inf=0.5, train=135.0),
            c(4, PR, 0.7, parent=1, acc=0.85, inf=0.45, train=150.0),
        ],
        scenario(
            {**SHORT, "training_moves": False},
            max_accuracy_drop_pt=2.0,
            max_inference_energy_vs_baseline=0.75,
            max_train_energy_vs_baseline=1.2,
        ),
        ("final", FinalState.FAILED, None),
        "train_energy_vs_baseline",
    ),
    (
        "a serving form would start from a costlier model only because the cheapest one missed training: cut that "
        "one's training first",
        CHEAP_MISSED_TRAINING,
        FUSING,
        ("next", PE, 1),
        "train_energy_vs_baseline",
    ),
    (
        "the cheap model's training was cut: the serving form starts from the new model, as cheap to run",
        [*CHEAP_MISSED_TRAINING, c(5, PE, 0.5, parent=1, inf=0.81, train=60.0)],
        FUSING,
        ("next", StepKind.FUSE, 5),
        "inference_energy_vs_baseline",
    ),
    (
        "prune-early meets every target",
        [BASE, RECIPE, TP3, TP5, c(4, PE, 0.5, parent=1, inf=0.5, train=60.0)],
        TRAIN_AWARE,
        ("final", FinalState.PASSED, 4),
        None,
    ),
    (
        "the recipe itself costs more than the target and nothing is compressed: unreachable at once",
        [BASE, RECIPE],
        scenario(SHORT, max_train_energy_vs_baseline=0.3),
        ("final", FinalState.FAILED, None),
        "train_energy_vs_baseline",
    ),
    (
        "a larger-batch recipe is tried first for a training miss",
        [BASE, RECIPE],
        scenario({**SHORT, "training_batch_factors": [4]}, max_train_energy_vs_baseline=0.3),
        ("next", BT, 0),
        "train_energy_vs_baseline",
    ),
    (
        "accuracy: 70% met the inference target but broke accuracy, back off to 60%",
        [BASE, RECIPE, P3, P5, P7_BAD],
        scenario({**SHORT, "accuracy_backoff": True}),
        ("next", PR, 1),
        "accuracy_drop_pt",
    ),
    (
        "a training miss does not stop the back-off: the training-cost moves come after",
        [
            BASE,
            RECIPE,
            TP3,
            c(3, PR, 0.5, parent=1, inf=0.8, train=140.0),
            c(4, PR, 0.7, parent=1, acc=0.5, inf=0.3, train=150.0),
        ],
        TRAIN_AWARE,
        ("next", PR, 1),
        "accuracy_drop_pt",
    ),
    (
        "no back-off from a ratio that still missed inference",
        [BASE, RECIPE, P3, c(3, PR, 0.5, parent=1, acc=0.5, inf=0.6)],
        scenario({**SHORT, "accuracy_backoff": True}),
        ("next", PC, 2),
        "inference_energy_vs_baseline",
    ),
    (
        "the halfway ratio missed inference: the broken ratio again, fine-tuned on the most accurate "
        "model's soft labels",
        [BASE, RECIPE, P3, P5, P7_BAD, c(5, PR, 0.6, parent=1, inf=0.55)],
        scenario(TAUGHT),
        ("next", PR, 1),
        "accuracy_drop_pt",
    ),
    (
        "the soft labels did not recover it: the broken ratio with a fine-tune twice as long",
        [BASE, RECIPE, P3, P5, P7_BAD, c(5, PR, 0.6, parent=1, inf=0.55), KD7_BAD],
        scenario(TAUGHT),
        ("next", PR, 1),
        "accuracy_drop_pt",
    ),
    (
        "backed off every way: on to precision from the best kept model",
        [
            BASE,
            RECIPE,
            P3,
            P5,
            P7_BAD,
            c(5, PR, 0.6, parent=1, inf=0.55),
            KD7_BAD,
            LONG7_BAD.model_copy(update={"index": 7}),
        ],
        scenario(TAUGHT),
        ("next", PC, 5),
        "inference_energy_vs_baseline",
    ),
    (
        "ladder exhausted: unreachable names the inference target",
        [BASE, RECIPE, P3, P5, P7_BAD, c(5, PC, "int8", parent=3, inf=1.2), c(6, PC, "fp16", parent=3, inf=1.1)],
        scenario(),
        ("final", FinalState.FAILED, None),
        "inference_energy_vs_baseline",
    ),
]


@pytest.mark.parametrize(
    ("history", "settings", "expected", "target"), [r[1:] for r in TARGET_TABLE], ids=[r[0] for r in TARGET_TABLE]
)
def test_each_missed_target_picks_its_moves(
    history: list[CandidateResult], settings: Scenario, expected: tuple[str, object, int | None], target: str | None
) -> None:
    decision = decide(settings, history)
    _check(decision, expected)
    if isinstance(decision, Next):
        assert decision.target == target and decision.step.target == target
        assert decision.why.startswith(f"{target}: ")
    else:
        assert decision.unreachable == target
        if target is not None:
            assert decision.reason.startswith(f"unreachable: {target}: ")


def test_the_fine_tune_budget_is_what_the_training_target_leaves() -> None:
    from thresholds.energy.policy import fine_tune_budget_epochs

    # limit 1.2 x 100 J = 120 J; the recipe used 50 J; pruning's fine-tune cost 90 J over 15 epochs = 6 J/epoch
    assert fine_tune_budget_epochs(TRAIN_AWARE, [BASE, RECIPE, TP3, TP5], TP5) == math.floor(0.8 * 70 / 6)
    step = decide(TRAIN_AWARE, [BASE, RECIPE, TP3, TP5, PE5_BROKE]).step  # type: ignore[union-attr]
    assert step.epochs == 9 and step.label == "prune-es:0.5/9ep"
    assert fine_tune_budget_epochs(scenario(), [BASE, RECIPE, TP3, TP5], TP5) is None  # no training target, no budget


def test_gates_judge_the_paired_ratio_confidence_interval() -> None:
    targets = scenario(max_inference_energy_vs_baseline=0.75).targets
    # Separate means say 0.9x (drift between the two measurements); the pairs say 0.70x, CI [0.66, 0.74].
    paired = c(1, ES, inf=0.9).model_copy(
        update={
            "inference_ratio_vs_baseline": 0.70,
            "inference_ratio_ci95_low": 0.66,
            "inference_ratio_ci95_high": 0.74,
            "inference_ratio_log_sem": 0.02,
        }
    )
    assert gate(targets, paired, BASE, sigmas=2.0).passed
    wide = paired.model_copy(update={"inference_ratio_ci95_high": 0.80})
    report = gate(targets, wide, BASE, sigmas=2.0)
    assert not report.passed and "inference_energy_vs_baseline 0.8x > 0.75x" in report.summary()
    assert gate(targets, wide, BASE, sigmas=0.0).passed  # the point ratio, without the noise margin


@pytest.mark.parametrize(
    ("child_ratio", "child_sem", "keep", "why"),
    [
        (0.6, 0.02, True, "saved 25.0% inference cost vs #1 (paired)"),
        (0.75, 0.05, False, "noise, not a gain"),
        (0.79, 0.0, False, "saved 1.2%"),
    ],
)
def test_kept_compares_paired_ratios_when_both_have_them(
    child_ratio: float, child_sem: float, keep: bool, why: str
) -> None:
    parent = RECIPE.model_copy(update={"inference_ratio_vs_baseline": 0.8, "inference_ratio_log_sem": 0.02})
    child = c(2, PR, 0.3, parent=1, inf=5.0).model_copy(
        update={"inference_ratio_vs_baseline": child_ratio, "inference_ratio_log_sem": child_sem}
    )
    ok, reason = kept(scenario(), [BASE, parent, child], child)
    assert ok is keep and why in reason


def test_each_verdict_names_the_target_that_drove_the_next_move() -> None:
    from tasks.energy_loop.report import verdicts

    history = [
        BASE,
        RECIPE,
        TP3,
        TP5,
        c(4, PE, 0.5, parent=1, inf=0.5, train=60.0).model_copy(
            update={"step": Step(kind=PE, value=0.5, parent=1, target="train_energy_vs_baseline")}
        ),
    ]
    lines = verdicts(TRAIN_AWARE, history)
    assert "next: prune-early:0.5 for train_energy_vs_baseline" in lines[3]
    assert lines[4].startswith("PASS")


def test_the_longer_fine_tune_doubles_the_scenarios_epochs_and_comes_once() -> None:
    s = scenario(TAUGHT)
    by_default = decide(
        scenario({**SHORT, "accuracy_backoff": True}), [BASE, RECIPE, P3, P5, P7_BAD, c(5, PR, 0.6, parent=1, inf=0.55)]
    )
    assert by_default.step.label == "prune:0.7/30ep"  # type: ignore[union-attr]  # the soft-label moves are opt-in: halfway, then the longer fine-tune
    step = decide(s, [BASE, RECIPE, P3, P5, P7_BAD, c(5, PR, 0.6, parent=1, inf=0.55), KD7_BAD]).step  # type: ignore[union-attr]
    assert (
        step.value == 0.7
        and step.epochs == 2 * s.training.fine_tune_epochs
        and step.teacher is None
        and step.label == "prune:0.7/30ep"
    )
    halfway_broke = [
        BASE,
        RECIPE,
        P3,
        P5,
        P7_BAD,
        c(5, PR, 0.6, parent=1, acc=0.8, inf=0.5),
        KD7_BAD,
        LONG7_BAD.model_copy(update={"index": 7}),
    ]
    again = decide(s, halfway_broke).step  # type: ignore[union-attr]
    assert (again.value, again.epochs, again.teacher) == (
        0.6,
        None,
        0,
    )  # the halfway ratio broke too: its own back-off, not another halving


def test_the_soft_label_back_off_learns_from_the_most_accurate_model_once_per_ratio() -> None:
    s = scenario(TAUGHT)
    better = c(2, PR, 0.3, parent=1, acc=0.93, inf=0.8)  # more accurate than the baseline (0.90): it teaches
    history = [BASE, RECIPE, better, P5, P7_BAD, c(5, PR, 0.6, parent=1, inf=0.55)]
    step = decide(s, history).step  # type: ignore[union-attr]
    assert (step.value, step.parent, step.teacher, step.epochs) == (0.7, 1, 2, None) and step.label == "prune:0.7/kd#2"
    assert (
        decide(
            s,
            [
                *history[:-1],
                c(5, PC, "int8", parent=2, acc=0.99, inf=0.55),
                history[-1].model_copy(update={"index": 6}),
            ],
        ).step.teacher
        == 2
    )  # type: ignore[union-attr]  # a precision model does not teach
    off = scenario({**SHORT, "accuracy_backoff": True, "backoff_teacher": False})
    assert decide(off, history).step.epochs == 30  # type: ignore[union-attr]  # without it: straight to the longer fine-tune


OR = StepKind.ORT
WITH_ORT = scenario({**SHORT, "onnx_runtime": ["fp32", "int8"]})
EXHAUSTED = [BASE, RECIPE, P3, P5, P7_BAD, c(5, PC, "int8", parent=3, inf=1.2), c(6, PC, "fp16", parent=3, inf=1.1)]


def _paired(candidate: CandidateResult, ratio: float, log_sem: float) -> CandidateResult:
    return candidate.model_copy(update={"inference_ratio_vs_baseline": ratio, "inference_ratio_log_sem": log_sem})


def test_the_onnxruntime_rung_serves_the_best_fp32_model_at_fp32_then_int8_then_the_ladder_ends() -> None:
    first = decide(WITH_ORT, EXHAUSTED)
    assert isinstance(first, Next) and (first.step.kind, first.step.value, first.step.parent) == (OR, "fp32", 3)
    assert first.step.label == "ort:fp32"
    ort_fp32 = c(7, OR, "fp32", parent=3, inf=0.55)
    second = decide(WITH_ORT, [*EXHAUSTED, ort_fp32])
    assert isinstance(second, Next) and (second.step.kind, second.step.value, second.step.parent) == (OR, "int8", 3)
    ended = decide(WITH_ORT, [*EXHAUSTED, ort_fp32, c(8, OR, "int8", parent=3, inf=0.58)])
    assert isinstance(ended, Final) and ended.state == FinalState.FAILED
    assert [s.step.label for s in plan_batch(WITH_ORT, EXHAUSTED, width=3)] == ["ort:fp32", "ort:int8"]  # type: ignore[union-attr]
    assert decide(scenario(), EXHAUSTED).state == FinalState.FAILED  # type: ignore[union-attr]  # onnx_runtime: [] - no such rung


def test_the_fuse_rung_serves_the_best_fp32_model_once_before_the_precisions_and_is_never_a_base() -> None:
    with_fuse = scenario({**SHORT, "fuse_inference": True})
    first = decide(with_fuse, [BASE, RECIPE, P3, P5, P7_BAD])
    assert isinstance(first, Next) and (first.step.kind, first.step.parent, first.step.label) == (
        StepKind.FUSE,
        3,
        "fuse",
    )
    fused = c(5, StepKind.FUSE, None, parent=3, inf=0.55)  # kept (cheaper than #3), misses 0.5x
    then = decide(with_fuse, [BASE, RECIPE, P3, P5, P7_BAD, fused])
    assert (
        isinstance(then, Next) and then.step.kind == PC and then.step.parent == 3
    )  # once; the precisions start from the torch model
    assert decide(scenario(), [BASE, RECIPE, P3, P5, P7_BAD]).step.kind == PC  # type: ignore[union-attr]  # fuse_inference: false - no such rung


def test_an_onnxruntime_candidate_is_never_the_base_of_precision_rungs() -> None:
    cheap_ort = c(5, OR, "fp32", parent=3, inf=0.55)  # kept (cheaper than #3, misses 0.5x) but not a torch fp32 model
    step = decide(WITH_ORT, [BASE, RECIPE, P3, P5, P7_BAD, cheap_ort])
    assert isinstance(step, Next) and step.step.kind == PC and step.step.parent == 3


@pytest.mark.parametrize(
    ("ort_ratio", "ort_sem", "keep", "why"),
    [
        (0.30, 0.03, True, "saved 50.0% inference cost vs #3 (paired)"),
        (0.57, 0.06, False, "noise, not a gain"),  # 5 % better, but within two combined standard errors
        (0.59, 0.00, False, "saved 1.7%"),  # below min_gain_pct
        (0.70, 0.01, False, "saved -16.7%"),  # onnxruntime costs more here
    ],
)
def test_an_onnxruntime_candidate_is_kept_only_on_a_paired_gain_beyond_the_noise(
    ort_ratio: float, ort_sem: float, keep: bool, why: str
) -> None:
    parent = _paired(P5, 0.6, 0.02)
    ort = _paired(c(5, OR, "fp32", parent=3, inf=5.0), ort_ratio, ort_sem)
    ok, reason = kept(WITH_ORT, [BASE, RECIPE, P3, parent, ort], ort)
    assert ok is keep and why in reason, reason


def _taught(index: int, value: float, acc: float, inf: float) -> CandidateResult:
    return c(index, PR, value, parent=1, acc=acc, inf=inf).model_copy(
        update={"step": Step(kind=PR, value=value, parent=1, teacher=0)}
    )


def test_a_ratio_that_missed_inference_and_just_missed_accuracy_is_overtaken_on_soft_labels() -> None:
    s = scenario(TAUGHT)  # at most 2 pt lost, at most 0.5x inference
    near = c(2, PR, 0.3, parent=1, acc=0.87, inf=0.8)  # lost 3 pt (within 2 x 2 pt), missed inference
    first = decide(s, [BASE, RECIPE, near])
    assert (
        isinstance(first, Next)
        and first.step.label == "prune:0.5/kd#0"
        and first.target == "inference_energy_vs_baseline"
    )
    # The soft labels kept quality but inference is still missed: the next ratio, still on them.
    then = decide(s, [BASE, RECIPE, near, _taught(3, 0.5, acc=0.90, inf=0.6)])
    assert isinstance(then, Next) and then.step.label == "prune:0.7/kd#0"
    # The taught 70 % met inference but broke accuracy: back off halfway to the taught 50 %, still taught.
    broke = decide(s, [BASE, RECIPE, near, _taught(3, 0.5, acc=0.90, inf=0.6), _taught(4, 0.7, acc=0.85, inf=0.45)])
    assert isinstance(broke, Next) and broke.step.label == "prune:0.6/kd#0" and broke.target == "accuracy_drop_pt"
    # A collapse is not won back by soft labels: no larger ratio after it.
    collapsed = decide(s, [BASE, RECIPE, c(2, PR, 0.3, parent=1, acc=0.60, inf=0.8)])
    assert isinstance(collapsed, Next) and collapsed.step.kind == PC
    # Without the teacher back-off the ladder moves on as before.
    assert (
        decide(scenario({**SHORT, "accuracy_backoff": True, "backoff_teacher": False}), [BASE, RECIPE, near]).step.kind
        == PC
    )  # type: ignore[union-attr]


def test_the_teacher_is_the_most_accurate_model_the_training_target_affords() -> None:
    from thresholds.energy.training_cost import TrainSegment

    def run(origin: int, work: str, epochs: int, joules: float) -> TrainSegment:
        return TrainSegment(origin=origin, run=0, work=work, epochs=epochs, energy_j=joules)

    def trained(candidate: CandidateResult, *runs: TrainSegment) -> CandidateResult:
        return candidate.model_copy(
            update={"train_segments": list(runs), "train_energy_j": sum(r.energy_j for r in runs)}
        )

    base = trained(c(0, B, acc=0.90), run(0, "full/labels", 30, 300.0))
    recipe = trained(c(1, ES, parent=0, acc=0.88), run(1, "full/labels", 12, 120.0))
    broke = trained(c(2, PR, 0.5, parent=1, acc=0.86, inf=0.45), *recipe.train_segments, run(2, "half/labels", 8, 40.0))
    halfway = trained(c(3, PR, 0.4, parent=1, acc=0.89, inf=0.7), *recipe.train_segments, run(3, "3q/labels", 8, 60.0))
    history = [base, recipe, broke, halfway]
    ladder = TAUGHT
    # No training target: the baseline teaches.
    assert (
        decide(scenario(ladder, max_accuracy_drop_pt=2.0, max_inference_energy_vs_baseline=0.5), history).step.teacher
        == 0
    )  # type: ignore[union-attr]
    # Within 1.2x the baseline's 300 J: the baseline's training on top of the recipe's (420 J) is too much; #3 (180 J)
    # is not.
    capped = scenario(
        ladder, max_accuracy_drop_pt=2.0, max_inference_energy_vs_baseline=0.5, max_train_energy_vs_baseline=1.2
    )
    step = decide(capped, history).step  # type: ignore[union-attr]
    assert (step.value, step.teacher) == (0.5, 3)
    # The parent itself adds no training: it teaches when it is the most accurate the target affords.
    assert (
        decide(capped, [base, recipe, broke, halfway.model_copy(update={"accuracy": 0.85})]).step.label
        == "prune:0.5/kd#1"
    )  # type: ignore[union-attr]
    # No affordable model knows more than the broken one: no soft-label step, the longer fine-tune instead.
    worse = [base, recipe.model_copy(update={"accuracy": 0.86}), broke, halfway.model_copy(update={"accuracy": 0.85})]
    assert decide(capped, worse).step.label == "prune:0.5/30ep"  # type: ignore[union-attr]


def test_a_student_that_missed_only_training_is_distilled_again_within_the_epochs_the_target_leaves() -> None:
    s = scenario(
        {**SHORT, "distill_width_factors": [0.5]},
        max_accuracy_drop_pt=2.0,
        max_inference_energy_vs_baseline=0.75,
        max_train_energy_vs_baseline=1.2,
    )
    student = c(2, DI, 0.5, parent=1, inf=0.5, train=140.0).model_copy(update={"epochs_run": 30})
    step = decide(s, [BASE, RECIPE, student]).step  # type: ignore[union-attr]
    # limit 120 J; the teacher's lineage 50 J; the distillation cost 90 J over 30 epochs = 3 J/epoch
    assert (
        step.kind == DI
        and step.parent == 1
        and step.epochs == math.floor(0.8 * 70 / 3)
        and step.label == "distill:0.5/18ep"
    )
    assert step.target == "train_energy_vs_baseline"
    again = c(3, DI, 0.5, parent=1, inf=0.5, train=125.0).model_copy(update={"step": step, "epochs_run": 18})
    assert decide(s, [BASE, RECIPE, student, again]).step.kind == SC  # type: ignore[union-attr]  # once; then the student's architecture from scratch
    costly = student.model_copy(
        update={"train_energy_j": 180.0}
    )  # 130 J over 30 epochs: the target leaves 12, under half of them
    assert decide(s, [BASE, RECIPE, costly]).step.kind == SC  # type: ignore[union-attr]


def test_a_rung_refused_as_not_applicable_uses_no_iteration_of_the_budget() -> None:
    three = scenario().model_copy(update={"budget": scenario().budget.model_copy(update={"max_iterations": 3})})
    refused = c(2, StepKind.FUSE, parent=1, rejected="no fused form of #1: nothing to fuse").model_copy(
        update={"not_applicable": True}
    )
    assert iterations_used([BASE, RECIPE, refused]) == 2
    nxt = decide(three, [BASE, RECIPE, refused])
    assert isinstance(nxt, Next) and nxt.step.kind == PR  # the third iteration is still there to spend
    failed = c(2, PR, 0.3, parent=1, rejected="loss became nan")  # a rejection after work counts
    assert decide(three, [BASE, RECIPE, failed]).state == FinalState.BUDGET_EXHAUSTED  # type: ignore[union-attr]
    # Refusals alone cannot keep the loop going: twice the budget ends it.
    many = [BASE, RECIPE, *[refused.model_copy(update={"index": i}) for i in range(2, 6)]]
    assert decide(three, many).state == FinalState.BUDGET_EXHAUSTED  # type: ignore[union-attr]


def test_a_passing_model_is_served_in_every_form_the_ladder_allows_and_the_cheapest_that_passes_is_chosen() -> None:
    with_fuse = scenario({**SHORT, "fuse_inference": True, "serve_every_form": True})
    passed = [BASE, RECIPE, P3, c(3, PR, 0.5, parent=1, inf=0.4)]
    polish = decide(with_fuse, passed)
    assert (
        isinstance(polish, Next)
        and (polish.step.kind, polish.step.parent) == (StepKind.FUSE, 3)
        and polish.target is None
    )
    fused = c(4, StepKind.FUSE, parent=3, inf=0.42)
    after_fuse = decide(with_fuse, [*passed, fused])
    assert isinstance(after_fuse, Next) and (after_fuse.step.kind, after_fuse.step.value, after_fuse.step.parent) == (
        PC,
        "int8",
        3,
    )
    # The machine's calibration rules int8 out: fp16 is next; a form that lost accuracy is measured but not chosen.
    ruled_out = decide(with_fuse, [*passed, fused], INT8_HELPS.model_copy(update={"inference_ratio": {"int8": 1.5}}))
    assert isinstance(ruled_out, Next) and (ruled_out.step.kind, ruled_out.step.value) == (PC, "fp16")
    every = [*passed, fused, c(5, PC, "int8", parent=3, acc=0.5, inf=0.2), c(6, PC, "fp16", parent=3, inf=0.35)]
    final = decide(with_fuse, every)
    assert isinstance(final, Final) and (final.state, final.chosen) == (FinalState.PASSED, 6)
    fused_cheapest = [*every[:4], fused.model_copy(update={"inference_energy_j_per_1k": 0.3}), *every[5:]]
    assert decide(with_fuse, fused_cheapest).chosen == 4  # type: ignore[union-attr]
    refused = [*passed, c(4, StepKind.FUSE, parent=3, rejected="not applicable: nothing to fuse"), *every[5:]]
    assert decide(with_fuse, refused).chosen == 6  # type: ignore[union-attr]
    # A serving form that passed first does not end the loop while its parent has forms left, and is not served again.
    fused_first = decide(with_fuse, [*passed[:3], c(3, StepKind.FUSE, parent=2, inf=0.4)])
    assert isinstance(fused_first, Next) and (
        fused_first.step.kind,
        fused_first.step.value,
        fused_first.step.parent,
    ) == (PC, "int8", 2)
    # Out of iterations, the cheapest that passed so far is chosen.
    last = with_fuse.model_copy(update={"budget": with_fuse.budget.model_copy(update={"max_iterations": 4})})
    assert (decide(last, passed).state, decide(last, passed).chosen) == (FinalState.PASSED, 3)  # type: ignore[union-attr]
    assert (
        decide(
            with_fuse.model_copy(update={"ladder": with_fuse.ladder.model_copy(update={"serve_every_form": False})}),
            passed,
        ).chosen
        == 3
    )  # type: ignore[union-attr]
