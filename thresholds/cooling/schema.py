"""Thresholds of the cooling pipeline: targets, budget, ladder, training, evaluation, measurement, environment.

Strict: unknown keys, wrong types, NaN/inf and out-of-range values are one-line errors naming the
field, the value and the expected unit/range. Load by bundled name (`cooling-room`, `cooling-seed`)
or by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from thresholds import SCENARIO_DIR
from thresholds.cooling.env import DQNConfig, RoomConfig, SeedConfig
from thresholds.core import MeterName, Section, read_yaml
from thresholds.errors import InputError, validated

BUNDLED = ("cooling-room", "cooling-seed")


class Targets(Section):
    min_energy_saved_pct: float | None = Field(
        None, ge=-1000, le=100, description="percent saved vs the built-in cooling"
    )
    max_minutes_outside_band: int | None = Field(None, ge=0, description="minutes over the evaluation period")
    max_minutes_outside_vs_builtin: int | None = Field(None, ge=0, description="minutes beyond the built-in cooling's")
    min_saved_vs_best_controller_pct: float | None = Field(
        None,
        ge=-1000,
        le=100,
        description="room: percent of cooling electricity saved vs the best controller tuned on the training years, "
        "mean over the held-out years",
    )
    max_minutes_outside_vs_best_controller: int | None = Field(
        None, ge=0, description="room: minutes outside the band beyond the best tuned controller's, held-out years"
    )
    max_train_energy_j: float | None = Field(None, ge=0, description="joules to train the agent (its lineage)")
    max_inference_energy_j_per_year: float | None = Field(
        None, ge=0, description="joules per simulated year of decisions"
    )


class Budget(Section):
    max_attempts: int = Field(4, ge=1, le=50, description="trained agents, the first included")
    max_total_energy_j: float | None = Field(None, gt=0, description="joules over the whole loop")


class Ladder(Section):
    episode_growth: float = Field(2.0, gt=1, le=10, description="episode multiplier per retrain")
    epsilon_factor: float = Field(0.5, gt=0, le=2, description="exploration multiplier from the second retrain")
    min_epsilon: float = Field(0.05, ge=0, le=1, description="exploration floor, probability")
    shrink_factor: float = Field(0.5, gt=0, lt=1, description="hidden widths multiplier when shrinking or distilling")
    min_hidden_units: int = Field(4, ge=1, le=1024, description="neurons, narrowest hidden layer allowed")


class Training(DQNConfig):
    """The agent's DQN settings (one definition: `DQNConfig`) and what its early stopping watches."""

    early_stopping_on: Literal["episode", "validation"] = Field(
        "episode", description="reward watched by early stopping"
    )


class Evaluation(Section):
    months: int = Field(12, ge=1, le=120, description="simulated months of 30 days")
    days: int | None = Field(
        None, ge=1, le=3600, description="simulated days; when set, replaces months (short runs, tests)"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [2024],
        min_length=1,
        max_length=20,
        description="held-out trajectory seeds (years), each one period: only ever evaluated",
    )
    training_years: list[int] = Field(
        default_factory=lambda: [100, 101, 102, 103, 104],
        min_length=1,
        max_length=20,
        description="trajectory seeds (years) the room's controllers are tuned on; none may be a held-out seed",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Evaluation:
        for name, seeds in (("seeds", self.seeds), ("training_years", self.training_years)):
            if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
                raise ValueError(f"{name} {seeds} must be distinct non-negative integers")
        shared = sorted(set(self.seeds) & set(self.training_years))
        if shared:
            raise ValueError(f"training_years and the held-out seeds share {shared}: a year is one or the other")
        return self


class Measurement(Section):
    meter: MeterName = "auto"
    fixed_power_w: float = Field(10.0, gt=0, le=100_000, description="watts, for the fixed-power meter")
    codecarbon_country: str = Field("USA", min_length=3, max_length=3, description="ISO 3166-1 alpha-3 code")
    min_inference_window_s: float = Field(
        1.0, gt=0, le=600, description="seconds of repeated evaluation per inference measurement"
    )


class CoolingScenario(Section):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    env: Literal["seed", "room"] = "room"
    model_name: str = Field("cooling-agent", min_length=1, max_length=200, description="registered model name")
    targets: Targets = Targets()
    budget: Budget = Budget()
    ladder: Ladder = Ladder()
    training: Training = Training()
    evaluation: Evaluation = Evaluation()
    measurement: Measurement = Measurement()
    seed_env: SeedConfig = SeedConfig()
    room_env: RoomConfig = RoomConfig()

    def env_config(self) -> SeedConfig | RoomConfig:
        return self.seed_env if self.env == "seed" else self.room_env


def parse(raw: object, where: str = "scenario") -> CoolingScenario:
    """Validate a parsed YAML document; raise a one-line `InputError`."""
    if not isinstance(raw, dict):
        raise InputError(
            "document", type(raw).__name__, "a mapping of sections (name, env, targets, budget, ...)", where
        )
    return validated(CoolingScenario, raw, where, "thresholds/cooling-room.yaml")


def path_of(name_or_path: str) -> Path:
    """`cooling-room` -> the bundled thresholds/cooling-room.yaml; anything else is a path."""
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    return bundled if name_or_path in BUNDLED else Path(name_or_path)


def load(name_or_path: str | Path) -> CoolingScenario:
    """Read and validate a cooling thresholds file, by bundled name or path."""
    p = path_of(str(name_or_path))
    if not p.is_file():
        raise InputError("scenario", str(name_or_path), f"an existing YAML file or one of {', '.join(BUNDLED)}")
    return parse(read_yaml(p), str(p))


def settings_for(
    scenario: str, env: str | None = None, months: int | None = None, days: int | None = None
) -> CoolingScenario:
    """The scenario file with the command line's overrides, validated again as a whole."""
    settings = load(scenario)
    raw = settings.model_dump(mode="json")
    if env is not None:
        raw["env"] = env
    if months is not None:
        raw["evaluation"] = {**raw["evaluation"], "months": months, "days": None}
    if days is not None:
        raw["evaluation"] = {**raw["evaluation"], "days": days}
    return parse(raw, f"{scenario} with overrides")
