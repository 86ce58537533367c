"""Energy-aware architecture search: a small grid of MLP widths/depths under an energy cap.

Each architecture is trained with the recipe (early stopping) and scored on the *validation*
split (the test split stays for the candidate's own evaluation). Its inference energy is the
analytic estimate from counted operations (`tasks/meters/analytic.py`): deterministic and free
of measurement interference, so the search can run anywhere, in parallel too. Architectures over
`cap_j_per_1k` are dropped; of the rest, the Pareto set (no other point is at least as accurate
and at most as costly, and better in one) is kept, and its most accurate member is returned.
The chosen model's real inference energy is then measured like every other candidate's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from tasks.data.datasets import CachedData, outputs
from tasks.meters import analytic
from tasks.meters.base import EnergyMeter
from tasks.models import factory as models
from tasks.models.hooks import Hooks
from tasks.models.train import TrainConfig, TrainReport, fit


@dataclass(frozen=True)
class Point:
    hidden: list[int]
    val_accuracy: float
    energy_j_per_1k: float  # analytic estimate at fp32
    train_energy_j: float


def pareto_front(points: list[Point]) -> list[Point]:
    """Points not dominated in (higher accuracy, lower energy), by increasing energy."""

    def dominates(q: Point, p: Point) -> bool:
        at_least = q.val_accuracy >= p.val_accuracy and q.energy_j_per_1k <= p.energy_j_per_1k
        return at_least and (q.val_accuracy > p.val_accuracy or q.energy_j_per_1k < p.energy_j_per_1k)

    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.energy_j_per_1k, -p.val_accuracy))


def pick(front: list[Point]) -> Point | None:
    """The most accurate Pareto point; the cheaper one on a tie."""
    return max(front, key=lambda p: (p.val_accuracy, -p.energy_j_per_1k)) if front else None


def _val_accuracy(model: torch.nn.Module, data: CachedData) -> float:
    with torch.no_grad():
        return float((outputs(model, data.x_val).argmax(1) == data.y_val).float().mean().item())


@dataclass(frozen=True)
class Space:
    """What is searched: `base` with each of the hidden widths `architectures`, those whose analytic inference energy
    at `batch_size` is within `cap_j_per_1k`."""

    base: models.ModelSpec
    architectures: list[list[int]]
    cap_j_per_1k: float
    batch_size: int


def search(
    space: Space,
    data: CachedData,
    cfg: TrainConfig,
    meter: EnergyMeter,
    label: str,
    hooks: Hooks | None = None,
) -> tuple[torch.nn.Module, models.ModelSpec, list[Point], list[Point], float]:
    """Train every architecture under the cap (with the user's `hooks`, tasks/models/hooks.py); return (chosen
    model, its spec, all points, Pareto set, energy spent). Points are scored by validation accuracy."""
    base, architectures, cap_j_per_1k, batch_size = (
        space.base,
        space.architectures,
        space.cap_j_per_1k,
        space.batch_size,
    )
    if data.task != "classification":
        raise ValueError("architecture search scores validation accuracy: classification datasets only")
    points: list[Point] = []
    trained: dict[str, torch.nn.Module] = {}
    spent_j = 0.0
    for hidden in architectures:
        spec = base.model_copy(
            update={"hidden": list(hidden), "history": [*base.history, f"search:{'-'.join(map(str, hidden))}"]}
        )
        estimate = analytic.inference_energy(models.build(spec), "fp32", batch_size).energy_j_per_1k
        if estimate > cap_j_per_1k:
            continue  # over the cap: not worth training
        torch.manual_seed(cfg.seed)
        model = models.build(spec)
        report: TrainReport = fit(model, data, cfg, label=f"{label} {hidden}", meter=meter, hooks=hooks)
        spent_j += report.energy_j
        points.append(
            Point(
                hidden=list(hidden),
                val_accuracy=_val_accuracy(model, data),
                energy_j_per_1k=estimate,
                train_energy_j=report.energy_j,
            )
        )
        trained[str(hidden)] = model
    front = pareto_front(points)
    best = pick(front)
    if best is None:
        raise ValueError(
            f"no architecture of {architectures} fits the energy cap of {cap_j_per_1k:.4g} J/1k (analytic)"
        )
    spec = base.model_copy(
        update={"hidden": best.hidden, "history": [*base.history, f"search:{'-'.join(map(str, best.hidden))}"]}
    )
    return trained[str(best.hidden)], spec, points, front, spent_j


def as_json(points: list[Point]) -> str:
    return json.dumps([asdict(p) for p in points])
