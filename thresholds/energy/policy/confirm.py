"""The full-split confirmation: a loop that passed on an evaluation subset is judged again on the full test split
before anything is promoted."""

from __future__ import annotations

from thresholds.core import Final, FinalState
from thresholds.energy.keys import EVAL_SAMPLES, SUBSET_ACCURACY
from thresholds.energy.policy.gates import judge
from thresholds.energy.policy.records import CandidateResult
from thresholds.energy.schema import Scenario


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
        subset_tags = {SUBSET_ACCURACY: f"{c.accuracy:.4f}"} if c.accuracy is not None else {}
        tags = {**c.tags, **subset_tags, EVAL_SAMPLES: "all"}
        updated[index] = c.model_copy(update={"accuracy": accuracy, "rmse": rmse, "tags": tags})
    report = judge(scenario, updated[final.chosen], updated[0])
    if report.passed:
        return final.model_copy(update={"reason": f"{final.reason}; confirmed on the full test split"}), updated
    return Final(
        state=FinalState.FAILED,
        reason=f"#{final.chosen} passed on the evaluation subset but not on the full test split: {report.summary()}",
    ), updated
