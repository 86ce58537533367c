"""Meters without hardware: replay, fixed power, null; NVML with pynvml mocked (autospec)."""

from __future__ import annotations

import math
import time
from typing import Any
from unittest import mock

import pytest

from tasks.meters.base import EnergyMeter, MeterError
from tasks.meters.select import make_meter, resolve_meter_name
from tasks.meters.simple import FixedPowerMeter, NullMeter, ReplayMeter


def test_replay_meter_returns_recorded_energies_in_order() -> None:
    meter = ReplayMeter([1.5, 2.5], source="replay:test")
    got = []
    for label in ("a", "b", "c"):
        with meter.window(label) as w:
            pass
        got.append((w.measurement.energy_j, w.measurement.source, w.measurement.label))
    assert got == [(1.5, "replay:test", "a"), (2.5, "replay:test", "b"), (1.5, "replay:test", "c")]


def test_fixed_power_meter_is_power_times_wall_time_and_labelled_estimated() -> None:
    meter = FixedPowerMeter(power_w=20.0)
    with meter.window("sleep") as w:
        time.sleep(0.05)
    m = w.measurement
    assert m.estimated is True
    assert m.duration_s >= 0.05
    assert m.energy_j == pytest.approx(20.0 * m.duration_s)
    assert m.power_w == pytest.approx(20.0)


def test_null_meter_reads_zero() -> None:
    with NullMeter().window("x") as w:
        pass
    assert w.measurement.energy_j == 0.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_nonsense_energy_is_refused(bad: float) -> None:
    with pytest.raises(MeterError, match="expected a finite number >= 0"):
        with ReplayMeter([bad]).window("x"):
            pass


def test_energy_spent_before_an_exception_is_still_recorded() -> None:
    meter = ReplayMeter([3.0])
    with pytest.raises(ZeroDivisionError):
        with meter.window("crash") as w:
            1 / 0  # noqa: B018
    assert w.measurement.energy_j == 3.0


def test_reading_an_open_window_is_an_error() -> None:
    with ReplayMeter([1.0]).window("x") as w:
        with pytest.raises(RuntimeError, match="still open"):
            _ = w.measurement


def test_unknown_meter_name() -> None:
    with pytest.raises(ValueError, match="expected one of auto"):
        resolve_meter_name("wattmeter")


def _nvml_patch(pynvml: Any, count: int, energy: Any, power: Any = None, names: str = "H100") -> Any:
    """pynvml functions mocked with autospec, so a wrong call signature fails the test."""
    spec = mock.create_autospec
    return mock.patch.multiple(
        pynvml,
        nvmlInit=spec(pynvml.nvmlInit),
        nvmlShutdown=spec(pynvml.nvmlShutdown),
        nvmlDeviceGetCount=spec(pynvml.nvmlDeviceGetCount, return_value=count),
        nvmlDeviceGetHandleByIndex=spec(pynvml.nvmlDeviceGetHandleByIndex, side_effect=lambda i: i),
        nvmlDeviceGetName=spec(pynvml.nvmlDeviceGetName, return_value=names),
        nvmlDeviceGetTotalEnergyConsumption=spec(pynvml.nvmlDeviceGetTotalEnergyConsumption, side_effect=energy),
        nvmlDeviceGetPowerUsage=spec(pynvml.nvmlDeviceGetPowerUsage, side_effect=power or (lambda h: 0)),
        nvmlDeviceGetTemperature=spec(pynvml.nvmlDeviceGetTemperature, return_value=61),
        nvmlDeviceGetEnforcedPowerLimit=spec(pynvml.nvmlDeviceGetEnforcedPowerLimit, return_value=700_000),
        nvmlDeviceGetUtilizationRates=spec(pynvml.nvmlDeviceGetUtilizationRates, return_value=mock.Mock(gpu=97)),
    )


def test_nvml_meter_sums_counter_deltas_of_every_gpu() -> None:
    import pynvml

    # One probe read per GPU at start-up, then one at each end of the window.
    counters = {0: iter([0, 1_000, 4_000]), 1: iter([0, 10_000, 12_500])}
    with _nvml_patch(pynvml, 2, lambda h: next(counters[h])):
        from tasks.meters.nvml import NvmlMeter, gpu_count

        assert gpu_count() == 2
        meter: EnergyMeter = NvmlMeter()
        with meter.window("train") as w:
            pass
        meter.close()
    assert w.measurement.energy_j == pytest.approx(5.5)  # (3000 + 2500) mJ
    assert w.measurement.estimated is False
    d = w.measurement.details
    assert d["gpus"] == "H100, H100" and d["method"] == "counter+counter"
    assert d["gpu0_temperature_c"] == "61" and d["gpu1_power_limit_w"] == "700.0" and d["gpu0_utilization_pct"] == "97"


def test_nvml_without_counter_integrates_sampled_power() -> None:
    import pynvml

    def no_counter(handle: int) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    with _nvml_patch(pynvml, 1, no_counter, power=lambda h: 250_000, names="T4"):
        from tasks.meters.nvml import NvmlMeter

        meter = NvmlMeter(sample_interval_s=0.01)
        with meter.window("w") as w:
            time.sleep(0.2)
    m = w.measurement
    assert m.details["method"] == "power-sampling"
    assert m.energy_j == pytest.approx(250.0 * m.duration_s, rel=0.1)  # constant 250 W


def test_trapezoid() -> None:
    from tasks.meters.nvml import trapezoid_j

    assert trapezoid_j([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(150.0 + 400.0)
    assert trapezoid_j([(0.0, 5.0)]) == 0.0


def test_nvml_counter_going_backwards_is_refused() -> None:
    import pynvml

    readings = iter([0, 5_000, 1_000])
    with _nvml_patch(pynvml, 1, lambda h: next(readings), names="A100"):
        from tasks.meters.nvml import NvmlMeter

        with pytest.raises(MeterError, match="backwards"):
            with NvmlMeter().window("x"):
                pass


def test_codecarbon_meter_reads_an_estimate_with_its_assumptions() -> None:
    meter = make_meter("codecarbon")
    try:
        with meter.window("busy") as w:
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                sum(range(1000))
    finally:
        meter.close()
    m = w.measurement
    assert m.source == "codecarbon"
    assert m.estimated is True
    assert m.energy_j > 0
    assert "cpu_model" in m.details and "ram_power_w" in m.details


@pytest.mark.gpu
def test_nvml_on_a_real_gpu() -> None:
    from tasks.meters.nvml import NvmlMeter, gpu_count

    if gpu_count() == 0:
        pytest.skip("no NVIDIA GPU with NVML on this machine")
    import torch

    meter = NvmlMeter()
    with meter.window("matmul") as w:
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(50):
            a = a @ a
            a = a / a.norm()
        torch.cuda.synchronize()
    meter.close()
    assert w.measurement.energy_j > 0
