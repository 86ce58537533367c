"""The energy loop's escalation policy: pure functions from (scenario, history) to the next step or a final state.

The ladder and how it is walked are described once, in rungs.py, above the rung table. The parts, each readable on
its own, in the order they build on each other:

- records.py        the plain records: `StepKind`, `Step`, `CandidateResult`, `Calibration`, `Next`
- costs.py          what a candidate costs to run and to train (priced by work)
- gates.py          the targets checked on a candidate; the candidate closest to passing
- moves.py          each rung's own move on the walk, and the steps that can train beside it
- rungs.py          the rung table `RUNGS`: one entry per rung kind, every rung tuple derived from it
- keep.py           the keep rule, and the bases it decides (the recipe, the best fp32 model)
- backoff.py        the accuracy back-off after a pruning ratio broke a quality target
- walk.py           where the walk stands, as a rung's move sees it
- training_moves.py the moves that answer a missed training-energy target
- ladder.py         `decide` and `plan_batch`
- champion.py       whether a passing candidate replaces the registered champion
- payback.py        after how many predictions the loop's energy is earned back
- confirm.py        a pass re-judged on the full test split

The names callers use are re-exported here: `from thresholds.energy.policy import decide, CandidateResult`.
"""

from thresholds.core import Check, Final, FinalState
from thresholds.energy.policy.backoff import NEAR_MISS_FACTOR
from thresholds.energy.policy.champion import (
    ChampionFigures,
    Comparable,
    RescoredChampion,
    beats_champion,
    rescore_reason,
)
from thresholds.energy.policy.confirm import confirm_on_full
from thresholds.energy.policy.costs import cost, cost_err, gain_pct, price_training, relative_cost, train_cost_j
from thresholds.energy.policy.gates import (
    INFERENCE_TARGETS,
    QUALITY_TARGETS,
    TRAINING_TARGETS,
    GateReport,
    closest,
    gate,
    judge,
    missed_targets,
    quality_ok,
    train_limit_j,
)
from thresholds.energy.policy.keep import kept
from thresholds.energy.policy.ladder import decide, plan_batch
from thresholds.energy.policy.moves import recipe_first
from thresholds.energy.policy.payback import Payback, payback
from thresholds.energy.policy.records import Calibration, CandidateResult, Next, Step, StepKind, iterations_used
from thresholds.energy.policy.rungs import (
    COMPRESSED,
    DERIVED,
    RECIPE_VARIANTS,
    REFERENCES,
    RUNG,
    RUNGS,
    SERVING_FORMS,
    TRAINING_MOVES,
    Rung,
    serving_forms,
)
from thresholds.energy.policy.training_moves import fine_tune_budget_epochs

__all__ = [
    "COMPRESSED",
    "DERIVED",
    "INFERENCE_TARGETS",
    "NEAR_MISS_FACTOR",
    "QUALITY_TARGETS",
    "RECIPE_VARIANTS",
    "REFERENCES",
    "RUNG",
    "RUNGS",
    "SERVING_FORMS",
    "TRAINING_MOVES",
    "TRAINING_TARGETS",
    "Calibration",
    "CandidateResult",
    "Check",
    "Final",
    "FinalState",
    "GateReport",
    "Next",
    "Payback",
    "Rung",
    "Step",
    "StepKind",
    "ChampionFigures",
    "Comparable",
    "RescoredChampion",
    "beats_champion",
    "rescore_reason",
    "closest",
    "confirm_on_full",
    "cost",
    "cost_err",
    "decide",
    "fine_tune_budget_epochs",
    "gain_pct",
    "gate",
    "iterations_used",
    "judge",
    "kept",
    "missed_targets",
    "payback",
    "plan_batch",
    "price_training",
    "quality_ok",
    "recipe_first",
    "relative_cost",
    "serving_forms",
    "train_cost_j",
    "train_limit_j",
]
