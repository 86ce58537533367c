"""The plain records the policy reads and writes: a rung kind, a step, one candidate's measured result, what the
machine's calibration showed, and the next step with its reason. Nothing here decides anything."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from thresholds.energy.training_cost import TrainSegment


class StepKind(StrEnum):
    """The kinds of rung. What each one is, and where it stands on the ladder: its entry in `rungs.RUNGS`."""

    BASELINE = "baseline"
    EARLY_STOPPING = "early-stopping"
    MIXED_PRECISION = "mixed-precision"
    BATCH = "batch"
    PRUNE = "prune"
    DISTILL = "distill"
    QAT = "qat"
    PRECISION = "precision"
    SEARCH = "search"
    PRUNE_EARLY = "prune-early"
    PRUNE_ES = "prune-es"
    SCRATCH = "scratch"
    ORT = "ort"
    FUSE = "fuse"


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
    measure_energy_j: float = 0.0  # the part of it its inference windows read (the reference's paired ones too)
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
