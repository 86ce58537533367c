"""Which meter this machine offers, and which one `auto` picks."""

from __future__ import annotations

from tasks.energy.base import EnergyMeter
from tasks.energy.nvml import gpu_count

METER_NAMES = ("auto", "codecarbon", "nvml", "fixed-power", "null")


def available_meters() -> dict[str, str]:
    """Meter name -> why it is (or is not) usable here."""
    gpus = gpu_count()
    return {
        "nvml": f"{gpus} GPU(s) via NVML" if gpus else "unavailable: no NVML device",
        "codecarbon": "available (estimates CPU from load x TDP where RAPL is absent)",
        "fixed-power": "available (constant assumed power x wall time; an estimate)",
        "null": "available (reads 0 J; energy gates cannot be judged)",
    }


def resolve_meter_name(name: str) -> str:
    if name not in METER_NAMES:
        raise ValueError(f"meter = {name!r}: expected one of {', '.join(METER_NAMES)}")
    if name == "auto":
        return "nvml" if gpu_count() > 0 else "codecarbon"
    return name


def make_meter(name: str = "auto", power_w: float = 10.0) -> EnergyMeter:
    """Build the named meter; `auto` prefers a GPU counter, then CodeCarbon."""
    resolved = resolve_meter_name(name)
    if resolved == "nvml":
        from tasks.energy.nvml import NvmlMeter

        return NvmlMeter()
    if resolved == "codecarbon":
        from tasks.energy.codecarbon_meter import CodeCarbonMeter

        return CodeCarbonMeter()
    from tasks.energy.simple import FixedPowerMeter, NullMeter

    if resolved == "fixed-power":
        return FixedPowerMeter(power_w)
    return NullMeter()


_SHARED: dict[tuple[str, float], EnergyMeter] = {}


def shared_meter(name: str, power_w: float = 10.0) -> EnergyMeter:
    """One meter per process and setting, so tasks pass a name, not a live object."""
    key = (resolve_meter_name(name), power_w)
    if key not in _SHARED:
        _SHARED[key] = make_meter(key[0], power_w)
    return _SHARED[key]


def close_shared_meters() -> None:
    while _SHARED:
        _, meter = _SHARED.popitem()
        meter.close()
