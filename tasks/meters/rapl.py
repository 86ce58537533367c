"""Intel/AMD RAPL through Linux powercap: `/sys/class/powercap/intel-rapl:*/energy_uj`.

Packages (`intel-rapl:N`) and their `dram` subzones are summed; core/uncore subzones are
already inside their package and are skipped, as is `psys` (the whole platform) when
packages exist, so nothing is counted twice. Counters wrap at `max_energy_range_uj`; a
window sees at most one wrap per zone (the range is tens of minutes of full power).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.meters.base import EnergyMeter, MeterError

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Zone:
    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def _zone_name(path: Path) -> str:
    try:
        return (path / "name").read_text().strip()
    except OSError:
        return path.name


def discover(root: Path = POWERCAP_ROOT) -> tuple[list[Zone], str]:
    """(zones to sum, human-readable status). No zones means the meter is unavailable."""
    if not root.is_dir():
        return [], f"unavailable: {root} does not exist (no RAPL on this machine or in this container)"
    tops = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not tops:
        return [], f"unavailable: no intel-rapl zones under {root}"
    packages = [p for p in tops if _zone_name(p).startswith("package")]
    chosen = packages or tops
    chosen += [sub for pkg in packages for sub in sorted(pkg.glob(f"{pkg.name}:*")) if _zone_name(sub) == "dram"]
    zones: list[Zone] = []
    for path in chosen:
        try:
            max_range = int((path / "max_energy_range_uj").read_text().strip())
            Zone(path, _zone_name(path), max_range).read_uj()
        except PermissionError:
            return (
                [],
                f"unreadable: permission denied on {path / 'energy_uj'} (needs root, or `chmod a+r` on the "
                "energy_uj files)",
            )
        except (OSError, ValueError) as exc:
            return [], f"unreadable: {path}: {exc}"
        zones.append(Zone(path, _zone_name(path), max_range))
    return zones, f"available: {', '.join(z.name for z in zones)}"


def counter_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Energy between two readings of a counter that wraps to 0 after `max_range_uj`."""
    return end - start if end >= start else end + max_range_uj - start


class RaplMeter(EnergyMeter):
    """Hardware energy counters of the CPU packages (and DRAM where exposed): a reading."""

    source = "rapl"
    estimated = False

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        self._zones, status = discover(root)
        if not self._zones:
            raise MeterError(f"RAPL {status}")
        self._start: list[int] = []

    def _begin(self, label: str) -> None:
        self._start = [z.read_uj() for z in self._zones]

    def _end(self, duration_s: float) -> tuple[float, dict[str, str]]:
        ends = [z.read_uj() for z in self._zones]
        deltas = [
            counter_delta_uj(s, e, z.max_energy_range_uj)
            for s, e, z in zip(self._start, ends, self._zones, strict=True)
        ]
        details = {f"{z.name}_j": f"{d / 1e6:.4f}" for z, d in zip(self._zones, deltas, strict=True)}
        return sum(deltas) / 1e6, details
