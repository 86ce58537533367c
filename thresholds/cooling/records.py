"""The plain records the cooling escalation reads and writes: the kinds of attempt, an attempt, the next step."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Kind(StrEnum):
    TRAIN = "train"
    RETRAIN = "retrain"
    DISTIL = "distil"
    SHRINK = "shrink"


class Attempt(BaseModel):
    """Plain record of one trained agent: the only thing the policy sees."""

    index: int
    kind: Kind
    hidden_units: tuple[int, int]
    max_episodes: int
    epsilon: float
    parent: int | None = None
    failed_reason: str | None = None  # training crashed or diverged
    energy_saved_pct: float | None = None
    minutes_outside_band: int | None = None
    builtin_minutes_outside_band: int | None = None
    saved_vs_best_controller_pct: float | None = None  # room: vs the best controller tuned on the training years
    best_controller_minutes_outside_band: int | None = None  # room: that controller's, on the held-out years
    vs_mpc_pct: float | None = None  # room: kWh beyond the perfect-forecast MPC's, percent (reported, not gated)
    train_energy_j: float | None = None  # the agent's lineage: a distilled student includes its teacher
    spent_energy_j: float = 0.0  # this attempt's own training + measurement
    inference_energy_j_per_year: float | None = None
    episodes_run: int = 0
    energy_source: str = ""  # the meter behind the energy figures
    energy_estimated: bool = True  # an estimate (load x TDP, fixed power), not a hardware reading
    agent_dir: str | None = None
    run_id: str | None = None


class Next(BaseModel):
    kind: Kind
    hidden_units: tuple[int, int]
    max_episodes: int
    epsilon: float
    parent: int | None
    reason: str
    seed_offset: int = 0  # added to the scenario's seed: a retrain is another draw, not the same agent again
