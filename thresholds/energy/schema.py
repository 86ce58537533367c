"""The scenario file: targets, loop budget, training, measurement and ladder settings.

Strict: unknown keys, wrong types, NaN/inf, negative energies and accuracies outside
[0, 1] are errors. Units are in the field names; relative targets are ratios to the
baseline candidate measured in the same loop (`*_vs_baseline: 0.6` = at most 60 %).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from thresholds.core import MeterName, StrictSection, read_yaml
from thresholds.energy.production import Production
from thresholds.errors import InputError, input_error
from thresholds.promotion import PromotionMode

LowPrecision = Literal["int8", "fp16", "bf16"]
LOW_PRECISIONS: tuple[LowPrecision, ...] = ("int8", "fp16", "bf16")
OrtPrecision = Literal["fp32", "int8"]
ORT_PRECISIONS: tuple[OrtPrecision, ...] = ("fp32", "int8")
HookName = Literal["loss", "metric", "train_step"]
HOOKS: tuple[HookName, ...] = (
    "loss",
    "metric",
    "train_step",
)  # a user's functions the loop calls (tasks/models/hooks.py)


class Targets(StrictSection):
    """Every target is optional; a candidate passes when it meets all that are set."""

    min_accuracy: float | None = Field(None, ge=0, le=1, description="fraction in [0, 1]")
    max_accuracy_drop_pt: float | None = Field(None, ge=0, le=100, description="percentage points vs baseline")
    max_rmse: float | None = Field(None, ge=0, description="target units")
    max_rmse_increase_pct: float | None = Field(None, ge=0, description="percent vs baseline")
    max_inference_energy_j_per_1k: float | None = Field(None, ge=0, description="joules per 1,000 samples")
    max_inference_energy_vs_baseline: float | None = Field(None, gt=0, description="ratio to baseline, e.g. 0.6")
    max_train_energy_j: float | None = Field(None, ge=0, description="joules")
    max_train_energy_vs_baseline: float | None = Field(None, gt=0, description="ratio to baseline")
    max_latency_ms_per_batch: float | None = Field(None, ge=0, description="milliseconds")
    max_latency_vs_baseline: float | None = Field(None, gt=0, description="ratio to baseline")
    quality_metric: Literal["auto", "accuracy", "balanced_accuracy", "macro_f1"] = Field(
        "auto",
        description="what the accuracy targets judge; auto: balanced accuracy when the smallest class < 50 % "
        "of the largest",
    )


class Budget(StrictSection):
    max_iterations: int = Field(8, ge=1, le=100, description="candidates, baseline included")
    max_total_energy_j: float | None = Field(None, gt=0, description="joules over the whole loop")


class Training(StrictSection):
    max_epochs: int = Field(60, ge=1, le=10_000, description="epochs")
    patience: int = Field(5, ge=1, le=1_000, description="epochs without validation improvement")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="samples")
    fine_tune_epochs: int = Field(15, ge=1, le=10_000, description="epochs after each pruning step")
    seed: int = Field(0, ge=0, description="integer seed")
    early_stopping_monitor: Literal["loss", "accuracy"] = Field(
        "loss", description="validation metric early stopping watches"
    )
    early_stopping_min_delta_pct: float = Field(
        0.0,
        ge=0,
        lt=100,
        description="percent: a smaller relative validation-loss improvement does not reset the patience",
    )
    distill_fine_tune: bool = Field(False, description="fine-tune pruned models on the unpruned parent's soft labels")
    energy_window_s: float = Field(
        0.5,
        ge=0,
        le=3_600,
        description="seconds: epochs shorter than this share one meter window, each charged its share by wall time (a "
        "window costs the meter 3-4 ms here, which doubled the reading of a 5 ms epoch); 0: one window per epoch",
    )
    prune_at_epoch: int = Field(
        5,
        ge=1,
        le=10_000,
        description="epoch of the recipe after which the prune-early rung prunes, then keeps training",
    )

    @model_validator(mode="after")
    def _patience_fits(self) -> Training:
        if self.patience > self.max_epochs:
            raise ValueError(f"patience ({self.patience}) <= max_epochs ({self.max_epochs})")
        return self


class Measurement(StrictSection):
    meter: MeterName = "auto"
    fixed_power_w: float = Field(10.0, gt=0, le=100_000, description="watts, for the fixed-power meter")
    inference_batch_size: int = Field(1024, ge=1, le=1_000_000, description="samples per batch")
    serving_batch_sizes: list[int] | None = Field(
        None,
        description="batch sizes the workload is served at, e.g. [1, 64]: inference energy is measured and judged at "
        "each (the geometric mean of the per-size figures); unset: inference_batch_size alone",
    )
    min_window_s: float = Field(1.0, gt=0, le=3_600, description="seconds per inference window")
    inference_threads: int = Field(
        1,
        ge=0,
        le=1_024,
        description="threads inference is measured and served with (torch and onnxruntime intra-op); 0: the library's "
        "default, one per core. One by default: two threads on two cores moved the same models' ratio by 25 % between "
        "runs (tasks/meters/runtime.py)",
    )
    repeats_min: int = Field(3, ge=1, le=100, description="inference windows at least")
    repeats_max: int = Field(8, ge=1, le=1_000, description="inference windows at most")
    target_rel_ci: float = Field(0.05, gt=0, le=1, description="95 % CI half-width / mean to stop repeating")
    measure_budget_s: float = Field(
        30.0,
        ge=1,
        le=86_400,
        description="seconds of inference measurement per candidate (warm-up, windows and repeats at every batch "
        "size together): no window or ABBA block is begun that would end past it, two windows (one block) at least",
    )
    max_call_window_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="where one inference call at a batch size takes longer than this share of min_window_s, the loop "
        "measures every candidate at a smaller batch size (powers of two) that fits; 1: only calls over a window",
    )
    significance_sigmas: float = Field(
        2.0, ge=0, le=10, description="combined standard errors a difference must exceed"
    )
    subtract_idle: bool = Field(False, description="judge energy above the idle power measured before the loop")
    idle_window_s: float = Field(2.0, gt=0, le=600, description="seconds of idle measurement")
    codecarbon_country: str = Field("USA", min_length=3, max_length=3, description="ISO 3166-1 alpha-3 code")
    eval_subset: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="test samples evaluated during the loop (0 = all); the full split confirms before promotion",
    )
    inference_target: Literal["this-machine", "analytic-45nm"] = Field(
        "this-machine", description="judge inference energy as measured here, or estimated for a 45 nm edge device"
    )
    paired: bool = Field(
        True,
        description="measure each candidate in ABBA windows interleaved with the baseline; gates judge the ratio's CI",
    )
    max_other_cpu_share: float = Field(
        0.10,
        ge=0,
        le=1,
        description="other processes' share of the CPU while a candidate is measured, above which the loop warns its "
        "figures are unreliable",
    )
    train_attribution: Literal["auto", "process", "machine"] = Field(
        "auto",
        description="training energy: the process's CPU share of a machine-level reading (auto: for machine-level "
        "meters), or the whole machine",
    )

    @field_validator("serving_batch_sizes")
    @classmethod
    def _serving_sizes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            not 1 <= len(value) <= 8 or any(not 1 <= b <= 1_000_000 for b in value) or value != sorted(set(value))
        ):
            raise ValueError("1 to 8 strictly increasing batch sizes in [1, 1000000], e.g. [1, 64]")
        return value

    @property
    def batch_sizes_served(self) -> list[int]:
        """The batch sizes inference energy is measured and judged at."""
        return list(self.serving_batch_sizes or [self.inference_batch_size])

    @model_validator(mode="after")
    def _repeats(self) -> Measurement:
        if self.repeats_min > self.repeats_max:
            raise ValueError(f"repeats_min ({self.repeats_min}) <= repeats_max ({self.repeats_max})")
        return self


class Ladder(StrictSection):
    """How each rung of the ladder is configured (the rungs, their order and how the loop walks them:
    thresholds/energy/policy/rungs.py, whose entries name the fields that configure them)."""

    pruning_ratios: list[float] = Field(
        default_factory=lambda: [0.3, 0.5, 0.7], description="channel fractions in (0, 1)"
    )
    precisions: list[LowPrecision] = Field(default_factory=lambda: list(LOW_PRECISIONS))
    min_gain_pct: float = Field(3.0, ge=0, le=100, description="percent an escalation must save to be kept")
    pruning_importance: Literal["magnitude", "taylor"] = Field("magnitude", description="how channels are scored")
    pruning_global: bool = Field(False, description="one ratio across layers instead of per layer")
    pruning_iterative_steps: int = Field(1, ge=1, le=10, description="pruning steps per rung, fine-tuned in between")
    pruning_attention: Literal["head_dims", "heads"] = Field(
        "head_dims",
        description="nn.MultiheadAttention: shrink every head's dimension (head_dims), or remove the ratio of whole "
        "heads (heads), the same heads in every layer of the residual stream",
    )
    mixed_precision_training: bool = Field(True, description="try autocast training (bf16 on CPU, fp16 on CUDA)")
    distill_width_factors: list[float] = Field(
        default_factory=lambda: [0.5], description="student widths as fractions of the teacher's"
    )
    distill_temperature: float = Field(4.0, gt=0, le=100, description="softmax temperature of the soft labels")
    distill_alpha: float = Field(0.7, ge=0, le=1, description="weight of the soft-label loss")
    qat: bool = Field(True, description="quantization-aware training when int8 PTQ breaks an accuracy target")
    fuse_inference: bool = Field(
        True,
        description="serve the best fp32 model in its fused torch form (Linear+ReLU as one addmm, BatchNorm folded); "
        "kept only on a measured gain",
    )
    onnx_runtime: list[OrtPrecision] = Field(
        default_factory=lambda: list(ORT_PRECISIONS),
        description="serve the best fp32 model under onnxruntime at these precisions; empty: no such rung",
    )
    serve_every_form: bool = Field(
        True,
        description=(
            "once a model passes, measure the trained model behind it in every serving form left (fused, precisions, "
            "onnxruntime) and keep the cheapest that passes; false: stop at the first pass"
        ),
    )
    use_calibration: bool = Field(True, description="skip rungs the machine's calibration shows cannot save energy")
    training_batch_factors: list[int] = Field(
        default_factory=list,
        description="recipe retrained at batch_size x factor (lr x sqrt(factor)), e.g. [4]; empty: no such rung",
    )
    search_hidden: list[list[int]] = Field(
        default_factory=list,
        description="MLP hidden widths to search, e.g. [[32, 16], [48], [16]]; empty: no search rung",
    )
    search_max_energy_vs_baseline: float = Field(
        0.5,
        gt=0,
        le=1,
        description="energy cap of the search: analytic inference energy as a fraction of the baseline's",
    )
    training_moves: bool = Field(
        True, description="answer a missed training-energy target with moves that cut the lineage's training cost"
    )
    accuracy_backoff: bool = Field(
        True,
        description="when a pruning ratio meets the inference targets but breaks accuracy, try the ratio halfway back",
    )
    # Off by default: in the runs measured so far (a Transformer, a digits MLP) short fine-tunes on soft labels lost 4-9
    # pt.
    backoff_teacher: bool = Field(
        False,
        description="in the accuracy back-off, also fine-tune pruned models on the soft labels of the most accurate "
        "model the training target affords",
    )

    @field_validator("training_batch_factors")
    @classmethod
    def _batch_factors(cls, value: list[int]) -> list[int]:
        if any(not 2 <= f <= 64 for f in value) or value != sorted(set(value)):
            raise ValueError("factors must be strictly increasing integers in [2, 64]")
        return value

    @field_validator("search_hidden")
    @classmethod
    def _architectures(cls, value: list[list[int]]) -> list[list[int]]:
        if len(value) > 16:
            raise ValueError("at most 16 architectures (each is trained)")
        if any(not 1 <= len(h) <= 4 or any(not 1 <= w <= 4096 for w in h) for h in value):
            raise ValueError("each architecture is 1 to 4 hidden widths in [1, 4096]")
        return value

    @field_validator("distill_width_factors")
    @classmethod
    def _factors(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value):
            raise ValueError("each factor must be a fraction of the teacher's widths in (0, 1)")
        return value

    @field_validator("pruning_ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in value):
            raise ValueError("each ratio must be a fraction of channels in (0, 1)")
        if value != sorted(set(value)):
            raise ValueError("ratios must be strictly increasing")
        return value

    @field_validator("precisions", "onnx_runtime")
    @classmethod
    def _precisions(cls, value: list[str]) -> list[str]:
        if len(value) != len(set(value)):
            raise ValueError("precisions must not repeat")
        return value


class ModelSettings(StrictSection):
    kind: Literal["mlp", "cnn1d"] = "mlp"
    factory: str | None = Field(
        None,
        description="a user's model: PKG.MODULE:FACTORY, called as FACTORY(input_shape=(...), n_outputs=K) -> "
        "nn.Module; overrides kind (also --model on the command line)",
    )
    hidden: list[int] = Field(default_factory=lambda: [64, 32], description="neurons per hidden layer")
    keep_layers: list[str] = Field(
        default_factory=list,
        description="module names (as in model.named_modules(), e.g. 'stem.0') that pruning leaves whole; the output "
        "head is always kept",
    )
    student: str | None = Field(
        None,
        description="PKG.MODULE:FACTORY of a distillation student; default: a pruned copy of the model (the built-in "
        "MLP: a narrower MLP)",
    )
    loss: str | None = Field(
        None,
        description="PKG.MODULE:FUNCTION, (outputs, targets) -> scalar tensor: replaces the task's loss in training "
        "(also --loss)",
    )
    metric: str | None = Field(
        None,
        description="PKG.MODULE:FUNCTION, (outputs, targets) -> float in [0, 1], higher is better: judged in place "
        "of accuracy (also --metric)",
    )
    train_step: str | None = Field(
        None,
        description="PKG.MODULE:FUNCTION, (model, batch) -> scalar loss tensor: one batch (as the dataset's items) "
        "your way (also --train-step)",
    )

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: list[int]) -> list[int]:
        if not value or any(w < 1 or w > 65_536 for w in value):
            raise ValueError("hidden widths must be 1..65536 neurons, at least one layer")
        return value

    @field_validator("keep_layers")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", name)]
        if bad:
            raise ValueError(f"keep_layers: {bad[0]!r} is not a module name like 'layer1.0.conv1'")
        if len(set(value)) != len(value):
            raise ValueError("keep_layers must not repeat")
        return value

    @field_validator("student", *HOOKS)
    @classmethod
    def _entry_point(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            raise ValueError("a module path, a colon and a callable's name")  # the field's description shows the form
        return value

    @property
    def hooks(self) -> dict[HookName, str]:
        """The hooks that are set: name -> PKG.MODULE:FUNCTION."""
        return {hook: value for hook in HOOKS if (value := getattr(self, hook)) is not None}


class Scenario(StrictSection):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    targets: Targets = Targets()
    budget: Budget = Budget()
    training: Training = Training()
    measurement: Measurement = Measurement()
    ladder: Ladder = Ladder()
    model: ModelSettings = ModelSettings()
    promotion: PromotionMode = Field(
        "warn",
        description="when champion is moved by hand to a version whose gates did not pass: warn (tag it, emit an "
        "event) or enforce (also move it back)",
    )
    production: Production | None = Field(
        None, description="what `energy-loop serve` judges while serving, and what a breach does (none: not judged)"
    )

    @field_validator("production")
    @classmethod
    def _production_quality_has_a_limit(cls, p: Production | None, info: ValidationInfo) -> Production | None:
        t = info.data.get("targets")
        if p is not None and "quality" in p.judge and t is not None:
            if (p.min_accuracy, p.max_rmse, t.min_accuracy, t.max_rmse) == (None, None, None, None):
                raise ValueError(
                    "a quality limit when judge names quality: min_accuracy or max_rmse here or in targets"
                )
        return p

    @model_validator(mode="after")
    def _analytic_needs_mlp(self) -> Scenario:
        if self.measurement.inference_target == "analytic-45nm" and (self.model.kind != "mlp" or self.model.factory):
            raise ValueError(
                "measurement.inference_target 'analytic-45nm' covers fully connected models only: use model.kind "
                "'mlp' and no model.factory"
            )
        return self

    def with_model(self, **fields: str | None) -> Scenario:
        """The scenario with these `model:` fields set (the command line's --model, --loss, ...), validated
        again; None leaves a field as the file has it."""
        return self.with_section("model", **fields)

    def with_section(self, section: str, **fields: object) -> Scenario:
        """The scenario with these fields of one section set (a request's overrides), validated again; None leaves
        a field as the file has it."""
        given = {k: v for k, v in fields.items() if v is not None}
        if not given:
            return self
        raw = self.model_dump(mode="json")
        raw[section].update(given)
        try:
            return Scenario.model_validate(raw)
        except ValidationError as exc:
            raise input_error(Scenario, exc, "") from None


def parse_scenario(raw: object, where: str = "scenario") -> Scenario:
    """Validate an already-parsed YAML document; raise a one-line `InputError`."""
    if not isinstance(raw, dict):
        raise InputError(
            "document", type(raw).__name__, "a mapping of scenario sections (name, targets, budget, ...)", where
        )
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise input_error(Scenario, exc, where, "thresholds/dev-cpu.yaml") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    if not p.is_file():
        raise InputError("scenario", str(p), "an existing YAML file (e.g. thresholds/dev-cpu.yaml)")
    return parse_scenario(read_yaml(p), str(p))
