"""Training energy priced by work: identical work cancels, only what differs is compared across runs."""

from __future__ import annotations

import math

import pytest

from thresholds.energy.policy import CandidateResult, Step, StepKind, gate, price_training, train_cost_j
from thresholds.energy.schema import Scenario
from thresholds.energy.training_cost import TrainSegment, epoch_prices, priced_ratio

RECIPE_WORK, PRUNED_WORK = "mlp64-32/bs64/fp32/labels", "mlp32-16/bs64/fp32/labels"


def seg(origin: int, work: str, epochs: int, energy_j: float, run: int = 0, sem_j: float = 0.0) -> TrainSegment:
    return TrainSegment(origin=origin, run=run, work=work, epochs=epochs, energy_j=energy_j, energy_sem_j=sem_j)


def candidate(index: int, kind: StepKind, segments: list[TrainSegment], parent: int | None = None) -> CandidateResult:
    return CandidateResult(
        index=index,
        step=Step(kind=kind, parent=parent),
        accuracy=0.9,
        inference_energy_j_per_1k=1.0,
        train_energy_j=sum(s.energy_j for s in segments),
        train_segments=segments,
        model_dir=f"/m/{index}",
    )


def test_prices_pool_identical_work_and_count_a_shared_run_once() -> None:
    base, recipe = seg(0, RECIPE_WORK, 60, 59.2), seg(1, RECIPE_WORK, 60, 74.9)
    pruned = seg(2, PRUNED_WORK, 15, 9.0)
    prices = epoch_prices([base, recipe, recipe, pruned])  # the recipe run is in two lineages
    assert prices[RECIPE_WORK].energy_j == pytest.approx((59.2 + 74.9) / 120)
    assert prices[RECIPE_WORK].epochs == 120
    assert prices[PRUNED_WORK].energy_j == pytest.approx(0.6)


def test_the_same_work_costs_the_same_however_the_meter_drifted() -> None:
    # The drift that failed a stop-12 loop: the same 60 epochs read 59.20 J, then 74.93 J (1.27x).
    baseline = candidate(0, StepKind.BASELINE, [seg(0, RECIPE_WORK, 60, 59.20)])
    early = candidate(1, StepKind.EARLY_STOPPING, [seg(1, RECIPE_WORK, 60, 74.93)])
    priced = price_training([baseline], early)
    assert priced.train_ratio_vs_baseline == pytest.approx(1.0)
    assert priced.train_ratio_sem == 0.0  # no work the baseline did not do
    targets = Scenario.model_validate({"name": "t", "targets": {"max_train_energy_vs_baseline": 1.2}}).targets
    assert not gate(targets, early, baseline, sigmas=2.0).passed  # judged on the raw readings: 1.27x > 1.2x
    assert gate(targets, priced, baseline, sigmas=2.0).passed
    stopped = price_training([baseline], candidate(1, StepKind.EARLY_STOPPING, [seg(1, RECIPE_WORK, 30, 40.0)]))
    assert stopped.train_ratio_vs_baseline == pytest.approx(0.5)  # half the epochs of the same work


def test_a_pruned_lineage_adds_its_fine_tune_at_its_own_price_with_its_error() -> None:
    baseline = candidate(0, StepKind.BASELINE, [seg(0, RECIPE_WORK, 60, 60.0, sem_j=1.0)])
    recipe = candidate(1, StepKind.EARLY_STOPPING, [seg(1, RECIPE_WORK, 40, 48.0, sem_j=1.0)])
    fine_tune = seg(2, PRUNED_WORK, 15, 9.0, sem_j=0.6)
    pruned = price_training(
        [baseline, recipe], candidate(2, StepKind.PRUNE, [*recipe.train_segments, fine_tune], parent=1)
    )
    price = (60.0 + 48.0) / 100  # J per recipe epoch, pooled
    assert pruned.train_ratio_vs_baseline == pytest.approx((40 * price + 9.0) / (60 * price))
    base_rel = math.sqrt(2.0) / 100 * 60 / (60 * price)  # the pooled recipe price's relative error
    own = 0.6 / (60 * price)
    assert pruned.train_ratio_sem == pytest.approx(math.hypot(own, 9.0 / (60 * price) * base_rel))
    assert train_cost_j(pruned, baseline) == pytest.approx(pruned.train_ratio_vs_baseline * 60.0)


@pytest.mark.parametrize(
    ("lineage", "baseline"),
    [
        ([], [seg(0, RECIPE_WORK, 60, 60.0)]),
        ([seg(1, RECIPE_WORK, 60, 60.0)], []),
        ([seg(1, RECIPE_WORK, 0, 0.0)], [seg(0, RECIPE_WORK, 0, 0.0)]),
    ],
    ids=["no runs (a search)", "unpriced baseline", "no epochs"],
)
def test_unpriced_lineages_fall_back_to_the_measured_figures(
    lineage: list[TrainSegment], baseline: list[TrainSegment]
) -> None:
    assert priced_ratio(lineage, baseline, epoch_prices([*lineage, *baseline])) is None
    base, other = candidate(0, StepKind.BASELINE, baseline), candidate(1, StepKind.SEARCH, lineage)
    unpriced = price_training([base], other)
    assert unpriced.train_ratio_vs_baseline is None
    assert train_cost_j(unpriced, base) == unpriced.train_energy_j
