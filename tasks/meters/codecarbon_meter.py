"""CodeCarbon offline tracker as a meter.

Without RAPL (as on machines with no /sys/class/powercap), CodeCarbon estimates CPU power
from load × an assumed TDP and RAM power from a constant per GB: every figure is therefore
labelled `estimated`, and the CPU model and TDP assumption travel in `details`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tasks.meters.base import EnergyMeter

_KWH_TO_J = 3.6e6


class CodeCarbonMeter(EnergyMeter):
    source = "codecarbon"
    # CodeCarbon's RAM share is always a modelled constant, so its totals are never pure readings.
    estimated = True

    def __init__(self, country_iso_code: str = "USA", tracking_mode: str = "machine") -> None:
        self.country_iso_code = country_iso_code
        self.tracking_mode = tracking_mode
        self._tracker: Any = None

    def _ensure_tracker(self) -> Any:
        if self._tracker is None:
            from codecarbon import OfflineEmissionsTracker

            # Its own handler prints to stderr, so only its level quiets it; set after the import, which
            # resets it. CODECARBON_LOG_LEVEL (codecarbon's own variable; `--verbose` sets warning) overrides.
            level = os.environ.get("CODECARBON_LOG_LEVEL", "error").upper()
            level = level if level in logging.getLevelNamesMapping() else "ERROR"
            logging.getLogger("codecarbon").setLevel(level)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                output_methods=[],  # nothing written to disk: figures go to MLflow
                log_level=level.lower(),
                tracking_mode=self.tracking_mode,
                allow_multiple_runs=True,
                measure_power_secs=1,
            )
        return self._tracker

    def _begin(self, label: str) -> None:
        self._ensure_tracker().start_task(label)

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        tracker = self._ensure_tracker()
        data = tracker.stop_task()
        details = {
            "cpu_model": str(data.cpu_model),
            "cpu_power_w": f"{data.cpu_power:.3f}",
            "ram_power_w": f"{data.ram_power:.3f}",
            "cpu_energy_j": f"{data.cpu_energy * _KWH_TO_J:.4f}",
            "ram_energy_j": f"{data.ram_energy * _KWH_TO_J:.4f}",
            "gpu_energy_j": f"{data.gpu_energy * _KWH_TO_J:.4f}",
        }
        details.update(self._cpu_assumption(tracker))
        return float(data.energy_consumed) * _KWH_TO_J, details

    @staticmethod
    def _cpu_assumption(tracker: Any) -> dict[str, str]:
        # Private attributes: read defensively, they only enrich the provenance tags.
        for hw in getattr(tracker, "_hardware", []):
            if type(hw).__name__ == "CPU":
                return {"cpu_mode": str(getattr(hw, "_mode", "?")), "cpu_tdp_w": str(getattr(hw, "_tdp", "?"))}
        return {}

    def close(self) -> None:
        if self._tracker is not None:
            try:
                self._tracker.stop()
            finally:
                self._tracker = None
