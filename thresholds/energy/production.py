"""The loop closed on production: what a serving process judges, against which limits, and when a miss is a breach.

A scenario's `production:` block names the observed figures judged (`energy`: J per 1k predictions at the observed
batch mix, `latency`: the window's p95, `quality`: accuracy or RMSE over labelled rows), their limits, how much a
window needs to be judged, and what a breach does. A quality limit left out is the scenario's target. Energy is
judged against `max_energy_j_per_1k` only: the loop's own J per 1k counts the model alone on prepared tensors, while
a served request also parses, preprocesses and answers (`benchmarks/serving.py` compares the two), so a limit
derived from it would call every window a breach. `at_mix` weighs the loop's figures by an
observed batch mix for `energy-loop status`. `judge` is a pure function over one window's figures and the state so
far: a breach is a miss beyond the measurement's uncertainty that holds for `windows` windows in a row (and not
within `cooldown_s` of the last one); a recovery is `windows` judged windows in a row within every limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import Field, model_validator

from thresholds.core import StrictSection
from thresholds.errors import InputError

Judged = Literal["energy", "latency", "quality"]
Action = Literal["retrain", "alert"]
BREACH_EVENT = "energy-loop.production.breach"
RECOVERED_EVENT = "energy-loop.production.recovered"
JUDGE_DEFAULT: tuple[Judged, ...] = ("energy",)
ON_BREACH_DEFAULT: tuple[Action, ...] = ("retrain", "alert")


class Production(StrictSection):
    judge: list[Judged] = Field(default_factory=lambda: list(JUDGE_DEFAULT), min_length=1, description="what is judged")
    max_energy_j_per_1k: float | None = Field(
        None, gt=0, description="J per 1k predictions served (none: energy is not judged)"
    )
    max_latency_p95_ms: float | None = Field(None, gt=0, description="milliseconds, p95 of a window's requests")
    min_accuracy: float | None = Field(None, gt=0, le=1, description="default: targets.min_accuracy")
    max_rmse: float | None = Field(None, gt=0, description="default: targets.max_rmse")
    min_rows: int = Field(200, ge=1, le=10_000_000, description="rows (labelled rows for quality) a window needs")
    windows: int = Field(3, ge=1, le=10_000, description="windows in a row a breach or a recovery must hold")
    sigmas: float = Field(2.0, ge=0, le=10, description="standard errors a figure must lie beyond its limit")
    cooldown_s: float = Field(3600.0, ge=0, le=30 * 86_400, description="seconds between two breach events")
    on_breach: list[Action] = Field(
        default_factory=lambda: list(ON_BREACH_DEFAULT), min_length=1, description="retrain, alert, or both"
    )
    stricter: str | None = Field(
        None,
        min_length=1,
        description="scenario (a bundled name or a path) a retrain starts from when the version that missed was "
        "itself a production retrain for the same figure",
    )

    @model_validator(mode="after")
    def _limits_for_what_is_judged(self) -> Production:
        if len(set(self.judge)) != len(self.judge) or len(set(self.on_breach)) != len(self.on_breach):
            raise ValueError("judge and on_breach naming each entry once")
        if "latency" in self.judge and self.max_latency_p95_ms is None:
            raise ValueError("a max_latency_p95_ms limit in ms when judge names latency")
        if self.min_accuracy is not None and self.max_rmse is not None:
            raise ValueError("min_accuracy (classification) or max_rmse (regression), not both")
        return self


@dataclass(frozen=True)
class Limits:
    """The absolute limits a serving process judges its windows against (None: not judged)."""

    energy_j_per_1k: float | None
    latency_p95_ms: float | None
    quality: float | None
    quality_metric: Literal["accuracy", "rmse"]


def at_mix(j_per_1k_by_batch: Mapping[int, float], rows_by_batch: Mapping[int, int]) -> float | None:
    """The loop's J per 1k at an observed batch mix: each bucket's rows at the figure of the measured batch size
    nearest to it (on a log scale), weighted by rows. None without figures or rows."""
    rows = sum(rows_by_batch.values())
    if not j_per_1k_by_batch or not rows:
        return None
    nearest = lambda b: min(j_per_1k_by_batch, key=lambda m: (abs(math.log(m) - math.log(b)), m))  # noqa: E731
    return sum(j_per_1k_by_batch[nearest(b)] * n for b, n in rows_by_batch.items()) / rows


def limits_for(production: Production, task: str, target_quality: float | None) -> Limits:
    """The limits a serving process judges against. `target_quality` is the scenario's min_accuracy or max_rmse.
    Raises InputError where the block names a metric the task does not have."""
    metric: Literal["accuracy", "rmse"] = "accuracy" if task == "classification" else "rmse"
    wrong = production.max_rmse if metric == "accuracy" else production.min_accuracy
    if wrong is not None:
        name = "max_rmse" if metric == "accuracy" else "min_accuracy"
        raise InputError(f"production.{name}", wrong, f"a limit this {task} model has ({metric})")
    quality = production.min_accuracy if metric == "accuracy" else production.max_rmse
    return Limits(
        energy_j_per_1k=production.max_energy_j_per_1k if "energy" in production.judge else None,
        latency_p95_ms=production.max_latency_p95_ms if "latency" in production.judge else None,
        quality=(quality if quality is not None else target_quality) if "quality" in production.judge else None,
        quality_metric=metric,
    )


@dataclass(frozen=True)
class WindowFigures:
    """What one serving window observed, as judged (None: not observed in the window)."""

    rows: int
    energy_j_per_1k: float | None
    energy_j_per_1k_sem: float | None
    latency_p95_ms: float | None
    quality: float | None
    labelled_rows: int


@dataclass(frozen=True)
class Miss:
    """One figure beyond its limit in a window."""

    figure: Judged
    value: float
    limit: float
    uncertainty: float  # the standard errors it had to clear (sigmas x sem)


@dataclass(frozen=True)
class JudgeState:
    """What the judgement remembers between windows."""

    missing: int = 0  # judged windows in a row with a miss
    within: int = 0  # judged windows in a row within every limit
    in_breach: bool = False
    last_breach_s: float | None = None
    misses: tuple[Miss, ...] = field(default_factory=tuple)  # the last window's


@dataclass(frozen=True)
class Verdict:
    """An event to emit: a breach (with the misses of the window that made it) or a recovery."""

    event: str
    misses: tuple[Miss, ...]


def misses(figures: WindowFigures, limits: Limits, sigmas: float, min_rows: int) -> tuple[Miss, ...] | None:
    """The window's misses beyond the measurement's uncertainty; None where the window has too few rows to judge."""
    if figures.rows < min_rows:
        return None
    found = []
    if limits.energy_j_per_1k is not None and figures.energy_j_per_1k is not None:
        spread = sigmas * (figures.energy_j_per_1k_sem or 0.0)
        if figures.energy_j_per_1k - spread > limits.energy_j_per_1k:
            found.append(Miss("energy", figures.energy_j_per_1k, limits.energy_j_per_1k, spread))
    if limits.latency_p95_ms is not None and figures.latency_p95_ms is not None:
        if figures.latency_p95_ms > limits.latency_p95_ms:  # a percentile of every request: no sampling error
            found.append(Miss("latency", figures.latency_p95_ms, limits.latency_p95_ms, 0.0))
    if limits.quality is not None and figures.quality is not None and figures.labelled_rows >= min_rows:
        q, n = figures.quality, figures.labelled_rows
        if limits.quality_metric == "accuracy":
            spread = sigmas * math.sqrt(max(q * (1 - q), 1 / n) / n)  # binomial standard error
            if q + spread < limits.quality:
                found.append(Miss("quality", q, limits.quality, spread))
        elif q > limits.quality:
            found.append(Miss("quality", q, limits.quality, 0.0))
    return tuple(found)


def judge(
    production: Production, limits: Limits, figures: WindowFigures, state: JudgeState, now_s: float
) -> tuple[JudgeState, Verdict | None]:
    """One window judged: the new state, and the event it fires (None: nothing to say)."""
    found = misses(figures, limits, production.sigmas, production.min_rows)
    if found is None:
        return state, None  # too little traffic: neither a miss nor a recovery
    if found:
        state = replace(state, missing=state.missing + 1, within=0, misses=found)
        cooled = state.last_breach_s is None or now_s - state.last_breach_s >= production.cooldown_s
        if not state.in_breach and state.missing >= production.windows and cooled:
            return replace(state, in_breach=True, last_breach_s=now_s), Verdict(BREACH_EVENT, found)
        return state, None
    state = replace(state, missing=0, within=state.within + 1, misses=())
    if state.in_breach and state.within >= production.windows:
        return replace(state, in_breach=False), Verdict(RECOVERED_EVENT, ())
    return state, None


@dataclass(frozen=True)
class Retrain:
    """Where a breach's retrain starts: the request fields the automation renders into the triggered run."""

    scenario: str | None
    dataset: str | None
    target: str | None
    production_breach: list[str]  # the figures that missed: the retrain's versions carry them
    why: str


def retrain_request(
    production: Production,
    version: Mapping[str, str | None],
    missed: list[str],
    feedback_dir: str | None,
) -> Retrain:
    """The retrain a breach asks for (pure). `version` holds the missed version's `scenario`, `dataset`, `target` and
    `retrained_for` (the figures a production retrain that made it was for, comma-separated; empty: none). Quality
    missed and labelled feedback kept: the feedback folder is the data as it is now (its rows and `label`). The same
    figure missed again by a version a production retrain made for it: the block's stricter scenario, if it names
    one."""
    scenario, dataset, target = version.get("scenario"), version.get("dataset"), version.get("target")
    why = ["the version's own scenario and data"]
    if "quality" in missed and feedback_dir:
        dataset, target = feedback_dir, "label"
        why.append("quality missed: trained on the labelled feedback")
    again = sorted(set(missed) & set(filter(None, (version.get("retrained_for") or "").split(","))))
    if again and production.stricter:
        scenario = production.stricter
        why.append(f"{', '.join(again)} missed again after a production retrain for it: {production.stricter}")
    return Retrain(scenario, dataset, target, sorted(set(missed)), "; ".join(why))
