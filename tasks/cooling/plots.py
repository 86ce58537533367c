"""Evaluation plots (matplotlib, Agg): one week of temperatures with the band, and monthly energy bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.cooling.fast_eval import RunResult
from thresholds.cooling.env import MINUTES_PER_DAY, MINUTES_PER_MONTH, RoomConfig, SeedConfig

WEEK = 7 * MINUTES_PER_DAY


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; set here, not at import, so importing this module changes nothing
    import matplotlib.pyplot as plt

    return plt


def week_start(minutes: int, start_month: int, month: int = 6) -> int:
    """First minute of the first week of `month` (July by default) if the run covers it, else 0."""
    offset = ((month - start_month) % 12) * MINUTES_PER_MONTH
    return offset if offset + WEEK <= minutes else 0


def temperatures(runs: dict[str, RunResult]) -> dict[str, np.ndarray]:
    """Per-minute temperature of each controller; the seed's built-in comes from the agent's run."""
    out = {name: r.trace[0] for name, r in runs.items() if r.trace is not None}
    agent = runs.get("agent")
    if agent is not None and agent.trace is not None and agent.trace.shape[0] == 4:
        out["built-in"] = agent.trace[2]
    return out


def monthly_energy(runs: dict[str, RunResult]) -> dict[str, np.ndarray]:
    """Energy per 30-day month of each controller (from the cumulative traces)."""
    out: dict[str, np.ndarray] = {}

    def per_month(cumulative: np.ndarray) -> np.ndarray:
        ends = np.arange(MINUTES_PER_MONTH, len(cumulative) + MINUTES_PER_MONTH, MINUTES_PER_MONTH) - 1
        ends = np.minimum(ends, len(cumulative) - 1)
        at = cumulative[ends]
        return np.diff(np.concatenate([[0.0], at]))

    for name, r in runs.items():
        if r.trace is None:
            continue
        out[name] = per_month(r.trace[1])
        if r.trace.shape[0] == 4 and name == "agent":
            out["built-in"] = per_month(r.trace[3])
    return out


def week_plot(
    runs: dict[str, RunResult], cfg: SeedConfig | RoomConfig, path: Path, start_month: int, title: str
) -> Path:
    plt = _pyplot()
    temps = temperatures(runs)
    n = len(next(iter(temps.values())))
    start = week_start(n, start_month)
    stop = min(n, start + WEEK)
    days = np.arange(start, stop) / MINUTES_PER_DAY
    if isinstance(cfg, SeedConfig):
        band, label = (cfg.optimal_min_temperature_c, cfg.optimal_max_temperature_c), "optimal band"
        limits = (cfg.safe_min_temperature_c, cfg.safe_max_temperature_c)
    else:
        band, label = (cfg.recommended_min_temperature_c, cfg.recommended_max_temperature_c), "ASHRAE recommended"
        limits = (cfg.allowable_min_temperature_c - 3, cfg.allowable_max_temperature_c + 3)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.axhspan(*band, color="tab:green", alpha=0.15, label=f"{label} {band[0]:g}-{band[1]:g} C")
    styles = {"agent": ("tab:blue", 1.0), "built-in": ("tab:orange", 0.8), "do-nothing": ("tab:gray", 0.6)}
    for name, (color, alpha) in styles.items():
        if name in temps:
            ax.plot(days, temps[name][start:stop], color=color, alpha=alpha, lw=0.7, label=name)
    ax.set_ylim(*limits)
    ax.set_xlabel("day of the simulated period")
    ax.set_ylabel("temperature (C)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def monthly_bars(runs: dict[str, RunResult], path: Path, unit: str, title: str) -> Path:
    plt = _pyplot()
    energy = monthly_energy(runs)
    names = [n for n in ("agent", "built-in", "do-nothing", "band rule", "best thermostat") if n in energy]
    months = len(energy[names[0]])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, name in enumerate(names):
        ax.bar(np.arange(months) + i * width, energy[name], width=width, label=name)
    ax.set_xticks(np.arange(months) + 0.4 - width / 2)
    ax.set_xticklabels([f"M{m + 1}" for m in range(months)])
    ax.set_ylabel(f"energy per 30-day month ({unit})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
