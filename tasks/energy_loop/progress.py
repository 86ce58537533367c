"""The energy loop's progress lines: one per candidate, numbered by the iterations of the budget it used.

[3/8] #2 prune:0.3 from #1  training… 12.3 s  measuring… 8.1 s  miss: inference_energy_vs_baseline 1.56x > 0.75x
"""

from __future__ import annotations

from tasks.common.progress import numbered, say
from tasks.energy_loop.report import gate_verdict
from thresholds.energy.policy import CandidateResult, Next, Step, iterations_used
from thresholds.energy.schema import Scenario


def _line(scenario: Scenario, history: list[CandidateResult], index: int, step: Step) -> str:
    """Numbered by the iterations of the budget used before it (a rung refused as not applicable uses none)."""
    return numbered(
        index, scenario.budget.max_iterations, step.label, step.parent, used=iterations_used(history[:index])
    )


def training(scenario: Scenario, history: list[CandidateResult], rung: list[Next]) -> None:
    """A line for each candidate of the rung, numbered after the history."""
    for i, n in enumerate(rung):
        say(_line(scenario, history, len(history) + i, n.step), "training…")


def trained(scenario: Scenario, history: list[CandidateResult], produced: CandidateResult) -> None:
    """How long producing it took (training, or an export), and, unless it was rejected, that it is measured now."""
    say(
        _line(scenario, history, produced.index, produced.step),
        f"{produced.wall_s:.1f} s" + ("  measuring…" if produced.ok else ""),
    )


def judged(scenario: Scenario, history: list[CandidateResult], produced: CandidateResult) -> None:
    """How long measuring took and the gates' verdict: the end of the candidate's line."""
    c = history[-1]
    measured = f"{c.wall_s - produced.wall_s:.1f} s  " if produced.ok else ""
    verdict = gate_verdict(scenario, c, history[0], inference_figure=True) + (
        "  (not applicable: no iteration used)" if c.not_applicable else ""
    )
    say(_line(scenario, history, c.index, c.step), measured + verdict, end=True)
