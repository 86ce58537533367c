"""Energy payback: after how many predictions the energy the loop spent is earned back by cheaper inference."""

from __future__ import annotations

from pydantic import BaseModel

from thresholds.energy.policy.records import CandidateResult


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
