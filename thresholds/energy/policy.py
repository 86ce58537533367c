"""The escalation policy: pure functions from (scenario, history) to the next step or a final state.

Ladder, in order:
1. `baseline`          - the unoptimised reference: fixed `max_epochs`, fp32, no early stopping.
2. `early-stopping`    - the same model trained with early stopping (the recipe).
3. `mixed-precision:d` - the recipe trained under autocast; kept only if it measurably lowers
                         training energy at equal quality.
   `batch:f`           - (optional) the recipe trained at batch size x f, learning rate x sqrt(f): fewer,
                         larger steps; kept on the same terms. The kept recipe that cost least to
                         train is the compression base, and its batch size carries to fine-tuning.
4. `prune:r`           - structured pruning of the recipe at each ratio r (increasing), fine-tuned.
                         Stops at the first ratio that breaks an accuracy target.
5. `distill:f`         - a student with each hidden width x f, trained on the best fp32 model's
                         soft labels.
6. `fuse`              - the best fp32 candidate served in its fused torch form (tasks/models/fuse.py: Linear+ReLU
                         as one addmm and an in-place ReLU, BatchNorm folded), when `ladder.fuse_inference`.
7. `precision:p`       - the best fp32 candidate at lower precision (int8 / fp16 / bf16), unless
                         the machine's calibration shows that precision is not cheaper here.
8. `qat:int8`          - when post-training int8 breaks an accuracy target, the same fp32 model
                         fine-tuned with int8 fake quantization, then served at int8.
9. `ort:p`             - the best fp32 candidate exported to ONNX and served under onnxruntime at each
                         of `ladder.onnx_runtime` (fp32, int8 by onnxruntime's dynamic quantization);
                         kept, like every rung, only on a measured gain over its torch parent.

Target-aware: each missed target of the candidate closest to passing picks the moves that can fix
it, and every step names the target that drove it (`Step.target`):

- inference energy or latency: the compression ladder above;
- training energy: moves that cut the *lineage's* training cost (compression only adds to it):
  the training variants above, then for a compressed model `prune-early:r` (prune inside the
  recipe after `training.prune_at_epoch` epochs and keep training: no separate fine-tune),
  `prune-es:r` (prune the recipe and fine-tune with early stopping on the epochs the target
  leaves), for a distilled student `distill:f/Nep` (the same distillation stopped early within the N
  epochs the target leaves, when N is at least half the epochs it ran) and `scratch` (the compressed
  architecture trained from scratch with early stopping). These moves also come before a serving
  form (fuse, precision, onnxruntime) that would serve a model costlier to run than the cheapest
  kept one only because that one misses a training target: a serving form keeps its parent's
  training cost, so it can only pass from a parent within it;
- accuracy: back off - a pruning ratio that met the inference targets but broke accuracy is
  followed by the ratio halfway back to the last one that kept it, then (opt-in,
  `ladder.backoff_teacher`) by the same ratio fine-tuned on the soft labels of the most accurate
  model the training target affords (`Step.teacher`; its lineage includes the teacher's training),
  then by the same ratio with a fine-tune twice as long (`Step.epochs`). With the opt-in, a ratio
  that missed inference and lost a little too much accuracy (at most `NEAR_MISS_FACTOR` x the
  allowed drop) is overtaken instead: the next larger ratio on those soft labels, and so on while
  they keep quality.

Training energy is judged priced by work (`price_training`, thresholds/energy/training_cost.py): each
run of a lineage costs the pooled per-epoch energy of its kind of work, so the recipe's epochs cost
what the baseline's identical epochs cost, and meter drift between two runs of the same work does not
decide a training target.

With no training-cost move left, a training miss walks on only to rungs whose lineage can still
come in under the target (derived rungs only add training to their parent's; precision, distillation
and the runtime start from the cheapest model within the training and quality targets). When no rung
left can reach a target the loop ends FAILED with `Final.unreachable` naming it (reason
"unreachable: <target>: ..."), without spending the rest of the budget: for training energy as soon
as every rung left derives from too costly a lineage, otherwise when the ladder is exhausted.

Optional, between distillation and precision: `search` - an energy-aware architecture search over
`ladder.search_hidden` under an analytic energy cap; the most accurate architecture of the
Pareto set (validation accuracy vs estimated energy) becomes the candidate.

A rung is *kept* (can become the base of later rungs) only when its measured cost (inference
energy; training energy for mixed precision) fell by at least `ladder.min_gain_pct` and by more
than the combined measurement noise, and it still meets the quality targets: nothing is
assumed to save energy. Final states:

- PASSED            - a candidate meets every target (the cheapest that does; a passing trained model is also
                      served fused, once, when `ladder.fuse_inference` and the budget allow).
- BUDGET_EXHAUSTED  - iterations or total energy used up before a candidate passed.
- FAILED            - the baseline could not be trained, or the ladder has no rung left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from thresholds.core import Check, Final, FinalState, significantly_less
from thresholds.energy.schema import Scenario, Targets
from thresholds.energy.training_cost import TrainSegment, distinct_runs, epoch_prices, priced_ratio


class StepKind(StrEnum):
    BASELINE = "baseline"
    EARLY_STOPPING = "early-stopping"
    MIXED_PRECISION = "mixed-precision"
    BATCH = "batch"
    PRUNE = "prune"
    DISTILL = "distill"
    QAT = "qat"
    PRECISION = "precision"
    SEARCH = "search"
    PRUNE_EARLY = "prune-early"  # prune inside the recipe at `training.prune_at_epoch`, keep training
    PRUNE_ES = "prune-es"  # prune the recipe, fine-tune with early stopping on `Step.epochs` at most
    SCRATCH = "scratch"  # the parent's architecture trained from scratch with early stopping
    ORT = "ort"  # the parent exported to ONNX and served under onnxruntime (`Step.value`: fp32 or int8)
    FUSE = "fuse"  # the parent served in its fused torch form (tasks/models/fuse.py); nothing trained


# Rungs that serve a parent's weights in another form: never the base of a later rung (they do not stack).
SERVING_FORMS = (StepKind.PRECISION, StepKind.QAT, StepKind.ORT, StepKind.FUSE)


QUALITY_TARGETS = ("trained", "accuracy", "accuracy_drop_pt", "rmse", "rmse_increase_pct")
INFERENCE_TARGETS = (
    "inference_energy_j_per_1k",
    "inference_energy_vs_baseline",
    "latency_ms_per_batch",
    "latency_vs_baseline",
)
TRAINING_TARGETS = ("train_energy_j", "train_energy_vs_baseline")


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: StepKind
    value: float | str | None = None  # pruning ratio or precision name
    parent: int | None = None  # index of the candidate this step starts from
    epochs: int | None = None  # fine-tuning budget in epochs (prune-es)
    teacher: int | None = None  # a fine-tune on this candidate's soft labels instead of the labels (accuracy back-off)
    target: str | None = None  # the missed target (gate check name) that drove this step

    @property
    def label(self) -> str:
        budget = f"/{self.epochs}ep" if self.epochs is not None else ""
        if self.teacher is not None:
            budget += f"/kd#{self.teacher}"
        if self.value is None:
            return f"{self.kind.value}{budget}"
        shown = f"{self.value:g}" if isinstance(self.value, float) else self.value
        return f"{self.kind.value}:{shown}{budget}"


class CandidateResult(BaseModel):
    """Plain record of one iteration; the only thing the policy sees."""

    index: int
    step: Step
    lineage: list[str] = []
    rejected_reason: str | None = None
    # The rung does not apply to this model (nothing to fuse, a layer the pruner cannot handle): refused before any
    # model was made, so it does not use an iteration of the budget (its energy, if any, still counts).
    not_applicable: bool = False
    accuracy: float | None = None
    rmse: float | None = None
    train_energy_j: float | None = None  # energy to produce this model from scratch (its lineage)
    train_energy_sem_j: float = 0.0  # its standard error (from epoch-to-epoch variation)
    train_segments: list[TrainSegment] = []  # the lineage's training runs, by kind of work
    # The lineage's training cost over the baseline's, both priced by work (training_cost.py), and its
    # standard error: what the training-energy gates judge, when set (`price_training`).
    train_ratio_vs_baseline: float | None = None
    train_ratio_sem: float = 0.0
    inference_energy_j_per_1k: float | None = None
    inference_energy_sem_j_per_1k: float = 0.0  # standard error over the repeated windows
    inference_energy_ci95_j_per_1k: float | None = None  # 95 % confidence half-width
    inference_repeats: int = 0
    analytic_inference_energy_j_per_1k: float | None = None  # target-device estimate from counted ops
    latency_ms_per_batch: float | None = None
    spent_energy_j: float = 0.0  # everything this iteration cost: training + measurement
    params: int | None = None
    macs: int | None = None
    epochs_run: int | None = None
    epochs_saved: int | None = None
    energy_source: str = ""
    estimated: bool = True
    model_dir: str | None = None
    run_id: str | None = None
    train_s: float = 0.0
    measure_s: float = 0.0
    wall_s: float = 0.0
    series: dict[str, list[float]] = {}  # per-epoch curves, logged with their step
    tags: dict[str, str] = {}  # provenance details (meter assumptions, MACs before pruning)
    # Paired (ABBA) measurement against the baseline: geometric mean of the per-pair ratios, the
    # standard error of the mean log ratio, its 95 % CI as ratios, and the number of pairs.
    inference_ratio_vs_baseline: float | None = None
    inference_ratio_log_sem: float = 0.0
    inference_ratio_ci95_low: float | None = None
    inference_ratio_ci95_high: float | None = None
    inference_pairs: int = 0

    @property
    def ok(self) -> bool:
        return self.rejected_reason is None


def iterations_used(history: list[CandidateResult]) -> int:
    """Iterations of the budget the history used: every candidate but the rungs refused as not applicable."""
    return sum(1 for c in history if not c.not_applicable)


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


class Calibration(BaseModel):
    """What this machine showed, per rung: measured cost relative to fp32 (0.8 = 20 % cheaper)."""

    machine: str
    inference_ratio: dict[str, float] = {}  # precision -> inference energy vs fp32
    train_ratio: dict[str, float] = {}  # autocast dtype -> training energy vs fp32

    def helps(self, table: dict[str, float], key: str, min_gain_pct: float) -> bool:
        """Unknown rungs are tried; known ones only when they saved at least `min_gain_pct`."""
        return key not in table or table[key] <= 1 - min_gain_pct / 100


class Next(BaseModel):
    step: Step
    why: str
    target: str | None = None  # the missed target that drove this step


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


def price_training(history: list[CandidateResult], c: CandidateResult) -> CandidateResult:
    """`c` with its training cost priced by work against the baseline (`history[0]`, or `c` itself
    when it is the baseline), at the per-epoch prices pooled over every run so far."""
    baseline = history[0] if history else c
    prices = epoch_prices(s for r in [*history, c] for s in r.train_segments)
    priced = priced_ratio(c.train_segments, baseline.train_segments, prices)
    if priced is None:
        return c
    ratio, sem = priced
    return c.model_copy(update={"train_ratio_vs_baseline": ratio, "train_ratio_sem": sem})


def train_cost_j(c: CandidateResult, baseline: CandidateResult) -> float | None:
    """The lineage's training energy the policy reasons with: priced by work in the baseline's joules
    when priced (`price_training`), else as measured."""
    if c.train_ratio_vs_baseline is not None and baseline.train_energy_j is not None:
        return c.train_ratio_vs_baseline * baseline.train_energy_j
    return c.train_energy_j


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


def cost(c: CandidateResult) -> float | None:
    """What compression must lower: inference energy, or latency when the meter reads nothing."""
    if c.inference_energy_j_per_1k:
        return c.inference_energy_j_per_1k
    return c.latency_ms_per_batch


def relative_cost(c: CandidateResult, baseline: CandidateResult) -> float | None:
    """`cost` over the baseline's, for ranking candidates: the paired ratio where measured so (windows
    measured apart drift more than the candidates differ), else the quotient of the two costs."""
    if c.index == baseline.index:
        return 1.0
    if c.inference_ratio_vs_baseline is not None:
        return c.inference_ratio_vs_baseline
    mine, theirs = cost(c), cost(baseline)
    return None if mine is None or not theirs else mine / theirs


def cost_err(c: CandidateResult) -> float:
    """Standard error of `cost` (0 where only latency, a median, is available)."""
    return c.inference_energy_sem_j_per_1k if c.inference_energy_j_per_1k else 0.0


def gain_pct(parent: CandidateResult, child: CandidateResult) -> float | None:
    before, after = cost(parent), cost(child)
    if before is None or after is None or before <= 0:
        return None
    return (1 - after / before) * 100


def kept(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    """Whether a candidate may serve as the base of later rungs, and why."""
    if not c.ok:
        return False, f"rejected: {c.rejected_reason}"
    if c.step.kind in (StepKind.BASELINE, StepKind.EARLY_STOPPING):
        return True, "reference"
    baseline = history[0]
    if not quality_ok(scenario.targets, c, baseline):
        return False, "breaks an accuracy target"
    if c.step.kind in (StepKind.MIXED_PRECISION, StepKind.BATCH):
        return _training_gain(scenario, history, c)
    if c.step.kind == StepKind.SCRATCH and c.step.parent is not None:
        return _retrained_cheaper(scenario, history, c)
    parent = history[c.step.parent] if c.step.parent is not None else baseline
    paired = _paired_gain(scenario, parent, c)
    if paired is not None:
        return paired
    gain = gain_pct(parent, c)
    if gain is None:
        return False, "no inference cost measured"
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% inference cost vs #{parent.index} on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    sigmas = scenario.measurement.significance_sigmas
    if not significantly_less(cost(c) or 0.0, cost_err(c), cost(parent) or 0.0, cost_err(parent), sigmas):
        return (
            False,
            f"saved {gain:.1f}% vs #{parent.index}, within {sigmas:g} combined standard errors: noise, not a gain",
        )
    return True, f"saved {gain:.1f}% inference cost vs #{parent.index}"


def _paired_gain(scenario: Scenario, parent: CandidateResult, c: CandidateResult) -> tuple[bool, str] | None:
    """`kept`'s inference test on the paired ratios (both measured against the baseline), when there are."""
    mine, theirs = c.inference_ratio_vs_baseline, parent.inference_ratio_vs_baseline
    if parent.index == 0 and mine is not None:
        theirs = 1.0
    if mine is None or theirs is None or mine <= 0 or theirs <= 0:
        return None
    gain = (1 - mine / theirs) * 100
    sigmas = scenario.measurement.significance_sigmas
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% inference cost vs #{parent.index} (paired) on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    their_sem = parent.inference_ratio_log_sem if parent.index else 0.0
    if not math.log(mine) + sigmas * math.hypot(c.inference_ratio_log_sem, their_sem) < math.log(theirs):
        return (
            False,
            f"saved {gain:.1f}% vs #{parent.index} (paired), within {sigmas:g} combined standard errors: "
            "noise, not a gain",
        )
    return True, f"saved {gain:.1f}% inference cost vs #{parent.index} (paired)"


def _retrained_cheaper(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    """`kept` for `scratch`: its parent's architecture, so no inference gain over it to show; it is kept when its
    lineage cost at least `min_gain_pct` less to train than the parent's, both priced by work (no noise test yet,
    unlike `_training_gain`)."""
    parent, baseline = history[c.step.parent or 0], history[0]
    mine, theirs = train_cost_j(c, baseline), train_cost_j(parent, baseline)
    if mine is None or theirs is None or theirs <= 0:
        return False, f"no training cost to compare with #{parent.index}'s"
    gain = (1 - mine / theirs) * 100
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{parent.index} (needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    return True, f"saved {gain:.1f}% training energy vs #{parent.index}, same architecture"


def _training_gain(scenario: Scenario, history: list[CandidateResult], c: CandidateResult) -> tuple[bool, str]:
    recipe = next((h for h in history if h.step.kind == StepKind.EARLY_STOPPING and h.ok), None)
    if recipe is None or recipe.train_energy_j is None or c.train_energy_j is None or recipe.train_energy_j <= 0:
        return False, "no recipe training energy to compare with"
    gain = (1 - c.train_energy_j / recipe.train_energy_j) * 100
    sigmas = scenario.measurement.significance_sigmas
    if gain < scenario.ladder.min_gain_pct:
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{recipe.index} on this hardware "
            f"(needs >= {scenario.ladder.min_gain_pct:g}%)",
        )
    if not significantly_less(
        c.train_energy_j, c.train_energy_sem_j, recipe.train_energy_j, recipe.train_energy_sem_j, sigmas
    ):
        return (
            False,
            f"saved {gain:.1f}% training energy vs #{recipe.index}, within {sigmas:g} combined standard errors: "
            "noise, not a gain",
        )
    return True, f"saved {gain:.1f}% training energy vs #{recipe.index}"


def _recipe(scenario: Scenario, history: list[CandidateResult]) -> CandidateResult:
    """The base of compression: the kept training variant (mixed precision, larger batch) that cost
    least to train, else early stopping, else the baseline."""
    variants = [
        c
        for c in history
        if c.step.kind in (StepKind.MIXED_PRECISION, StepKind.BATCH) and c.ok and kept(scenario, history, c)[0]
    ]
    if variants:
        return min(variants, key=lambda c: (c.train_energy_j or float("inf"), c.index))
    for c in history:
        if c.step.kind == StepKind.EARLY_STOPPING and c.ok:
            return c
    return history[0]


def _cheapest(candidates: list[CandidateResult], baseline: CandidateResult) -> CandidateResult:
    """The candidate with the lowest `relative_cost` (the earliest on a tie)."""
    return min(candidates, key=lambda c: (relative_cost(c, baseline) or float("inf"), c.index))


def _servable(scenario: Scenario, history: list[CandidateResult]) -> list[CandidateResult]:
    """Kept candidates that are not serving forms: the models a serving form or a student can start from."""
    return [c for c in history[1:] if c.step.kind not in SERVING_FORMS and kept(scenario, history, c)[0]]


def _best_fp32(scenario: Scenario, history: list[CandidateResult]) -> CandidateResult:
    """Lowest-cost kept candidate that is not a precision step (precisions do not stack), among those
    within the training and quality targets when any is: a derived model only adds training to its
    parent's, and does not win back accuracy."""
    pool = _servable(scenario, history)
    within = [
        c
        for c in pool
        if not any(m in TRAINING_TARGETS + QUALITY_TARGETS for m in missed_targets(scenario, c, history[0]))
    ]
    if not pool:
        return history[0]
    return _cheapest(within or pool, history[0])


def _early_stopping(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    if any(c.step.kind == StepKind.EARLY_STOPPING for c in history):
        return None
    return Next(step=Step(kind=StepKind.EARLY_STOPPING, parent=0), why="train the recipe with early stopping")


def _mixed_precision_allowed(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> bool:
    ladder = scenario.ladder
    if not ladder.mixed_precision_training or any(c.step.kind == StepKind.MIXED_PRECISION for c in history):
        return False
    return use is None or use.helps(use.train_ratio, "autocast", ladder.min_gain_pct)


def _mixed_precision(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    if not _mixed_precision_allowed(scenario, history, use):
        return None
    return Next(
        step=Step(kind=StepKind.MIXED_PRECISION, value="autocast", parent=0), why="train the recipe under autocast"
    )


def _batch_factors_left(scenario: Scenario, history: list[CandidateResult]) -> list[int]:
    tried = {float(c.step.value) for c in history if c.step.kind == StepKind.BATCH and c.step.value is not None}
    return [f for f in scenario.ladder.training_batch_factors if float(f) not in tried]


def _batch(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    left = _batch_factors_left(scenario, history)
    if not left:
        return None
    return Next(
        step=Step(kind=StepKind.BATCH, value=float(left[0]), parent=0),
        why=f"train the recipe at {left[0]}x the batch size",
    )


def _recipe_siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, use: Calibration | None
) -> list[Step]:
    """The recipe and its mixed-precision and batch twins train from scratch: they need no parent's model."""
    kinds = {c.step.kind for c in history}
    out = (
        []
        if first.kind == StepKind.EARLY_STOPPING or StepKind.EARLY_STOPPING in kinds
        else [Step(kind=StepKind.EARLY_STOPPING, parent=0)]
    )
    # With no history the baseline is not measured yet, so `recipe_first` cannot price a training target: the first
    # parallel batch still trains the recipe's twins beside the baseline, as it did before the rule.
    if history and not recipe_first(scenario, history):
        return out
    if _mixed_precision_allowed(scenario, history, use):
        out.append(Step(kind=StepKind.MIXED_PRECISION, value="autocast", parent=0))
    return out + [Step(kind=StepKind.BATCH, value=float(f), parent=0) for f in _batch_factors_left(scenario, history)]


def _prune(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    pruned = [c for c in history if c.step.kind == StepKind.PRUNE]
    if any(not quality_ok(scenario.targets, c, history[0]) for c in pruned):
        # A ratio broke an accuracy target: on the labels, larger ones would too. Back off (or go on, on soft labels),
        # if allowed.
        return _backoff(scenario, history) if scenario.ladder.accuracy_backoff else None
    base = _recipe(scenario, history)
    tried = {float(c.step.value) for c in pruned if c.step.value is not None}
    for ratio in scenario.ladder.pruning_ratios:
        if ratio not in tried and all(ratio > t for t in tried):
            return Next(
                step=Step(kind=StepKind.PRUNE, value=ratio, parent=base.index),
                why=f"prune {ratio:.0%} of channels of #{base.index}",
            )
    return None


def _prune_siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, use: Calibration | None
) -> list[Step]:
    tried = {float(c.step.value) for c in history if c.step.kind == StepKind.PRUNE and c.step.value is not None}
    return [
        Step(kind=StepKind.PRUNE, value=r, parent=first.parent)
        for r in scenario.ladder.pruning_ratios
        if r > float(first.value or 0) and r not in tried
    ]


def _distilled(history: list[CandidateResult]) -> set[float]:
    return {float(c.step.value) for c in history if c.step.kind == StepKind.DISTILL and c.step.value is not None}


def _distill(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    done = _distilled(history)
    for factor in scenario.ladder.distill_width_factors:
        if factor not in done:
            teacher = _best_fp32(scenario, history)
            return Next(
                step=Step(kind=StepKind.DISTILL, value=factor, parent=teacher.index),
                why=f"distil #{teacher.index} into a {factor:g}x student",
            )
    return None


def _distill_siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, use: Calibration | None
) -> list[Step]:
    done = _distilled(history)
    return [
        Step(kind=StepKind.DISTILL, value=f, parent=first.parent)
        for f in scenario.ladder.distill_width_factors
        if f not in done and f != first.value
    ]


def _search(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    ladder = scenario.ladder
    if not ladder.search_hidden or any(c.step.kind == StepKind.SEARCH for c in history):
        return None
    base = _recipe(scenario, history)
    return Next(
        step=Step(kind=StepKind.SEARCH, parent=base.index),
        why=f"search {len(ladder.search_hidden)} architectures under the energy cap",
    )


def _precisions_allowed(scenario: Scenario, use: Calibration | None) -> list[str]:
    """The ladder's precisions that this machine's calibration does not rule out, in ladder order."""
    ladder = scenario.ladder
    return [p for p in ladder.precisions if use is None or use.helps(use.inference_ratio, p, ladder.min_gain_pct)]


def _precisions_left(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> list[str]:
    done = {str(c.step.value) for c in history if c.step.kind == StepKind.PRECISION}
    return [p for p in _precisions_allowed(scenario, use) if p not in done]


def _precision(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    left = _precisions_left(scenario, history, use)
    if not left:
        return None
    parent = _best_fp32(scenario, history)
    return Next(
        step=Step(kind=StepKind.PRECISION, value=left[0], parent=parent.index), why=f"run #{parent.index} at {left[0]}"
    )


def _precision_siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, use: Calibration | None
) -> list[Step]:
    return [
        Step(kind=StepKind.PRECISION, value=p, parent=first.parent)
        for p in _precisions_left(scenario, history, use)
        if p != first.value
    ]


def _qat(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    ptq = [c for c in history if c.step.kind == StepKind.PRECISION and c.step.value == "int8"]
    if (
        not scenario.ladder.qat
        or not ptq
        or quality_ok(scenario.targets, ptq[-1], history[0])
        or any(c.step.kind == StepKind.QAT for c in history)
    ):
        return None
    parent_index = ptq[-1].step.parent if ptq[-1].step.parent is not None else 0
    return Next(
        step=Step(kind=StepKind.QAT, value="int8", parent=parent_index),
        why=f"int8 PTQ lost accuracy: quantization-aware training of #{parent_index}",
    )


def _fuse(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    if not scenario.ladder.fuse_inference or any(c.step.kind == StepKind.FUSE for c in history):
        return None
    parent = _best_fp32(scenario, history)
    return Next(
        step=Step(kind=StepKind.FUSE, parent=parent.index), why=f"serve #{parent.index} in its fused torch form"
    )


def _ort_left(scenario: Scenario, history: list[CandidateResult]) -> list[str]:
    done = {str(c.step.value) for c in history if c.step.kind == StepKind.ORT}
    return [p for p in scenario.ladder.onnx_runtime if p not in done]


def _ort(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    left = _ort_left(scenario, history)
    if not left:
        return None
    parent = _best_fp32(scenario, history)
    return Next(
        step=Step(kind=StepKind.ORT, value=left[0], parent=parent.index),
        why=f"serve #{parent.index} under onnxruntime at {left[0]}",
    )


def _ort_siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, use: Calibration | None
) -> list[Step]:
    return [
        Step(kind=StepKind.ORT, value=p, parent=first.parent) for p in _ort_left(scenario, history) if p != first.value
    ]


def _training_moves_only(scenario: Scenario, history: list[CandidateResult], use: Calibration | None) -> Next | None:
    """Rungs that only `_training_move` chooses (they answer a missed training target, not the ladder)."""
    return None


class Rung(NamedTuple):
    """One kind of ladder step: its next step given the history (None: nothing left of it), and optionally
    the steps of the same rung that can train alongside a first one (parallel mode)."""

    kind: StepKind
    next: Callable[[Scenario, list[CandidateResult], Calibration | None], Next | None]
    siblings: Callable[[Scenario, list[CandidateResult], Step, Calibration | None], list[Step]] | None = None


# The ladder, in order. Adding a rung: a StepKind, an entry here, its producer in tasks/energy_loop/candidate.py.
RUNGS: tuple[Rung, ...] = (
    Rung(StepKind.BASELINE, lambda scenario, history, use: None, _recipe_siblings),  # `decide` measures it first
    Rung(StepKind.EARLY_STOPPING, _early_stopping, _recipe_siblings),
    Rung(StepKind.MIXED_PRECISION, _mixed_precision),
    Rung(StepKind.BATCH, _batch),
    Rung(StepKind.PRUNE, _prune, _prune_siblings),
    Rung(StepKind.DISTILL, _distill, _distill_siblings),
    Rung(StepKind.SEARCH, _search),
    Rung(StepKind.FUSE, _fuse),
    Rung(StepKind.PRECISION, _precision, _precision_siblings),
    Rung(StepKind.QAT, _qat),
    Rung(StepKind.ORT, _ort, _ort_siblings),
    # Training-cost moves: `_training_move` picks them for a missed training-energy target; walking the ladder passes
    # over them.
    Rung(StepKind.PRUNE_EARLY, _training_moves_only),
    Rung(StepKind.PRUNE_ES, _training_moves_only),
    Rung(StepKind.SCRATCH, _training_moves_only),
)


# Retraining the recipe under autocast or at a larger batch changes what training costs, never the model served.
RECIPE_VARIANTS = (StepKind.MIXED_PRECISION, StepKind.BATCH)


def recipe_first(scenario: Scenario, history: list[CandidateResult]) -> bool:
    """Whether the ladder tries the cheaper recipes before compressing: only when the training target leaves no room
    for a fine-tune on top of the recipe (below the baseline's own cost). Otherwise they answer a missed training target
    (`_training_move`) and a model that misses only inference is not retrained for them."""
    limit = train_limit_j(scenario.targets, history[0]) if history else None
    base_j = history[0].train_energy_j if history else None
    return limit is not None and base_j is not None and limit < base_j


def _compression_rung(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None
) -> Next | None:
    """The next rung of the ladder (what lowers inference cost), in ladder order."""
    use = calibration if scenario.ladder.use_calibration else None
    rungs = RUNGS if recipe_first(scenario, history) else [r for r in RUNGS if r.kind not in RECIPE_VARIANTS]
    return next((n for rung in rungs if (n := rung.next(scenario, history, use)) is not None), None)


def missed_targets(scenario: Scenario, c: CandidateResult, baseline: CandidateResult) -> list[str]:
    """Names of the gate checks `c` fails, in gate order."""
    return [x.name for x in judge(scenario, c, baseline).failed]


def _teacher(scenario: Scenario, history: list[CandidateResult], parent: CandidateResult) -> CandidateResult:
    """The teacher of a back-off fine-tune of `parent`'s pruned copy: the trained torch fp32 model with the best
    quality (accuracy, else lowest RMSE) among those whose training, added to `parent`'s lineage, stays within the
    training target (the taught model's lineage includes its teacher's: tasks/energy_loop/candidate.py). `parent` adds
    nothing."""
    baseline = history[0]
    limit = train_limit_j(scenario.targets, baseline)
    pool = [c for c in history if c.ok and c.step.kind not in SERVING_FORMS]
    for c in sorted(pool, key=lambda c: (-(c.accuracy if c.accuracy is not None else -(c.rmse or 0.0)), c.index)):
        union = _union_cost_j(history, [*parent.train_segments, *c.train_segments])
        if c.index == parent.index or limit is None or (union is not None and union <= limit):
            return c
    return parent


def _better(teacher: CandidateResult, student: CandidateResult) -> bool:
    """Whether `teacher` scored better than `student` (higher accuracy, else lower RMSE): only then can its soft labels
    help."""
    if teacher.accuracy is not None and student.accuracy is not None:
        return teacher.accuracy > student.accuracy
    return teacher.rmse is not None and student.rmse is not None and teacher.rmse < student.rmse


def _union_cost_j(history: list[CandidateResult], segments: list[TrainSegment]) -> float | None:
    """What training these runs costs, each run once, priced by work in the baseline's joules (None: unpriced)."""
    baseline = history[0]
    priced = priced_ratio(
        distinct_runs(segments), baseline.train_segments, epoch_prices(s for c in history for s in c.train_segments)
    )
    if priced is None or baseline.train_energy_j is None:
        return None
    return priced[0] * baseline.train_energy_j


def _backoff(scenario: Scenario, history: list[CandidateResult]) -> Next | None:
    """Accuracy back-off once a pruning ratio broke a quality target (a training miss it may also have
    is left to the training-cost moves). From a ratio that met every inference target, each move once:
    the ratio halfway back to the largest one that kept quality; the same ratio fine-tuned on the soft
    labels of the most accurate model the training target affords (`_teacher`, `ladder.backoff_teacher`); the
    same ratio fine-tuned twice as long.
    A ratio that missed inference as well is not backed off from but overtaken: the next larger ratio
    fine-tuned on those soft labels (`_taught_further`). A step from a taught ratio stays taught."""
    baseline = history[0]
    pruned = [c for c in history if c.step.kind == StepKind.PRUNE and c.ok and c.step.value is not None]
    values = {c.index: float(c.step.value) for c in pruned}  # type: ignore[arg-type]
    for broken in pruned:
        misses = missed_targets(scenario, broken, baseline)
        if any(m in INFERENCE_TARGETS for m in misses):
            further = _taught_further(scenario, history, broken)
            if further is not None:
                return further
            continue
        if not any(m in QUALITY_TARGETS for m in misses):
            continue
        ratio, target, taught = (
            values[broken.index],
            next(m for m in misses if m in QUALITY_TARGETS),
            broken.step.teacher,
        )
        parent = broken.step.parent if broken.step.parent is not None else 0
        below = max((r for r in scenario.ladder.pruning_ratios if r < ratio), default=0.0)
        same = [c.step for c in history if c.step.kind == StepKind.PRUNE and c.step.value == broken.step.value]
        if ratio in scenario.ladder.pruning_ratios and not any(below < v < ratio for v in values.values()):
            good = max(
                (
                    values[c.index]
                    for c in pruned
                    if values[c.index] < ratio and quality_ok(scenario.targets, c, baseline)
                ),
                default=0.0,
            )
            mid = round((good + ratio) / 2, 3)
            why = f"{target}: prune:{ratio:g} met the inference targets but broke it; back off to {mid:g}"
            return Next(
                step=Step(kind=StepKind.PRUNE, value=mid, parent=parent, teacher=taught, target=target),
                why=why,
                target=target,
            )
        if scenario.ladder.backoff_teacher and not any(s.teacher is not None for s in same):
            teacher = _teacher(scenario, history, history[parent])  # priced only when the opt-in asks for it
            if _better(teacher, broken):
                why = (
                    f"{target}: prune:{ratio:g} met the inference targets but broke it; fine-tune it on the soft "
                    f"labels of #{teacher.index}"
                )
                step = Step(
                    kind=StepKind.PRUNE, value=broken.step.value, parent=parent, teacher=teacher.index, target=target
                )
                return Next(step=step, why=why, target=target)
        if not any(s.epochs is not None for s in same):
            epochs = 2 * scenario.training.fine_tune_epochs
            why = (
                f"{target}: prune:{ratio:g} met the inference targets but broke it; fine-tune it for {epochs} "
                "epochs instead"
            )
            step = Step(
                kind=StepKind.PRUNE,
                value=broken.step.value,
                parent=parent,
                epochs=epochs,
                teacher=taught,
                target=target,
            )
            return Next(step=step, why=why, target=target)
    return None


# Soft labels can win back a small accuracy loss, not a collapse: a ratio whose drop is within this many times
# the allowed drop is overtaken on a teacher's soft labels; one that lost more ends the pruning ladder.
NEAR_MISS_FACTOR = 2.0


def _near_miss(scenario: Scenario, c: CandidateResult, baseline: CandidateResult) -> bool:
    """Whether `c`'s only quality miss is an accuracy drop within `NEAR_MISS_FACTOR` times the allowed one."""
    allowed = scenario.targets.max_accuracy_drop_pt
    misses = [m for m in missed_targets(scenario, c, baseline) if m in QUALITY_TARGETS]
    if misses != ["accuracy_drop_pt"] or allowed is None or c.accuracy is None or baseline.accuracy is None:
        return False
    return (baseline.accuracy - c.accuracy) * 100 <= NEAR_MISS_FACTOR * allowed


def _taught_further(scenario: Scenario, history: list[CandidateResult], short: CandidateResult) -> Next | None:
    """For a pruned candidate that missed an inference target and either just missed accuracy on the labels
    (`_near_miss`) or kept quality on a teacher's soft labels: the next larger ratio of the ladder, fine-tuned on
    the soft labels of `_teacher` (each ratio once; none once a taught ratio broke quality)."""
    if not scenario.ladder.backoff_teacher:
        return None
    baseline = history[0]
    taught = [c for c in history if c.step.kind == StepKind.PRUNE and c.step.teacher is not None]
    if short.step.teacher is None and not _near_miss(scenario, short, baseline):
        return (
            None  # the labels kept quality (the plain ladder goes on from it), or lost more than soft labels win back
        )
    if any(not quality_ok(scenario.targets, c, baseline) for c in taught):
        return None
    ratio = float(short.step.value)  # type: ignore[arg-type]
    tried = {float(c.step.value) for c in taught if c.step.value is not None}
    larger = [r for r in scenario.ladder.pruning_ratios if r > ratio and r not in tried]
    if not larger:
        return None
    target = next(m for m in missed_targets(scenario, short, baseline) if m in INFERENCE_TARGETS)
    parent = short.step.parent if short.step.parent is not None else 0
    teacher = short.step.teacher
    if teacher is None:
        found = _teacher(scenario, history, history[parent])
        if not _better(found, short):
            return None  # no teacher the training target affords knows more than the labels did
        teacher = found.index
    how = "kept quality on the soft labels" if short.step.teacher is not None else "broke quality"
    why = (
        f"{target}: prune:{ratio:g} {how} but missed it; prune {larger[0]:.0%} and fine-tune on the soft labels "
        f"of #{teacher}"
    )
    return Next(
        step=Step(kind=StepKind.PRUNE, value=larger[0], parent=parent, teacher=teacher, target=target),
        why=why,
        target=target,
    )


def train_limit_j(targets: Targets, baseline: CandidateResult) -> float | None:
    """The training energy (J) the scenario allows, absolute or relative to the baseline."""
    limits = [targets.max_train_energy_j] if targets.max_train_energy_j is not None else []
    if targets.max_train_energy_vs_baseline is not None and baseline.train_energy_j:
        limits.append(targets.max_train_energy_vs_baseline * baseline.train_energy_j)
    return min(limits) if limits else None


def fine_tune_budget_epochs(scenario: Scenario, history: list[CandidateResult], derived: CandidateResult) -> int | None:
    """Training epochs the training target leaves after `derived`'s parent (a pruned model's fine-tune, a
    student's distillation), at the cost per epoch `derived` showed (80 % of what is left, for the gate's
    noise margin), at most the scenario's epochs for that training; None when unknown."""
    baseline = history[0]
    limit = train_limit_j(scenario.targets, baseline)
    derived_j = train_cost_j(derived, baseline)
    if limit is None or derived.step.parent is None or derived_j is None:
        return None
    parent_j = train_cost_j(history[derived.step.parent], baseline)
    if parent_j is None:
        return None
    cap = scenario.training.max_epochs if derived.step.kind == StepKind.DISTILL else scenario.training.fine_tune_epochs
    steps = scenario.ladder.pruning_iterative_steps if derived.step.kind == StepKind.PRUNE else 1
    epochs_run = (derived.epochs_run or cap) * steps
    per_epoch_j = (derived_j - parent_j) / max(1, epochs_run)
    if per_epoch_j <= 0:
        return None
    return min(cap, math.floor(0.8 * (limit - parent_j) / per_epoch_j))


COMPRESSED = (StepKind.PRUNE, StepKind.PRUNE_EARLY, StepKind.PRUNE_ES, StepKind.DISTILL, StepKind.SEARCH)


def _training_move(
    scenario: Scenario,
    history: list[CandidateResult],
    focus: CandidateResult,
    target: str,
    calibration: Calibration | None,
) -> Next | None:
    """The next move that can cut the training cost of `focus`'s lineage, or None when none is left."""
    ladder = scenario.ladder
    use = calibration if ladder.use_calibration else None

    def move(step: Step, why: str) -> Next:
        return Next(step=step.model_copy(update={"target": target}), why=f"{target}: {why}", target=target)

    for variant in (_mixed_precision, _batch):  # the recipe's training variants first: they cost least to try
        found = variant(scenario, history, use)
        if found is not None:
            return move(found.step, found.why)
    if not ladder.training_moves or focus.step.kind not in COMPRESSED:
        return None
    done = {(c.step.kind, c.step.value, c.step.parent) for c in history}
    if focus.step.kind in (StepKind.PRUNE, StepKind.PRUNE_ES) and focus.step.value is not None:
        ratio = float(focus.step.value)
        recipe = _recipe(scenario, history)
        if not any(c.step.kind == StepKind.PRUNE_EARLY and c.step.value == ratio for c in history):
            at = scenario.training.prune_at_epoch
            return move(
                Step(kind=StepKind.PRUNE_EARLY, value=ratio, parent=recipe.index),
                f"prune {ratio:.0%} inside the recipe after epoch {at} and keep training",
            )
        parent = focus.step.parent if focus.step.parent is not None else recipe.index
        epochs = fine_tune_budget_epochs(scenario, history, focus)
        if (
            epochs is not None
            and epochs >= 1
            and not any(c.step.kind == StepKind.PRUNE_ES and c.step.value == ratio for c in history)
        ):
            why = (
                f"prune {ratio:.0%} of #{parent} and fine-tune with early stopping for at most the {epochs} epochs "
                "the target leaves"
            )
            return move(Step(kind=StepKind.PRUNE_ES, value=ratio, parent=parent, epochs=epochs), why)
    if focus.step.kind == StepKind.DISTILL and focus.step.epochs is None and focus.step.parent is not None:
        epochs = fine_tune_budget_epochs(scenario, history, focus)
        again = any(
            c.step.kind == StepKind.DISTILL and c.step.epochs is not None and c.step.parent == focus.step.parent
            for c in history
        )
        ran = focus.epochs_run or scenario.training.max_epochs
        # Cut to under half its epochs, a distillation falls well short of the student it made (a built-in student
        # starts from fresh weights): its architecture from scratch is the better bet then.
        if epochs is not None and max(1, ran // 2) <= epochs < ran and not again:
            why = (
                f"distil #{focus.step.parent} into the same student with early stopping for at most the {epochs} "
                "epochs the target leaves"
            )
            return move(
                Step(kind=StepKind.DISTILL, value=focus.step.value, parent=focus.step.parent, epochs=epochs), why
            )
    if (StepKind.SCRATCH, None, focus.index) not in done and focus.step.kind != StepKind.SCRATCH:
        return move(
            Step(kind=StepKind.SCRATCH, parent=focus.index),
            f"train #{focus.index}'s architecture from scratch with early stopping",
        )
    return None


# Rungs whose model derives from a parent's: their lineage costs at least the parent's training.
DERIVED = (StepKind.PRUNE, StepKind.DISTILL, *SERVING_FORMS)


def _floor_j(history: list[CandidateResult], step: Step) -> float | None:
    """The least training energy `step`'s lineage can cost: its parent's, plus for pruning the cheapest
    fine-tune seen so far; None when unknown (a rung that trains from scratch, an unpriced parent)."""
    if step.kind not in DERIVED or step.parent is None:
        return None
    baseline = history[0]
    parent_j = train_cost_j(history[step.parent], baseline)
    if parent_j is None or step.kind != StepKind.PRUNE:
        return parent_j
    extras = [
        pruned_j - (train_cost_j(history[c.step.parent], baseline) or 0.0)
        for c in history
        if c.step.kind == StepKind.PRUNE
        and c.ok
        and c.step.parent is not None
        and (pruned_j := train_cost_j(c, baseline)) is not None
    ]
    return parent_j + max(0.0, min(extras, default=0.0))


def _within_training(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None, target: str
) -> Next | Final | None:
    """With no training-cost move left: the first rung left whose lineage can still come in under the
    training target; a Final naming the target when every rung left derives from too costly a model."""
    use = calibration if scenario.ladder.use_calibration else None
    limit = train_limit_j(scenario.targets, history[0])
    floors: list[float] = []
    for rung in RUNGS:
        found = rung.next(scenario, history, use)
        if found is None:
            continue
        floor = _floor_j(history, found.step)
        if limit is None or floor is None or floor <= limit:
            if found.target is not None:
                return found
            return Next(
                step=found.step.model_copy(update={"target": target}), why=f"{target}: {found.why}", target=target
            )
        floors.append(floor)
    if not floors or limit is None:
        return None  # nothing left at all: `decide` reports the target unreachable
    reason = (
        f"unreachable: {target}: no training-cost move left, and every rung left derives from a model whose "
        f"training already cost {min(floors):.4g} J > {limit:.4g} J allowed; {_why_not(scenario, history)}"
    )
    return Final(state=FinalState.FAILED, reason=reason, unreachable=target)


def _training_before_serving(
    scenario: Scenario, history: list[CandidateResult], serving: Step, calibration: Calibration | None
) -> Next | None:
    """A serving form serves `_best_fp32`, which passes over a model cheaper to run when that one misses a training
    target. A serving form scales its parent's inference cost and keeps its training cost, so before serving the
    costlier model, cut the cheaper one's training cost while a training-cost move for it is left."""
    baseline = history[0]
    pool = _servable(scenario, history)
    if not pool:
        return None
    cheapest = _cheapest(pool, baseline)
    mine, theirs = relative_cost(cheapest, baseline), relative_cost(history[serving.parent or 0], baseline)
    if mine is None or theirs is None or mine > theirs * (1 - scenario.ladder.min_gain_pct / 100):
        return None  # the parent served is as cheap to run, within the gain the ladder asks of a rung
    training = [m for m in missed_targets(scenario, cheapest, baseline) if m in TRAINING_TARGETS]
    return _training_move(scenario, history, cheapest, training[0], calibration) if training else None


def _next_rung(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None
) -> Next | Final | None:
    """The move for the target the closest candidate misses: compression for inference energy or
    latency, training-cost moves for training energy; a Final when a target is shown unreachable."""
    kinds = {c.step.kind for c in history}
    if StepKind.EARLY_STOPPING not in kinds:
        return _compression_rung(scenario, history, calibration)
    baseline = history[0]
    focus = closest(scenario, history) or baseline
    misses = missed_targets(scenario, focus, baseline)
    inference = [m for m in misses if m in INFERENCE_TARGETS]
    training = [m for m in misses if m in TRAINING_TARGETS]
    if training and not inference:
        found = _training_move(scenario, history, focus, training[0], calibration)
        return found if found is not None else _within_training(scenario, history, calibration, training[0])
    rung = _compression_rung(scenario, history, calibration)
    if rung is not None and rung.step.kind in SERVING_FORMS:
        first = _training_before_serving(scenario, history, rung.step, calibration)
        if first is not None:
            return first
    if rung is None or rung.target is not None:
        return rung
    if not misses:
        return rung
    target = (inference or training or misses)[0]
    return Next(step=rung.step.model_copy(update={"target": target}), why=f"{target}: {rung.why}", target=target)


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


def _why_not(scenario: Scenario, history: list[CandidateResult]) -> str:
    best = closest(scenario, history)
    if best is None:
        return "no candidate was trained"
    return (
        f"closest was #{best.index} ({'+'.join(best.lineage) or best.step.label}): "
        f"{judge(scenario, best, history[0]).summary()}"
    )


def _serving_forms(
    scenario: Scenario, history: list[CandidateResult], parent: CandidateResult, use: Calibration | None
) -> list[Step]:
    """The serving forms of `parent` the ladder allows and this machine's calibration does not rule out, in ladder
    order, less those already measured for it."""
    ladder = scenario.ladder
    forms = [Step(kind=StepKind.FUSE, parent=parent.index)] if ladder.fuse_inference else []
    forms += [Step(kind=StepKind.PRECISION, value=p, parent=parent.index) for p in _precisions_allowed(scenario, use)]
    forms += [Step(kind=StepKind.ORT, value=p, parent=parent.index) for p in ladder.onnx_runtime]
    tried = {
        (c.step.kind, c.step.value) for c in history if c.step.parent == parent.index and c.step.kind in SERVING_FORMS
    }
    return [s for s in forms if (s.kind, s.value) not in tried]


def _serve_every_form(
    scenario: Scenario, history: list[CandidateResult], best: CandidateResult, calibration: Calibration | None
) -> Next | None:
    """Once a model passes, the trained model behind it is served in each form the ladder allows, once each (`decide`
    asks only while the budget allows), and the loop returns the cheapest that passes: which form happened to pass first
    must not decide the model people get (the ladder meets them in a fixed order, and their costs differ by less than
    a run's drift)."""
    if not scenario.ladder.serve_every_form:
        return None
    parent = history[best.step.parent or 0] if best.step.kind in SERVING_FORMS else best
    use = calibration if scenario.ladder.use_calibration else None
    left = _serving_forms(scenario, history, parent, use)
    if not left:
        return None
    return Next(
        step=left[0],
        why=f"#{best.index} meets every target: serve #{parent.index} as {left[0].label} too, keep the "
        "cheapest that passes",
    )


def decide(scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None = None) -> Next | Final:
    """The next step of the loop, or the state it ends in. `calibration` lets it skip rungs
    this machine has shown cannot save energy."""
    if not history:
        return Next(step=Step(kind=StepKind.BASELINE), why="measure the unoptimised baseline")
    baseline = history[0]
    if not baseline.ok:
        return Final(state=FinalState.FAILED, reason=f"baseline could not be trained: {baseline.rejected_reason}")
    # Serially only the latest candidate can newly pass; a parallel batch may hold several: the cheapest wins.
    passing = [c for c in history[1:] if c.ok and judge(scenario, c, baseline).passed]
    used, spent, limit = (
        iterations_used(history),
        sum(c.spent_energy_j for c in history),
        scenario.budget.max_total_energy_j,
    )
    # Refusals cost no iteration, but the rungs that can refuse are finite: twice the budget bounds the loop regardless.
    out_of_iterations = used >= scenario.budget.max_iterations or len(history) >= 2 * scenario.budget.max_iterations
    budget_left = not out_of_iterations and (limit is None or spent < limit)
    if passing:
        best = _cheapest(passing, baseline)
        served = _serve_every_form(scenario, history, best, calibration) if budget_left else None
        if served is not None:
            return served
        return Final(
            state=FinalState.PASSED,
            reason=f"#{best.index} ({'+'.join(best.lineage)}) meets every target",
            chosen=best.index,
        )
    if out_of_iterations:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            reason=f"used {used} of {scenario.budget.max_iterations} iterations; {_why_not(scenario, history)}",
        )
    if limit is not None and spent >= limit:
        return Final(
            state=FinalState.BUDGET_EXHAUSTED,
            reason=f"spent {spent:.1f} J of {limit:g} J; {_why_not(scenario, history)}",
        )
    step = _next_rung(scenario, history, calibration)
    if step is None:
        nearest = closest(scenario, history)
        misses = missed_targets(scenario, nearest, baseline) if nearest is not None else []
        why = _why_not(scenario, history)
        if not misses:
            return Final(state=FinalState.FAILED, reason=f"no rung left on the ladder; {why}")
        return Final(
            state=FinalState.FAILED,
            reason=f"unreachable: {misses[0]}: no rung left on the ladder can reach it; {why}",
            unreachable=misses[0],
        )
    return step


def _siblings(
    scenario: Scenario, history: list[CandidateResult], first: Step, calibration: Calibration | None
) -> list[Step]:
    """Steps of the same rung that do not depend on `first`'s result, in ladder order."""
    rung = next(r for r in RUNGS if r.kind == first.kind)
    use = calibration if scenario.ladder.use_calibration else None
    return [] if rung.siblings is None else rung.siblings(scenario, history, first, use)


def plan_batch(
    scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None = None, width: int = 1
) -> list[Next] | Final:
    """Up to `width` steps that can be produced at once: `decide`'s next step, then the
    steps of the same rung that do not need its result (e.g. the next pruning ratios).

    Parallel mode trades energy for wall time: the serial ladder stops pruning at the first
    ratio that breaks a target, a batch may already have trained the larger ones. The batch
    never exceeds the remaining iteration budget."""
    first = decide(scenario, history, calibration)
    if isinstance(first, Final) or width <= 1:
        return first if isinstance(first, Final) else [first]
    room = scenario.budget.max_iterations - iterations_used(history)
    steps = [first.step, *_siblings(scenario, history, first.step, calibration)][: max(1, min(width, room))]
    return [first, *(Next(step=s, why=f"in parallel with {first.step.label}") for s in steps[1:])]


def beats_champion(
    candidate: CandidateResult, champion: dict[str, str] | None, sigmas: float = 2.0
) -> tuple[bool, str]:
    """Whether a passing candidate should replace the champion (given the champion's version tags).

    Quality may not be worse (1 pt accuracy / 1 % RMSE tolerance). Inference energies must
    come from the same source and differ by more than `sigmas` combined standard errors to
    count; within the noise the simpler model (fewer parameters) wins, then the one that was
    measurably cheaper to train, else the champion stays.
    """
    if champion is None:
        return True, "no champion yet"
    if champion.get("energy_source") != candidate.energy_source:
        return (
            False,
            f"champion energy is from {champion.get('energy_source')!r}, candidate from {candidate.energy_source!r}: "
            "not comparable",
        )
    try:
        champ_energy = float(champion["inference_energy_j_per_1k"])
    except (KeyError, ValueError):
        return True, "champion has no recorded inference energy"
    energy = candidate.inference_energy_j_per_1k
    if energy is None:
        return False, "candidate has no measured inference energy"
    if (
        candidate.accuracy is not None
        and "accuracy" in champion
        and candidate.accuracy < float(champion["accuracy"]) - 0.01
    ):
        return (
            False,
            f"accuracy {candidate.accuracy:.4f} is more than 1 pt below the champion's "
            f"{float(champion['accuracy']):.4f}",
        )
    if candidate.rmse is not None and "rmse" in champion and candidate.rmse > float(champion["rmse"]) * 1.01:
        return False, f"rmse {candidate.rmse:.4g} is more than 1% above the champion's {float(champion['rmse']):.4g}"
    champ_sem = float(champion.get("inference_energy_sem_j_per_1k", 0.0))
    err = candidate.inference_energy_sem_j_per_1k
    if significantly_less(energy, err, champ_energy, champ_sem, sigmas):
        return (
            True,
            f"inference energy {energy:.4g} < champion's {champ_energy:.4g} J/1k beyond noise, at no worse quality",
        )
    if significantly_less(champ_energy, champ_sem, energy, err, sigmas):
        return False, f"inference energy {energy:.4g} J/1k is above the champion's {champ_energy:.4g} J/1k beyond noise"
    tie = (
        f"inference energy {energy:.4g} vs champion's {champ_energy:.4g} J/1k is within {sigmas:g} combined "
        "standard errors"
    )
    champ_params = int(champion.get("params", "0") or 0)
    if candidate.params is not None and champ_params and candidate.params < champ_params:
        return True, f"{tie}; candidate is simpler ({candidate.params} < {champ_params} params)"
    if (
        candidate.params is not None
        and candidate.params == champ_params
        and candidate.train_energy_j is not None
        and "train_energy_j" in champion
    ):
        champ_train = float(champion["train_energy_j"])
        if significantly_less(
            candidate.train_energy_j,
            candidate.train_energy_sem_j,
            champ_train,
            float(champion.get("train_energy_sem_j", 0.0)),
            sigmas,
        ):
            return True, f"{tie}; candidate is cheaper to train ({candidate.train_energy_j:.4g} < {champ_train:.4g} J)"
    return False, f"{tie}; the champion is as simple and as cheap to train: it stays"


class Payback(BaseModel):
    """When the energy the loop spent is earned back by cheaper inference."""

    loop_energy_j: float
    saved_j_per_1k: float  # baseline minus candidate inference energy, per 1,000 predictions
    predictions_to_payback: float | None  # None when the candidate saves nothing

    def summary(self) -> str:
        if self.predictions_to_payback is None:
            return f"no payback: the loop spent {self.loop_energy_j:.1f} J and the model saves nothing per prediction"
        return (
            f"the loop spent {self.loop_energy_j:.1f} J; the model saves {self.saved_j_per_1k:.4g} J per 1k "
            f"predictions, so it pays back after {self.predictions_to_payback:,.0f} predictions"
        )


def payback(history: list[CandidateResult], chosen: CandidateResult) -> Payback:
    """Energy payback of `chosen` against the baseline, counting everything the loop measured."""
    spent = sum(c.spent_energy_j for c in history)
    base = history[0].inference_energy_j_per_1k
    mine = chosen.inference_energy_j_per_1k
    saved = (base - mine) if base is not None and mine is not None else 0.0
    return Payback(
        loop_energy_j=spent, saved_j_per_1k=saved, predictions_to_payback=spent / saved * 1000 if saved > 0 else None
    )


def confirm_on_full(
    scenario: Scenario, final: Final, history: list[CandidateResult], full: dict[int, tuple[float | None, float | None]]
) -> tuple[Final, list[CandidateResult]]:
    """Re-judge a PASSED loop with (accuracy, rmse) measured on the full test split.

    During the loop candidates may be scored on a representative subset; promotion needs the
    full split. `full` maps candidate index -> full-split figures (the baseline's included).
    """
    if final.state != FinalState.PASSED or final.chosen is None:
        return final, history
    updated = list(history)
    for index, (accuracy, rmse) in full.items():
        c = updated[index]
        subset_tags = {"subset_accuracy": f"{c.accuracy:.4f}"} if c.accuracy is not None else {}
        updated[index] = c.model_copy(
            update={"accuracy": accuracy, "rmse": rmse, "tags": {**c.tags, **subset_tags, "eval_samples": "all"}}
        )
    report = judge(scenario, updated[final.chosen], updated[0])
    if report.passed:
        return final.model_copy(update={"reason": f"{final.reason}; confirmed on the full test split"}), updated
    return Final(
        state=FinalState.FAILED,
        reason=f"#{final.chosen} passed on the evaluation subset but not on the full test split: {report.summary()}",
    ), updated
