"""The serving process judges its own windows against the scenario's `production:` block.

The judgement itself is pure (`thresholds.energy.production.judge`); this holds its state across windows and turns
a verdict into what is announced: the event's payload (model, version, the misses with their limits and
uncertainty, the observed batch mix), handed to `announce`, which the command wires to a Prefect event and a tag on
the version. The serving process judges, not a separate watcher flow, because it alone sees every window as it
closes, at no extra cost and with no other process to keep running beside the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.serving import telemetry
from thresholds.energy.production import (
    JudgeState,
    Limits,
    Production,
    Verdict,
    WindowFigures,
    judge,
    limits_for,
)

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """The judgement of one serving process: the block, the task, and where a verdict goes."""

    production: Production
    task: str
    target_quality: float | None
    announce: Callable[[Verdict, dict[str, Any]], None]
    state: JudgeState = field(default_factory=JudgeState)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        # Once, at start: a limit the task does not have is refused before serving (InputError).
        self.limits = limits_for(self.production, self.task, self.target_quality)

    def window(self, model: str, version: str, figures: telemetry.WindowFigures) -> Verdict | None:
        """Judge one closed window of `version`; announce a breach or a recovery."""

        judged = WindowFigures(
            rows=figures.rows,
            energy_j_per_1k=figures.energy_j_per_1k,
            energy_j_per_1k_sem=figures.energy_j_per_1k_sem,
            latency_p95_ms=figures.latency_p95_ms,
            quality=figures.quality,
            labelled_rows=figures.labelled_rows,
        )
        self.state, verdict = judge(self.production, self.limits, judged, self.state, time.time())
        if verdict is None:
            return None
        payload = {
            "model": model,
            "version": version,
            "misses": [asdict(m) for m in verdict.misses],
            "limits": asdict(self.limits),
            "batch_mix": {str(b): n for b, n in figures.batch_rows.items()},  # rows per batch bucket
            "serving_batch_sizes": sorted(figures.batch_rows, key=lambda b: -figures.batch_rows[b]),
            "window": {"rows": figures.rows, "requests": figures.requests, "duration_s": round(figures.duration_s, 3)},
            "energy_source": figures.energy_source,
            "energy_estimated": figures.energy_estimated,
            "windows_held": self.production.windows,
            "on_breach": list(self.production.on_breach),
        }
        try:
            self.announce(verdict, payload)
        except Exception as exc:  # an unreachable Prefect API costs the event, never the serving
            log.warning("%s not announced: %s", verdict.event, str(exc).splitlines()[0][:300] if str(exc) else exc)
        return verdict
