"""The gates: every target the scenario sets, checked on one candidate (and the baseline, for relative targets),
with energy judged at the scenario's noise margin; and the candidate closest to passing them."""

from __future__ import annotations

from pydantic import BaseModel

from thresholds.core import Check
from thresholds.energy.policy.costs import relative_cost
from thresholds.energy.policy.records import CandidateResult
from thresholds.energy.schema import Scenario, Targets

# The gate checks by what they judge (a check's `name`): the ladder picks its move by the group a missed one is in.
QUALITY_TARGETS = ("trained", "accuracy", "accuracy_drop_pt", "rmse", "rmse_increase_pct")
INFERENCE_TARGETS = (
    "inference_energy_j_per_1k",
    "inference_energy_vs_baseline",
    "latency_ms_per_batch",
    "latency_vs_baseline",
)
TRAINING_TARGETS = ("train_energy_j", "train_energy_vs_baseline")


class GateReport(BaseModel):
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        bad = self.failed
        return "meets every target" if not bad else "; ".join(c.detail for c in bad)


def _max(check: str, value: float | None, limit: float | None, unit: str) -> Check | None:
    if limit is None:
        return None
    if value is None:
        return Check(name=check, ok=False, detail=f"{check}: not measured (limit {limit:g}{unit})")
    ok = value <= limit
    return Check(name=check, ok=ok, detail=f"{check} {value:.4g}{unit} {'<=' if ok else '>'} {limit:.4g}{unit}")


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _upper(value: float | None, err: float, sigmas: float) -> float | None:
    return None if value is None else value + sigmas * err


def _ratio_upper(value: float | None, err: float, base: float | None, base_err: float, sigmas: float) -> float | None:
    """Pessimistic ratio: candidate at its upper bound over baseline at its lower bound."""
    if value is None or base is None:
        return None
    low = base - sigmas * base_err
    return _ratio(value + sigmas * err, low if low > 0 else None)


def _train_ratio_judged(c: CandidateResult, baseline: CandidateResult, sigmas: float) -> float | None:
    """The training ratio the gate judges: priced by work (at `sigmas` standard errors up) when priced,
    else the two measured figures at their pessimistic bounds."""
    if c.train_ratio_vs_baseline is not None:
        return c.train_ratio_vs_baseline + sigmas * c.train_ratio_sem
    return _ratio_upper(
        c.train_energy_j, c.train_energy_sem_j, baseline.train_energy_j, baseline.train_energy_sem_j, sigmas
    )


def _inference_ratio_judged(c: CandidateResult, baseline: CandidateResult, sigmas: float) -> float | None:
    """The inference ratio the gate judges: from the paired windows when measured so (the upper end
    of its 95 % CI, or the point ratio at `sigmas` 0), else from the two separate means."""
    if c.inference_ratio_vs_baseline is not None:
        if sigmas > 0 and c.inference_ratio_ci95_high is not None:
            return c.inference_ratio_ci95_high
        return c.inference_ratio_vs_baseline
    return _ratio_upper(
        c.inference_energy_j_per_1k,
        c.inference_energy_sem_j_per_1k,
        baseline.inference_energy_j_per_1k,
        baseline.inference_energy_sem_j_per_1k,
        sigmas,
    )


def gate(targets: Targets, c: CandidateResult, baseline: CandidateResult, sigmas: float = 0.0) -> GateReport:
    """Every target that is set, checked against the candidate (and the baseline for relative ones).

    Energy figures are judged at `sigmas` standard errors on the unfavourable side, so a
    candidate does not pass on a lucky measurement.
    """
    if not c.ok:
        return GateReport(checks=[Check(name="trained", ok=False, detail=f"rejected: {c.rejected_reason}")])
    checks = _quality_checks(targets, c, baseline)
    inf, inf_err = c.inference_energy_j_per_1k, c.inference_energy_sem_j_per_1k
    train, train_err = c.train_energy_j, c.train_energy_sem_j
    for item in (
        _max("inference_energy_j_per_1k", _upper(inf, inf_err, sigmas), targets.max_inference_energy_j_per_1k, " J"),
        _max(
            "inference_energy_vs_baseline",
            _inference_ratio_judged(c, baseline, sigmas),
            targets.max_inference_energy_vs_baseline,
            "x",
        ),
        _max("train_energy_j", _upper(train, train_err, sigmas), targets.max_train_energy_j, " J"),
        _max(
            "train_energy_vs_baseline",
            _train_ratio_judged(c, baseline, sigmas),
            targets.max_train_energy_vs_baseline,
            "x",
        ),
        _max("latency_ms_per_batch", c.latency_ms_per_batch, targets.max_latency_ms_per_batch, " ms"),
        _max(
            "latency_vs_baseline",
            _ratio(c.latency_ms_per_batch, baseline.latency_ms_per_batch),
            targets.max_latency_vs_baseline,
            "x",
        ),
    ):
        if item is not None:
            checks.append(item)
    return GateReport(checks=checks)


def judge(scenario: Scenario, c: CandidateResult, baseline: CandidateResult) -> GateReport:
    """`gate` with the scenario's noise margin."""
    return gate(scenario.targets, c, baseline, scenario.measurement.significance_sigmas)


def _quality_checks(targets: Targets, c: CandidateResult, baseline: CandidateResult) -> list[Check]:
    checks: list[Check] = []
    if targets.min_accuracy is not None:
        acc = c.accuracy
        ok = acc is not None and acc >= targets.min_accuracy
        shown = "n/a" if acc is None else f"{acc:.4f}"
        checks.append(
            Check(name="accuracy", ok=ok, detail=f"accuracy {shown} {'>=' if ok else '<'} {targets.min_accuracy:.4f}")
        )
    if targets.max_accuracy_drop_pt is not None and baseline.accuracy is not None:
        drop_pt = None if c.accuracy is None else (baseline.accuracy - c.accuracy) * 100
        item = _max("accuracy_drop_pt", drop_pt, targets.max_accuracy_drop_pt, " pt")
        if item:
            checks.append(item)
    rmse = _max("rmse", c.rmse, targets.max_rmse, "")
    if rmse:
        checks.append(rmse)
    if targets.max_rmse_increase_pct is not None and baseline.rmse:
        increase = None if c.rmse is None else (c.rmse / baseline.rmse - 1) * 100
        item = _max("rmse_increase_pct", increase, targets.max_rmse_increase_pct, " %")
        if item:
            checks.append(item)
    return checks


def quality_ok(targets: Targets, c: CandidateResult, baseline: CandidateResult) -> bool:
    return c.ok and all(x.ok for x in _quality_checks(targets, c, baseline))


def missed_targets(scenario: Scenario, c: CandidateResult, baseline: CandidateResult) -> list[str]:
    """Names of the gate checks `c` fails, in gate order."""
    return [x.name for x in judge(scenario, c, baseline).failed]


def train_limit_j(targets: Targets, baseline: CandidateResult) -> float | None:
    """The training energy (J) the scenario allows, absolute or relative to the baseline."""
    limits = [targets.max_train_energy_j] if targets.max_train_energy_j is not None else []
    if targets.max_train_energy_vs_baseline is not None and baseline.train_energy_j:
        limits.append(targets.max_train_energy_vs_baseline * baseline.train_energy_j)
    return min(limits) if limits else None


def closest(scenario: Scenario, history: list[CandidateResult], optimised_only: bool = False) -> CandidateResult | None:
    """The candidate closest to passing: quality targets met first, then fewest misses, then lowest cost.

    `optimised_only` leaves out the baseline (to report the best optimisation even when none passed).
    """
    ok = [c for c in history[1 if optimised_only else 0 :] if c.ok]
    if not ok:
        return None
    return min(
        ok,
        key=lambda c: (
            not quality_ok(scenario.targets, c, history[0]),
            len(judge(scenario, c, history[0]).failed),
            relative_cost(c, history[0]) or float("inf"),
            c.index,
        ),
    )


def why_not(scenario: Scenario, history: list[CandidateResult]) -> str:
    """Why no candidate passed, for a final state's reason: the closest one and the targets it misses."""
    best = closest(scenario, history)
    if best is None:
        return "no candidate was trained"
    return (
        f"closest was #{best.index} ({'+'.join(best.lineage) or best.step.label}): "
        f"{judge(scenario, best, history[0]).summary()}"
    )
