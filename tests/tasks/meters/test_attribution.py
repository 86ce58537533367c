"""A parallel phase's machine-level reading split among its candidates: the parts add up to it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from tasks.energy_loop.parallel import attribute_phase
from tasks.meters.share import ATTRIBUTION, CpuTimeMeter, split_phase_energy
from tasks.meters.simple import ReplayMeter
from thresholds.energy.policy import CandidateResult, Step, StepKind


def _phase_reading(energy_j: float, hold_s: float = 0.05):  # type: ignore[no-untyped-def]
    meter = ReplayMeter([energy_j], source="replay:phase", estimated=False)
    with meter.window("phase") as phase:
        time.sleep(hold_s)
    return phase.measurement


def test_split_gives_busy_energy_by_cpu_share_and_the_constant_part_by_time_on_the_worker() -> None:
    parts = split_phase_energy(
        machine_energy_j=100.0, phase_s=4.0, idle_power_w=5.0, cpu_s=[3.0, 1.0], wall_s=[4.0, 4.0]
    )
    # constant 5 W x 4 s = 20 J, 10 J each (both held a worker throughout); busy 80 J split 3:1.
    assert [p.constant_j for p in parts] == [10.0, 10.0]
    assert [p.busy_j for p in parts] == [60.0, 20.0]
    assert [p.energy_j for p in parts] == [70.0, 30.0]
    assert sum(p.energy_j for p in parts) == pytest.approx(100.0)


def test_a_candidate_that_stopped_early_pays_the_constant_part_only_for_its_own_time() -> None:
    # Fixed power (everything constant): the baseline ran 6 s, the early-stopping recipe 1 s beside it.
    baseline, recipe = split_phase_energy(
        machine_energy_j=120.0, phase_s=6.0, idle_power_w=20.0, cpu_s=[6.0, 1.0], wall_s=[6.0, 1.0]
    )
    assert recipe.energy_j / baseline.energy_j == pytest.approx(1 / 6)  # as serially: 20 J vs 120 J
    assert baseline.energy_j + recipe.energy_j == pytest.approx(120.0)


@pytest.mark.parametrize(
    ("reading_j", "phase_s", "idle_w", "cpu_s"),
    [
        (103.3, 3.8, 8.0, [0.9, 1.1, 1.0, 0.7]),  # the phase: four candidates on two workers
        (50.0, 10.0, 20.0, [1.0, 2.0]),  # idle draw above the reading: all of it is constant
        (12.0, 1.0, 0.0, [0.0, 0.0, 0.0]),  # no CPU time on record: equal parts
        (0.0, 1.0, 3.0, [1.0, 1.0]),  # null meter
    ],
)
def test_parts_always_sum_to_the_reading(reading_j: float, phase_s: float, idle_w: float, cpu_s: list[float]) -> None:
    parts = split_phase_energy(reading_j, phase_s, idle_w, cpu_s, wall_s=[phase_s] * len(cpu_s))
    assert len(parts) == len(cpu_s)
    assert sum(p.energy_j for p in parts) == pytest.approx(reading_j, rel=1e-9, abs=1e-12)
    assert all(p.energy_j >= 0 for p in parts)


def test_split_rejects_negative_figures() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        split_phase_energy(10.0, 1.0, 1.0, [1.0, -0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match="one of each"):
        split_phase_energy(10.0, 1.0, 1.0, [1.0, 0.5], [1.0])
    assert split_phase_energy(10.0, 1.0, 1.0, [], []) == []


def test_cpu_time_meter_reads_this_process_cpu_seconds() -> None:
    meter = CpuTimeMeter("codecarbon")
    with meter.window("spin") as w:
        until = time.process_time() + 0.1  # CPU seconds, not wall: the machine may be shared
        while time.process_time() < until:
            pass
    with meter.window("sleep") as idle:
        time.sleep(0.2)
    assert meter.cpu_s == pytest.approx(w.measurement.energy_j + idle.measurement.energy_j)
    assert meter.wall_s == pytest.approx(w.measurement.duration_s + idle.measurement.duration_s)
    assert 0.1 <= w.measurement.energy_j <= w.measurement.duration_s * 1.05
    assert idle.measurement.energy_j < 0.05
    assert w.measurement.source == "codecarbon" and w.measurement.details["provisional_unit"] == "cpu_s"


def _produced(
    index: int,
    step: Step,
    window_cpu_s: list[float],
    inherited_j: float = 0.0,
    sem: float = 0.0,
    host: str = "here",
    wall_s: float = 4.0,
) -> CandidateResult:
    own = cpu_s = sum(window_cpu_s)  # as a worker's CpuTimeMeter reports it
    return CandidateResult(
        index=index,
        step=step,
        train_energy_j=inherited_j + own,
        train_energy_sem_j=sem,
        spent_energy_j=own,
        energy_source="replay:phase",
        series={"epoch_energy_j": window_cpu_s, "val_loss": [1.0] * len(window_cpu_s)},
        tags={"train_host": host, "train_cpu_s": str(cpu_s), "train_wall_s": str(wall_s)},
    )


def test_attribute_phase_replaces_provisional_cpu_seconds_by_joules_that_add_up() -> None:
    reading = _phase_reading(120.0)
    parent = CandidateResult(
        index=1, step=Step(kind=StepKind.EARLY_STOPPING, parent=0), train_energy_j=40.0, train_energy_sem_j=3.0
    )
    history = [CandidateResult(index=0, step=Step(kind=StepKind.BASELINE), train_energy_j=80.0), parent]
    produced = [
        _produced(
            2, Step(kind=StepKind.PRUNE, value=0.3, parent=1), window_cpu_s=[2.0, 1.0], inherited_j=40.0, sem=5.0
        ),
        _produced(
            3,
            Step(kind=StepKind.PRUNE, value=0.5, parent=1),
            window_cpu_s=[0.5, 0.5],
            inherited_j=40.0,
            sem=3.0,
            wall_s=1.0,
        ),
        _produced(
            4, Step(kind=StepKind.PRUNE, value=0.7, parent=1), window_cpu_s=[1.0], inherited_j=40.0, host="elsewhere"
        ),
    ]
    idle_w = 10.0
    out = attribute_phase(produced, history, reading, idle_power_w=idle_w, host="here")
    here = out[:2]
    own_j = [c.spent_energy_j for c in here]
    # The attributed energies sum to the machine's reading over the phase (within 5 %; here exactly).
    assert sum(own_j) == pytest.approx(reading.energy_j, rel=0.05)
    constant_j = idle_w * reading.duration_s
    # Busy energy 3:1 by CPU time; the constant part 4:1 by the time each held its worker.
    assert own_j[0] == pytest.approx((120.0 - constant_j) * 0.75 + constant_j * 0.8)
    assert own_j[1] == pytest.approx((120.0 - constant_j) * 0.25 + constant_j * 0.2)
    for c, j in zip(here, own_j, strict=True):
        assert c.train_energy_j == pytest.approx(40.0 + j)  # the parent's joules stay in the lineage
        assert sum(c.series["epoch_energy_j"]) == pytest.approx(j)  # the curve keeps its shape, in joules
        assert c.tags["train_energy_attribution"] == ATTRIBUTION
        assert float(c.tags["train_energy_attribution.machine_energy_j"]) == pytest.approx(120.0)
        assert c.tags["train_energy_attribution.candidates"] == "2"
        assert float(c.tags["train_energy_attribution.busy_j"]) + float(
            c.tags["train_energy_attribution.constant_j"]
        ) == pytest.approx(c.spent_energy_j, abs=1e-3)
        assert c.estimated and c.energy_source == "replay:phase"
    # The own part's spread is rescaled with it, the parent's is kept: 4 units of own spread over 3 CPU s.
    assert here[0].train_energy_sem_j == pytest.approx(math.hypot(3.0, 4.0 * own_j[0] / 3.0))
    # A candidate trained on another host is not in this machine's reading: left as its worker measured it.
    assert out[2] == produced[2]


def test_process_share_meter_keeps_only_this_process_cpu_share(tmp_path: Path) -> None:
    """Serial loops on a shared machine: the machine's reading times this process's share of its busy CPU time."""
    import os
    import time

    from tasks.meters.share import ProcessShareMeter, cpu_share, machine_busy_cpu_s
    from tasks.meters.simple import FixedPowerMeter

    assert cpu_share(1.0, 2.0) == 0.5 and cpu_share(3.0, 2.0) == 1.0 and cpu_share(0.0, 0.0) == 1.0
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice (ticks)
    stat.write_text("cpu  100 0 50 1000 20 0 10 0 0 0\ncpu0 50 0 25 500 10 0 5 0 0 0\n")
    assert machine_busy_cpu_s(stat) == pytest.approx(160 / os.sysconf("SC_CLK_TCK"))
    assert machine_busy_cpu_s(tmp_path / "missing") is None

    meter = ProcessShareMeter(FixedPowerMeter(10.0))
    with meter.window("spin") as w:
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:
            pass
    m = w.measurement
    share = float(m.details["cpu_share"])
    assert m.details["attribution"] == "process-cpu-share" and 0.0 < share <= 1.0
    assert m.energy_j == pytest.approx(float(m.details["machine_energy_j"]) * share, rel=1e-3, abs=1e-5) and m.estimated
