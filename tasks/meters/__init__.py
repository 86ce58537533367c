"""Energy meters behind one interface: `EnergyMeter.window(label)` yields a `Measurement`."""

from tasks.meters.base import EnergyMeter, Measurement, Window
from tasks.meters.select import METER_NAMES, available_meters, make_meter

__all__ = ["METER_NAMES", "EnergyMeter", "Measurement", "Window", "available_meters", "make_meter"]
