"""Thresholds of the cooling pipeline: targets, budget, ladder, training, evaluation, measurement, environment.

Strict: unknown keys, wrong types, NaN/inf and out-of-range values are one-line errors naming the
field, the value and the expected unit/range. Load by bundled name (`cooling-room`, `cooling-seed`)
or by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.errors import InputError
from thresholds import SCENARIO_DIR
from thresholds.cooling.env import RoomConfig, SeedConfig
from thresholds.cooling.policy import Ladder as PolicyLadder
from thresholds.cooling.policy import Targets as PolicyTargets
from thresholds.energy.schema import input_error, read_yaml

MAX_BYTES = 256 * 1024
BUNDLED = ("cooling-room", "cooling-seed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Targets(_Strict):
    min_energy_saved_pct: float | None = Field(None, ge=-1000, le=100, description="percent saved vs the built-in cooling")
    max_minutes_outside_band: int | None = Field(None, ge=0, description="minutes over the evaluation period")
    max_minutes_outside_vs_builtin: int | None = Field(None, ge=0, description="minutes beyond the built-in cooling's")
    max_train_energy_j: float | None = Field(None, ge=0, description="joules to train the agent (its lineage)")
    max_inference_energy_j_per_year: float | None = Field(None, ge=0, description="joules per simulated year of decisions")


class Budget(_Strict):
    max_attempts: int = Field(4, ge=1, le=50, description="trained agents, the first included")
    max_total_energy_j: float | None = Field(None, gt=0, description="joules over the whole loop")


class Ladder(_Strict):
    episode_growth: float = Field(2.0, gt=1, le=10, description="episode multiplier per retrain")
    epsilon_factor: float = Field(0.5, gt=0, le=2, description="exploration multiplier from the second retrain")
    min_epsilon: float = Field(0.05, ge=0, le=1, description="exploration floor, probability")
    shrink_factor: float = Field(0.5, gt=0, lt=1, description="hidden widths multiplier when shrinking or distilling")
    min_hidden_units: int = Field(4, ge=1, le=1024, description="neurons, narrowest hidden layer allowed")


class Training(_Strict):
    hidden_units: tuple[int, int] = Field((64, 32), description="neurons in the two hidden layers")
    epsilon: float = Field(0.3, ge=0, le=1, description="probability of a random action")
    memory_transitions: int = Field(3000, ge=16, le=10_000_000, description="replay memory, transitions")
    batch_size: int = Field(512, ge=1, le=65_536, description="transitions per gradient step")
    learning_rate: float = Field(0.001, gt=0, le=1, description="Adam learning rate")
    discount: float = Field(0.9, ge=0, lt=1, description="discount per minute")
    train_every_steps: int = Field(64, ge=1, le=1_000_000, description="minutes per gradient step")
    target_sync_steps: int = Field(0, ge=0, le=10_000_000, description="gradient steps per target-network copy (0 = none)")
    double_dqn: bool = False
    loss: Literal["mse", "huber"] = "mse"
    episode_minutes: int = Field(216_000, ge=10, le=5_184_000, description="minutes per episode")
    max_episodes: int = Field(40, ge=1, le=100_000, description="episodes at most")
    patience_episodes: int = Field(10, ge=1, le=100_000, description="episodes without improvement before stopping")
    validation_days: int = Field(7, ge=1, le=360, description="days per validation period (one per season)")
    early_stopping_on: Literal["episode", "validation"] = Field("episode", description="reward watched by early stopping")
    seed: int = Field(0, ge=0, description="integer seed")

    @model_validator(mode="after")
    def _widths(self) -> Training:
        if any(not 1 <= w <= 4096 for w in self.hidden_units):
            raise ValueError(f"hidden_units {list(self.hidden_units)} must be two widths in 1..4096 neurons")
        return self


class Evaluation(_Strict):
    months: int = Field(12, ge=1, le=120, description="simulated months of 30 days")
    days: int | None = Field(None, ge=1, le=3600, description="simulated days; when set, replaces months (short runs, tests)")
    seeds: list[int] = Field(default_factory=lambda: [2024], min_length=1, max_length=20, description="trajectory seeds, each one period")

    @model_validator(mode="after")
    def _distinct(self) -> Evaluation:
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds {self.seeds} must be distinct non-negative integers")
        return self


class Measurement(_Strict):
    meter: Literal["auto", "codecarbon", "nvml", "rapl", "fixed-power", "null"] = "auto"
    fixed_power_w: float = Field(10.0, gt=0, le=100_000, description="watts, for the fixed-power meter")
    codecarbon_country: str = Field("USA", min_length=3, max_length=3, description="ISO 3166-1 alpha-3 code")
    min_inference_window_s: float = Field(1.0, gt=0, le=600, description="seconds of repeated evaluation per inference measurement")


class CoolingScenario(_Strict):
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

    def policy_targets(self) -> PolicyTargets:
        return PolicyTargets(**self.targets.model_dump())

    def policy_ladder(self) -> PolicyLadder:
        return PolicyLadder(max_attempts=self.budget.max_attempts, max_total_energy_j=self.budget.max_total_energy_j, **self.ladder.model_dump())


def parse(raw: object, where: str = "scenario") -> CoolingScenario:
    """Validate a parsed YAML document; raise a one-line `InputError`."""
    if not isinstance(raw, dict):
        raise InputError("document", type(raw).__name__, "a mapping of sections (name, env, targets, budget, ...)", where)
    try:
        return CoolingScenario.model_validate(raw)
    except ValidationError as exc:
        raise input_error(CoolingScenario, exc, where, "thresholds/cooling-room.yaml") from None


def path_of(name_or_path: str) -> Path:
    """`cooling-room` -> the bundled thresholds/cooling-room.yaml; anything else is a path."""
    bundled = SCENARIO_DIR / f"{name_or_path}.yaml"
    return bundled if name_or_path in BUNDLED else Path(name_or_path)


def load(name_or_path: str | Path) -> CoolingScenario:
    """Read and validate a cooling thresholds file, by bundled name or path."""
    p = path_of(str(name_or_path))
    if not p.is_file():
        raise InputError("scenario", str(name_or_path), f"an existing YAML file or one of {', '.join(BUNDLED)}")
    raw = read_yaml(p, MAX_BYTES)
    return parse(raw, str(p))
