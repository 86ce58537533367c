"""The loop's own energy: calibration, training, inference measurement and orchestration add up to what its meter
read over the loop, and the closing table shows each part."""

from __future__ import annotations

import pytest

from tasks.energy_loop.ledger import PARTS, Ledger, loop_energy, loop_meter, table
from tasks.meters.base import MeterError
from tasks.meters.simple import ReplayMeter
from thresholds.energy.policy import CandidateResult, Step, StepKind


def _candidate(index: int, spent_j: float, measure_j: float, train_s: float, measure_s: float) -> CandidateResult:
    return CandidateResult(
        index=index,
        step=Step(kind=StepKind.BASELINE),
        spent_energy_j=spent_j,
        measure_energy_j=measure_j,
        train_s=train_s,
        measure_s=measure_s,
    )


def test_each_part_has_its_windows_and_orchestration_the_rest_of_the_wall_time() -> None:
    history = [_candidate(0, 100.0, 30.0, 10.0, 4.0), _candidate(1, 50.0, 20.0, 5.0, 3.0)]
    stretches = {"setup": (40.0, 6.0), "candidates": (190.0, 25.0), "closing": (10.0, 2.0)}
    got = loop_energy(stretches, history)
    assert got["loop_energy_j_calibration"] == 40.0 and got["loop_wall_s_calibration"] == 6.0
    assert got["loop_energy_j_training"] == 100.0 and got["loop_energy_j_measurement"] == 50.0
    assert got["loop_wall_s_training"] == 15.0 and got["loop_wall_s_measurement"] == 7.0
    assert got["loop_wall_s_orchestration"] == pytest.approx(25.0 + 2.0 - 15.0 - 7.0)
    assert got["loop_energy_j_orchestration"] == pytest.approx(200.0 / 27.0 * 5.0)  # at the stretches' mean power
    assert got["loop_energy_j"] == pytest.approx(40.0 + 100.0 + 50.0 + 200.0 / 27.0 * 5.0)
    assert got["loop_wall_s"] == pytest.approx(33.0)
    shown = table(got)
    assert all(f"| {p} |" in shown for p in PARTS) and f"| total | {got['loop_energy_j']:.1f} |" in shown


def test_orchestration_never_reads_below_zero() -> None:
    """Candidates' timings can exceed the stretch's by the clocks' granularity: no negative time or energy."""
    got = loop_energy({"candidates": (10.0, 1.0)}, [_candidate(0, 30.0, 5.0, 2.0, 1.0)])
    assert got["loop_energy_j_orchestration"] == 0.0 and got["loop_wall_s_orchestration"] == 0.0
    assert got["loop_energy_j"] == pytest.approx(30.0)
    assert loop_energy({}, [])["loop_energy_j"] == 0.0


def test_the_ledger_reads_its_meter_per_stretch_and_keeps_wall_time_without_one() -> None:
    with Ledger(ReplayMeter([3.0, 5.0])) as ledger:
        with ledger.stretch("setup"):
            pass
        with ledger.stretch("candidates"):
            pass
    assert [j for j, _ in ledger.stretches.values()] == [3.0, 5.0]

    def broken() -> ReplayMeter:
        raise MeterError("no meter here")

    bare = Ledger(loop_meter(broken))
    with bare.stretch("setup"):
        pass
    assert bare.meter is None and bare.stretches["setup"][0] == 0.0 and bare.stretches["setup"][1] >= 0.0


def test_the_loop_meter_is_attributed_to_the_process_as_training_is() -> None:
    from tasks.energy_loop.stages import loop_ledger
    from tasks.meters.share import ProcessShareMeter
    from thresholds.energy.schema import Scenario

    scenario = Scenario.model_validate({"name": "x"})
    with loop_ledger(scenario, "fixed-power") as shared:  # a machine-level meter: this process's share
        assert isinstance(shared.meter, ProcessShareMeter)
    whole = scenario.model_copy(
        update={"measurement": scenario.measurement.model_copy(update={"train_attribution": "machine"})}
    )
    with loop_ledger(whole, "fixed-power") as machine:
        assert machine.meter is not None and not isinstance(machine.meter, ProcessShareMeter)
