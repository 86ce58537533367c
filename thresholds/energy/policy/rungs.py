"""The ladder: every kind of rung, one entry each in `RUNGS`, in the order the walk meets them.

An entry says all that a rung is: what it makes (`what`), its move on the walk and the steps that can train beside it
(moves.py), the targets it is taken to move, the `Ladder` fields of the scenario that configure it, and what kind of
model it makes - a training variant of the recipe, a compressed model, a model derived from a parent's, a serving
form of a parent, a training-cost move the walk passes over. Every tuple of rung kinds the policy uses is derived
from the table (below it), and so are the serving forms offered to a passing model (`serving_forms`).

How the ladder is walked (ladder.py). The baseline is measured first, then the recipe (early stopping), then rung
after rung in table order. It is target-aware: each missed target of the candidate closest to passing picks the
moves that can fix it, and every step names the target that drove it (`Step.target`):

- inference energy or latency: the compression rungs, in table order;
- training energy: moves that cut the *lineage's* training cost (compression only adds to it): the recipe's training
  variants, then for a compressed model the training-cost moves (training_moves.py: `prune-early:r`, `prune-es:r`,
  for a distilled student `distill:f/Nep` - the same distillation stopped early within the N epochs the target
  leaves, when N is at least half the epochs it ran - and `scratch`). These also come before a serving form that
  would serve a model costlier to run than the cheapest kept one only because that one misses a training target: a
  serving form keeps its parent's training cost, so it can only pass from a parent within it. The training variants
  come before compression only when the training target is below the baseline's own cost (`recipe_first`);
- accuracy: back off (backoff.py) - a pruning ratio that met the inference targets but broke accuracy is followed by
  the ratio halfway back to the last one that kept it, then (opt-in, `ladder.backoff_teacher`) by the same ratio
  fine-tuned on the soft labels of the most accurate model the training target affords (`Step.teacher`; its lineage
  includes the teacher's training), then by the same ratio with a fine-tune twice as long (`Step.epochs`). With the
  opt-in, a ratio that missed inference and lost a little too much accuracy (at most `NEAR_MISS_FACTOR` x the
  allowed drop) is overtaken instead: the next larger ratio on those soft labels, and so on while they keep quality.

Training energy is judged priced by work (`price_training`, thresholds/energy/training_cost.py): each run of a
lineage costs the pooled per-epoch energy of its kind of work, so the recipe's epochs cost what the baseline's
identical epochs cost, and meter drift between two runs of the same work does not decide a training target. With no
training-cost move left, a training miss walks on only to rungs whose lineage can still come in under the target
(derived rungs only add training to their parent's; precision, distillation and the runtime start from the cheapest
model within the training and quality targets). When no rung left can reach a target the loop ends FAILED with
`Final.unreachable` naming it (reason "unreachable: <target>: ..."), without spending the rest of the budget: for
training energy as soon as every rung left derives from too costly a lineage, otherwise when the ladder is exhausted.

A rung is *kept* (can become the base of later rungs: keep.py) only when its measured cost (inference energy;
training energy for the recipe's variants) fell by at least `ladder.min_gain_pct` and by more than the combined
measurement noise, and it still meets the quality targets: nothing is assumed to save energy. Final states:

- PASSED            - a candidate meets every target (the cheapest that does; with `ladder.serve_every_form` the
                      trained model behind it is also served in each serving form left, and the cheapest that passes
                      wins).
- BUDGET_EXHAUSTED  - iterations or total energy used up before a candidate passed.
- FAILED            - the baseline could not be trained, or the ladder has no rung left.

Adding a rung: a `StepKind` member names it, its entry here says what it is, and its producer makes it
(`@producer(StepKind.X)` in tasks/energy_loop/producers.py: `Production` -> `Made`). A serving form that trains
nothing (the parent's weights served another way, as fuse, precision and ort are) needs no move of its own: its
entry's `tried_at` gives the values it is tried at (from the scenario's `Ladder` field it names in `configured_by`,
and the calibration) and `why` the reason a step of it gives; the walk then offers it after the best fp32 model, and
`serve_every_form` to every passing model. Its producer loads the parent (`p.parent()`), makes the form and returns
`_served(...)` (with a `finish` that writes what the form adds to the saved folder): nothing is trained, so its
lineage is the parent's. tests/tasks/energy_loop/test_rung_table.py checks every entry: one producer per kind, the
`Ladder` fields it names, the tuples below, the forms offered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from thresholds.energy.policy import moves
from thresholds.energy.policy.gates import INFERENCE_TARGETS, QUALITY_TARGETS, TRAINING_TARGETS
from thresholds.energy.policy.records import Calibration, CandidateResult, Next, Step, StepKind
from thresholds.energy.schema import Scenario

TriedAt = Callable[[Scenario, Calibration | None], list[moves.Value]]


@dataclass(frozen=True)
class Rung:
    """One kind of ladder step: everything the policy knows about it."""

    kind: StepKind
    what: str  # what a step of it makes
    move: moves.Move | None = None  # its next step on the walk; None: see `next`
    siblings: moves.Siblings | None = None  # steps of it that can be produced beside a first one (parallel mode)
    targets: tuple[str, ...] = ()  # the gate checks (gates.py) a step of it is taken to move
    configured_by: tuple[str, ...] = ()  # the `Ladder` fields of the scenario that configure it
    reference: bool = False  # kept as it is: the yardsticks later rungs are measured against
    recipe_variant: bool = False  # the recipe retrained another way: changes what training costs, not the model
    compressed: bool = False  # a smaller model than the scenario's: the training-cost moves can retrain it cheaper
    derived: bool = False  # made from a parent's model: its lineage costs at least the parent's training
    serving_form: bool = False  # the parent's weights served another way: never the base of a later rung
    training_move: bool = False  # only a missed training target picks it (training_moves.py): the walk passes over
    tried_at: TriedAt | None = None  # a serving form offered to every passing model: the values it is tried at
    why: str = ""  # with `tried_at`: the reason a step gives, formatted with `parent` (its index) and `value`

    def next(self, walk: moves.Walk) -> Next | None:
        """This rung's next step on the walk; None: nothing of it left, the baseline (`decide` measures it first) or
        a training-cost move."""
        if self.tried_at is not None:
            return moves.serve(walk, self.kind, self.tried_at(walk.scenario, walk.use), self.why)
        return None if self.move is None else self.move(walk)

    def alongside(self, walk: moves.Walk, first: Step) -> list[Step]:
        """Steps of this rung that do not depend on `first`'s result, in ladder order."""
        if self.tried_at is not None:
            return moves.serve_siblings(walk, first, self.tried_at(walk.scenario, walk.use))
        return [] if self.siblings is None else self.siblings(walk, first)


def _fused(scenario: Scenario, use: Calibration | None) -> list[moves.Value]:
    return [None] if scenario.ladder.fuse_inference else []


def precisions_allowed(scenario: Scenario, use: Calibration | None) -> list[moves.Value]:
    """The ladder's precisions that this machine's calibration does not rule out, in ladder order."""
    ladder = scenario.ladder
    return [p for p in ladder.precisions if use is None or use.helps(use.inference_ratio, p, ladder.min_gain_pct)]


def _runtimes(scenario: Scenario, use: Calibration | None) -> list[moves.Value]:
    return list(scenario.ladder.onnx_runtime)


_QUALITY = tuple(t for t in QUALITY_TARGETS if t != "trained")  # the figures; "trained" only says it was rejected

RUNGS: tuple[Rung, ...] = (
    Rung(
        StepKind.BASELINE,
        "the unoptimised reference: fixed `training.max_epochs`, fp32, no early stopping",
        siblings=moves.recipe_siblings,
        reference=True,
    ),
    Rung(
        StepKind.EARLY_STOPPING,
        "the same model trained with early stopping: the recipe",
        moves.early_stopping,
        moves.recipe_siblings,
        targets=TRAINING_TARGETS,
        reference=True,
    ),
    Rung(
        StepKind.MIXED_PRECISION,
        "`mixed-precision:autocast`: the recipe trained under autocast; kept only if it measurably lowers training "
        "energy at equal quality",
        moves.mixed_precision,
        targets=TRAINING_TARGETS,
        configured_by=("mixed_precision_training",),
        recipe_variant=True,
    ),
    Rung(
        StepKind.BATCH,
        "`batch:f`: the recipe trained at batch size x f, learning rate x sqrt(f): fewer, larger steps; kept on the "
        "same terms. The kept recipe that cost least to train is the compression base, and its batch size carries "
        "to fine-tuning",
        moves.batch,
        targets=TRAINING_TARGETS,
        configured_by=("training_batch_factors",),
        recipe_variant=True,
    ),
    Rung(
        StepKind.PRUNE,
        "`prune:r`: structured pruning of the recipe at each ratio r (increasing), fine-tuned; stops at the first "
        "ratio that breaks an accuracy target, where the accuracy back-off takes over",
        moves.prune,
        moves.prune_siblings,
        targets=(*INFERENCE_TARGETS, *_QUALITY),
        configured_by=(
            "pruning_ratios",
            "pruning_importance",
            "pruning_global",
            "pruning_iterative_steps",
            "pruning_attention",
            "accuracy_backoff",
            "backoff_teacher",
        ),
        compressed=True,
        derived=True,
    ),
    Rung(
        StepKind.DISTILL,
        "`distill:f`: a student with each hidden width x f, trained on the best fp32 model's soft labels "
        "(`distill:f/Nep`, a training-cost move: the same, stopped within N epochs)",
        moves.distill,
        moves.distill_siblings,
        targets=(*INFERENCE_TARGETS, *TRAINING_TARGETS),
        configured_by=("distill_width_factors", "distill_temperature", "distill_alpha", "training_moves"),
        compressed=True,
        derived=True,
    ),
    Rung(
        StepKind.SEARCH,
        "`search`: an energy-aware architecture search over `ladder.search_hidden` under an analytic energy cap; the "
        "most accurate architecture of the Pareto set (validation accuracy vs estimated energy) is the candidate",
        moves.search,
        targets=INFERENCE_TARGETS,
        configured_by=("search_hidden", "search_max_energy_vs_baseline"),
        compressed=True,
    ),
    Rung(
        StepKind.FUSE,
        "`fuse`: the best fp32 model served in its fused torch form (tasks/models/fuse.py: Linear+ReLU as one addmm "
        "and an in-place ReLU, BatchNorm folded); nothing trained",
        targets=INFERENCE_TARGETS,
        configured_by=("fuse_inference",),
        derived=True,
        serving_form=True,
        tried_at=_fused,
        why="serve #{parent} in its fused torch form",
    ),
    Rung(
        StepKind.PRECISION,
        "`precision:p`: the best fp32 model at lower precision (int8 / fp16 / bf16), unless the machine's "
        "calibration shows that precision is not cheaper here",
        targets=INFERENCE_TARGETS,
        configured_by=("precisions",),
        derived=True,
        serving_form=True,
        tried_at=precisions_allowed,
        why="run #{parent} at {value}",
    ),
    Rung(
        StepKind.QAT,
        "`qat:int8`: when post-training int8 breaks an accuracy target, the same fp32 model fine-tuned with int8 "
        "fake quantization, then served at int8",
        moves.qat,
        targets=(*INFERENCE_TARGETS, *_QUALITY),
        configured_by=("qat",),
        derived=True,
        serving_form=True,
    ),
    Rung(
        StepKind.ORT,
        "`ort:p`: the best fp32 model exported to ONNX and served under onnxruntime at each of `ladder.onnx_runtime` "
        "(fp32, int8 by onnxruntime's dynamic quantization); nothing trained",
        targets=INFERENCE_TARGETS,
        configured_by=("onnx_runtime",),
        derived=True,
        serving_form=True,
        tried_at=_runtimes,
        why="serve #{parent} under onnxruntime at {value}",
    ),
    Rung(
        StepKind.PRUNE_EARLY,
        "`prune-early:r`: prune inside the recipe after `training.prune_at_epoch` epochs and keep training: no "
        "separate fine-tune",
        targets=TRAINING_TARGETS,
        configured_by=("training_moves",),
        compressed=True,
        training_move=True,
    ),
    Rung(
        StepKind.PRUNE_ES,
        "`prune-es:r/Nep`: prune the recipe and fine-tune with early stopping on the N epochs the training target "
        "leaves",
        targets=TRAINING_TARGETS,
        configured_by=("training_moves",),
        compressed=True,
        derived=True,
        training_move=True,
    ),
    Rung(
        StepKind.SCRATCH,
        "`scratch`: a compressed model's architecture trained from scratch with early stopping",
        targets=TRAINING_TARGETS,
        configured_by=("training_moves",),
        training_move=True,
    ),
)

# `Ladder` fields that configure the whole walk rather than one rung.
LADDER_WIDE = ("min_gain_pct", "use_calibration", "serve_every_form")

RUNG: dict[StepKind, Rung] = {r.kind: r for r in RUNGS}
REFERENCES = tuple(r.kind for r in RUNGS if r.reference)
RECIPE_VARIANTS = tuple(r.kind for r in RUNGS if r.recipe_variant)
COMPRESSED = tuple(r.kind for r in RUNGS if r.compressed)
DERIVED = tuple(r.kind for r in RUNGS if r.derived)
SERVING_FORMS = tuple(r.kind for r in RUNGS if r.serving_form)
TRAINING_MOVES = tuple(r.kind for r in RUNGS if r.training_move)


def serving_forms(
    scenario: Scenario, history: list[CandidateResult], parent: CandidateResult, use: Calibration | None
) -> list[Step]:
    """The serving forms of `parent` the ladder allows and this machine's calibration does not rule out, in ladder
    order, less those already measured for it."""
    forms = [
        Step(kind=r.kind, value=value, parent=parent.index)
        for r in RUNGS
        if r.tried_at is not None
        for value in r.tried_at(scenario, use)
    ]
    tried = {
        (c.step.kind, c.step.value) for c in history if c.step.parent == parent.index and c.step.kind in SERVING_FORMS
    }
    return [s for s in forms if (s.kind, s.value) not in tried]
