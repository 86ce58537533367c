"""The iteration table (markdown) and the accuracy-vs-energy Pareto plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thresholds.energy.keys import QUALITY_METRIC
from thresholds.energy.policy import INFERENCE_TARGETS, CandidateResult, cost, judge, kept
from thresholds.energy.schema import Scenario


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _energy(c: CandidateResult) -> str:
    """Mean inference energy with its standard error over the repeated windows."""
    if c.inference_energy_j_per_1k is None:
        return "-"
    if c.inference_repeats > 1 and c.inference_energy_sem_j_per_1k > 0:
        return f"{c.inference_energy_j_per_1k:.4g} ± {c.inference_energy_sem_j_per_1k:.2g} (n={c.inference_repeats})"
    return f"{c.inference_energy_j_per_1k:.4g}"


def gate_verdict(
    scenario: Scenario, c: CandidateResult, baseline: CandidateResult, inference_figure: bool = False
) -> str:
    """`PASS`, `miss: <the targets missed>` or `rejected: <why>`: the gates' word on one candidate. With
    `inference_figure`, a pass also shows its inference checks (`PASS: <detail>`): several serving forms of one
    model can pass, and the cheapest of them is chosen by that figure."""
    if not c.ok:
        return f"rejected: {c.rejected_reason}"
    report = judge(scenario, c, baseline)
    if not report.passed:
        return f"miss: {report.summary()}"
    shown = [x.detail for x in report.checks if x.name in INFERENCE_TARGETS] if inference_figure else []
    return f"PASS: {'; '.join(shown)}" if shown else "PASS"


def verdicts(scenario: Scenario, history: list[CandidateResult]) -> list[str]:
    """One human-readable verdict per candidate: pass/fail of the gates and whether it was kept."""
    out = []
    for c in history:
        verdict = gate_verdict(scenario, c, history[0])
        if not c.ok:
            out.append(verdict)
            continue
        if c.index > 1:
            keep, why = kept(scenario, history, c)
            verdict += f" | {'kept' if keep else 'not kept'}: {why}"
        following = [n.step for n in history if n.index == c.index + 1 and n.step.target]
        if following:
            verdict += f" | next: {following[0].label} for {following[0].target}"
        out.append(verdict)
    return out


def _train(c: CandidateResult) -> str:
    measured = _fmt(c.train_energy_j, ".2f")
    return measured if c.train_ratio_vs_baseline is None else f"{measured} (x{c.train_ratio_vs_baseline:.3f})"


def iteration_table(scenario: Scenario, history: list[CandidateResult]) -> str:
    quality_head = "accuracy" if any(c.accuracy is not None for c in history) else "rmse"
    # A scenario or an imbalanced table may judge balanced accuracy or macro-F1: the accuracy targets then read that.
    metric = next((c.tags[QUALITY_METRIC] for c in history if c.tags.get(QUALITY_METRIC)), quality_head)
    sources = sorted({f"{c.energy_source}{' (estimated)' if c.estimated else ' (measured)'}" for c in history if c.ok})
    priced = any(c.train_ratio_vs_baseline is not None for c in history)
    judged = f" Quality: {metric} (the accuracy targets judge it)." if metric not in ("accuracy", "rmse") else ""
    rows = [
        f"Energy source: {', '.join(sources) or '-'}. Inference energy: mean ± standard error over repeated "
        f"windows.{judged}"
        + (
            " Train J: as measured; (xR): the lineage's cost over the baseline's, priced by work, which the training "
            "gates judge."
            if priced
            else ""
        ),
        "",
        f"| # | steps | {metric} | train J | inference J/1k | latency ms/batch | params | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, verdict in zip(history, verdicts(scenario, history), strict=True):
        q = c.accuracy if quality_head == "accuracy" else c.rmse
        rows.append(
            f"| {c.index} | {'+'.join(c.lineage) or c.step.label} | {_fmt(q, '.4f')} | {_train(c)} | "
            f"{_energy(c)} | {_fmt(c.latency_ms_per_batch, '.3f')} | {_fmt(c.params, 'd')} | {verdict} |"
        )
    return "\n".join(rows)


def pareto_front(history: list[CandidateResult]) -> list[int]:
    """Indices of candidates no other candidate beats on both inference cost and quality."""
    pts = [
        (c.index, cost(c), c.accuracy if c.accuracy is not None else -(c.rmse or 0.0))
        for c in history
        if c.ok and cost(c) is not None
    ]
    front = []
    for i, e, q in pts:
        dominated = any((e2 <= e and q2 >= q) and (e2 < e or q2 > q) for _, e2, q2 in pts)  # type: ignore[operator]
        if not dominated:
            front.append(i)
    return front


def draw_pareto(ax: Any, history: list[CandidateResult], title: str) -> None:
    """Accuracy (or RMSE) against inference cost; the Pareto front in red."""
    ok = [c for c in history if c.ok and cost(c) is not None]
    classification = any(c.accuracy is not None for c in ok)
    front = set(pareto_front(history))
    for c in ok:
        y = (c.accuracy or 0.0) if classification else (c.rmse or 0.0)
        x = cost(c) or 0.0
        ax.scatter(x, y, color="tab:red" if c.index in front else "tab:gray", zorder=3)
        if c.inference_energy_sem_j_per_1k:
            ax.errorbar(x, y, xerr=c.inference_energy_sem_j_per_1k, color="tab:gray", alpha=0.5, zorder=2)
        ax.annotate(
            f"#{c.index} {'+'.join(c.lineage) or c.step.label}",
            (x, y),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    energy_read = any(c.inference_energy_j_per_1k for c in ok)
    source = ok[0].energy_source if ok else "?"
    estimated = " (estimated)" if ok and ok[0].estimated else ""
    ax.set_xlabel(
        f"inference energy, J per 1k samples [{source}{estimated}]" if energy_read else "latency, ms per batch"
    )
    if ok and max(cost(c) or 0.0 for c in ok) > 5 * min(cost(c) or 1.0 for c in ok):
        ax.set_xscale("log")  # a CNN next to pruned MLPs spans more than one order of magnitude
    ax.set_ylabel("test accuracy" if classification else "test RMSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def pareto_plot(history: list[CandidateResult], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_pareto(ax, history, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
