"""Which meter this machine offers, and which one `auto` picks (GPU counter, then RAPL, then CodeCarbon)."""

from __future__ import annotations

from tasks.meters.base import EnergyMeter
from tasks.meters.nvml import gpu_count
from tasks.meters.rapl import discover
from thresholds.core import METER_NAMES
from thresholds.errors import InputError


def available_meters() -> dict[str, str]:
    """Meter name -> whether it is usable here and why."""
    gpus = gpu_count()
    _, rapl_status = discover()
    return {
        "nvml": f"available: {gpus} GPU(s), total-energy counter (a reading)"
        if gpus
        else "unavailable: no NVML device",
        "rapl": rapl_status + (" (a reading)" if rapl_status.startswith("available") else ""),
        "codecarbon": "available: CPU from RAPL where readable, else load x TDP; RAM from a constant (an estimate)",
        "fixed-power": "available: constant assumed power x wall time (an estimate)",
        "null": "available: reads 0 J (energy gates cannot be judged)",
        "analytic": "logged beside every MLP candidate: counted ops x Horowitz 45 nm energy table (an estimate for a "
        "target device)",
    }


def auto_choice() -> tuple[str, str]:
    """What `auto` picks here, and why: a hardware counter before an estimate."""
    gpus = gpu_count()
    if gpus > 0:
        return "nvml", f"{gpus} NVIDIA GPU(s) with an energy counter: a reading of the accelerator"
    zones, status = discover()
    if zones:
        return "rapl", f"no NVIDIA GPU; RAPL {status}: a reading of the CPU packages"
    return "codecarbon", f"no NVIDIA GPU and RAPL {status}: CodeCarbon's estimate is the best available"


def resolve_meter_name(name: str) -> str:
    """`auto` -> the most direct reading this machine offers."""
    if name not in METER_NAMES:
        raise InputError("meter", name, f"one of {', '.join(METER_NAMES)}")
    return auto_choice()[0] if name == "auto" else name


def make_meter(name: str = "auto", power_w: float = 10.0, country_iso_code: str = "USA") -> EnergyMeter:
    """Build the named meter."""
    resolved = resolve_meter_name(name)
    if resolved == "nvml":
        from tasks.meters.nvml import NvmlMeter

        return NvmlMeter()
    if resolved == "rapl":
        from tasks.meters.rapl import RaplMeter

        return RaplMeter()
    if resolved == "codecarbon":
        from tasks.meters.codecarbon_meter import CodeCarbonMeter

        return CodeCarbonMeter(country_iso_code=country_iso_code)
    from tasks.meters.simple import FixedPowerMeter, NullMeter

    if resolved == "fixed-power":
        return FixedPowerMeter(power_w)
    return NullMeter()


_SHARED: dict[tuple[str, float, str], EnergyMeter] = {}


def shared_meter(name: str, power_w: float = 10.0, country_iso_code: str = "USA") -> EnergyMeter:
    """One meter per process and setting, so tasks pass a name, not a live object."""
    key = (resolve_meter_name(name), power_w, country_iso_code)
    if key not in _SHARED:
        _SHARED[key] = make_meter(*key)
    return _SHARED[key]


def close_shared_meters() -> None:
    while _SHARED:
        _, meter = _SHARED.popitem()
        meter.close()
