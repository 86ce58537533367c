"""Where the ladder walk stands, as a rung's move sees it (`moves.Walk`): the scenario, the candidates so far, the
calibration the ladder may use, and the bases and back-off that the rules reading the rung table work out."""

from __future__ import annotations

from dataclasses import dataclass

from thresholds.energy.policy import backoff, keep
from thresholds.energy.policy.records import Calibration, CandidateResult, Next
from thresholds.energy.schema import Scenario


@dataclass(frozen=True)
class LadderWalk:
    scenario: Scenario
    history: list[CandidateResult]
    use: Calibration | None

    @classmethod
    def at(cls, scenario: Scenario, history: list[CandidateResult], calibration: Calibration | None) -> LadderWalk:
        """The walk over `history`, with the calibration when the ladder uses it (`ladder.use_calibration`)."""
        return cls(scenario, history, calibration if scenario.ladder.use_calibration else None)

    def recipe(self) -> CandidateResult:
        return keep.recipe(self.scenario, self.history)

    def best_fp32(self) -> CandidateResult:
        return keep.best_fp32(self.scenario, self.history)

    def backoff(self) -> Next | None:
        return backoff.backoff(self.scenario, self.history)
