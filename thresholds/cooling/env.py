"""Configuration of the cooling environments and the DQN agent: one strict pydantic model each.

Every parameter carries its unit in its name (`_c` degrees Celsius, `_k` kelvin differences,
`_kw` kilowatts, `_kj_per_k` heat capacity, `_energy_units` the seed's abstract energy unit,
`_users`, `_mbps`, `_minutes`). Bad values (min >= max, negative users, an empty or short month
table, a comfort band outside the safe range) are rejected with one line naming the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from thresholds.core import Section

MINUTES_PER_DAY = 24 * 60
MINUTES_PER_MONTH = 30 * MINUTES_PER_DAY
MINUTES_PER_YEAR = 12 * MINUTES_PER_MONTH  # the paper's year: 12 x 30 x 24 x 60 = 518,400 steps
SEED_MONTHLY_TEMPERATURE_C = (1.0, 5.0, 7.0, 10.0, 11.0, 20.0, 23.0, 24.0, 22.0, 10.0, 5.0, 1.0)


def _ordered(low: float, high: float, low_name: str, high_name: str) -> None:
    if not low < high:
        raise ValueError(f"{low_name} ({low}) must be below {high_name} ({high})")


class WorkloadConfig(Section):
    """Users and data rate: bounded integer random walks, one step per minute (as in the reference)."""

    initial_users: int = Field(10, ge=0, description="users at minute 0")
    min_users: int = Field(10, ge=0, description="users, lower clip")
    max_users: int = Field(100, ge=0, description="users, upper clip")
    users_step: int = Field(5, ge=0, le=1000, description="users per minute: a step is drawn from [-step, +step)")
    initial_data_rate_mbps: int = Field(60, ge=0, description="data rate at minute 0 (Mbit/s; the paper gives no unit)")
    min_data_rate_mbps: int = Field(20, ge=0, description="Mbit/s, lower clip")
    max_data_rate_mbps: int = Field(300, ge=0, description="Mbit/s, upper clip")
    data_rate_step_mbps: int = Field(
        10, ge=0, le=10_000, description="Mbit/s per minute: a step is drawn from [-step, +step)"
    )
    inclusive_upper_step: bool = Field(
        False, description="draw steps from [-step, +step] instead of the reference's [-step, +step)"
    )

    @model_validator(mode="after")
    def _bounds(self) -> WorkloadConfig:
        _ordered(self.min_users, self.max_users, "min_users", "max_users")
        _ordered(self.min_data_rate_mbps, self.max_data_rate_mbps, "min_data_rate_mbps", "max_data_rate_mbps")
        if not self.min_users <= self.initial_users <= self.max_users:
            raise ValueError(
                f"initial_users ({self.initial_users}) must lie in [min_users, max_users] = "
                f"[{self.min_users}, {self.max_users}]"
            )
        if not self.min_data_rate_mbps <= self.initial_data_rate_mbps <= self.max_data_rate_mbps:
            raise ValueError(
                f"initial_data_rate_mbps ({self.initial_data_rate_mbps}) must lie in "
                f"[{self.min_data_rate_mbps}, {self.max_data_rate_mbps}]"
            )
        return self


def _twelve(values: tuple[float, ...], name: str) -> None:
    if len(values) != 12:
        raise ValueError(f"{name} has {len(values)} values: expected 12 monthly values in degrees C, Jan..Dec")


class SeedConfig(Section):
    """The paper's server model (see tasks/cooling/seed.py for the equations)."""

    workload: WorkloadConfig = WorkloadConfig()
    monthly_atmospheric_temperature_c: tuple[float, ...] = Field(
        SEED_MONTHLY_TEMPERATURE_C, description="12 values, Jan..Dec, degrees C"
    )
    start_month: int = Field(0, ge=0, le=11, description="month index of minute 0 (0 = January)")
    temperature_c_per_user: float = Field(1.25, ge=0, le=100, description="degrees C of intrinsic temperature per user")
    temperature_c_per_mbps: float = Field(
        1.25, ge=0, le=100, description="degrees C of intrinsic temperature per Mbit/s"
    )
    optimal_min_temperature_c: float = Field(18.0, description="degrees C, lower edge of the optimal band")
    optimal_max_temperature_c: float = Field(24.0, description="degrees C, upper edge of the optimal band")
    safe_min_temperature_c: float = Field(-20.0, description="degrees C: the server fails below")
    safe_max_temperature_c: float = Field(80.0, description="degrees C: the server fails above")
    builtin_initial_temperature_c: float | None = Field(
        None, description="degrees C; None = middle of the optimal band"
    )
    action_moves_c: tuple[float, ...] = Field((-3.0, -1.5, 0.0, 1.5, 3.0), description="degrees C moved by each action")
    energy_units_per_c: float = Field(1.0, gt=0, le=1e6, description="energy units spent per degree C moved")
    reward_per_energy_unit: float = Field(
        1e-3, gt=0, le=1e3, description="reward per energy unit saved vs the built-in cooling"
    )
    # The reference's training script starts episodes at 20 users and 30 Mbit/s, not at the environment's defaults
    # (10 and 60): from 10/60 the agent starts above 80 C and nearly every training episode ends in its first minute.
    train_initial_users: int = Field(20, ge=0, description="users at the start of a training episode")
    train_initial_data_rate_mbps: int = Field(30, ge=0, description="Mbit/s at the start of a training episode")

    @model_validator(mode="after")
    def _consistent(self) -> SeedConfig:
        _twelve(self.monthly_atmospheric_temperature_c, "monthly_atmospheric_temperature_c")
        _ordered(
            self.optimal_min_temperature_c,
            self.optimal_max_temperature_c,
            "optimal_min_temperature_c",
            "optimal_max_temperature_c",
        )
        _ordered(
            self.safe_min_temperature_c, self.safe_max_temperature_c, "safe_min_temperature_c", "safe_max_temperature_c"
        )
        if (
            not self.safe_min_temperature_c <= self.optimal_min_temperature_c
            or not self.optimal_max_temperature_c <= self.safe_max_temperature_c
        ):
            raise ValueError(
                f"optimal band [{self.optimal_min_temperature_c}, {self.optimal_max_temperature_c}] degrees C "
                f"must lie inside the safe range [{self.safe_min_temperature_c}, {self.safe_max_temperature_c}]"
            )
        w = self.workload
        if not w.min_users <= self.train_initial_users <= w.max_users:
            raise ValueError(
                f"train_initial_users ({self.train_initial_users}) must lie in [{w.min_users}, {w.max_users}]"
            )
        if not w.min_data_rate_mbps <= self.train_initial_data_rate_mbps <= w.max_data_rate_mbps:
            raise ValueError(
                f"train_initial_data_rate_mbps ({self.train_initial_data_rate_mbps}) must lie in "
                f"[{w.min_data_rate_mbps}, {w.max_data_rate_mbps}]"
            )
        if len(self.action_moves_c) < 2:
            raise ValueError(
                f"action_moves_c has {len(self.action_moves_c)} values: expected at least 2 moves in degrees C"
            )
        return self

    def for_training(self) -> SeedConfig:
        """The same server, started where the reference's training script starts it."""
        workload = self.workload.model_copy(
            update={
                "initial_users": self.train_initial_users,
                "initial_data_rate_mbps": self.train_initial_data_rate_mbps,
            }
        )
        return self.model_copy(update={"workload": workload})

    @property
    def builtin_start_c(self) -> float:
        if self.builtin_initial_temperature_c is not None:
            return self.builtin_initial_temperature_c
        return (self.optimal_min_temperature_c + self.optimal_max_temperature_c) / 2


class RoomConfig(Section):
    """A lumped-capacitance server room with an economiser and a chiller (see tasks/cooling/room.py)."""

    workload: WorkloadConfig = WorkloadConfig()
    monthly_mean_outside_temperature_c: tuple[float, ...] = Field(
        SEED_MONTHLY_TEMPERATURE_C, description="12 values, Jan..Dec, degrees C"
    )
    start_month: int = Field(0, ge=0, le=11, description="month index of minute 0 (0 = January)")
    daily_outside_amplitude_c: float = Field(
        5.0, ge=0, le=30, description="degrees C above/below the mean at the warmest/coolest hour"
    )
    warmest_hour: float = Field(15.0, ge=0, lt=24, description="hour of day of the outside maximum")
    weather_day_noise_c: float = Field(2.0, ge=0, le=20, description="std of a day-to-day weather offset, degrees C")
    it_idle_power_kw: float = Field(6.0, ge=0, le=10_000, description="IT heat at zero load, kW")
    it_power_kw_per_user: float = Field(0.08, ge=0, le=100, description="IT heat per active user, kW")
    it_power_kw_per_mbps: float = Field(0.02, ge=0, le=100, description="IT heat per Mbit/s of traffic, kW")
    daily_load_amplitude_fraction: float = Field(
        0.3, ge=0, lt=1, description="relative swing of the user/traffic load over a day"
    )
    busiest_hour: float = Field(14.0, ge=0, lt=24, description="hour of day of the load maximum")
    heat_capacity_kj_per_k: float = Field(3000.0, gt=0, le=1e9, description="room air + IT equipment, kJ/K")
    envelope_ua_kw_per_k: float = Field(0.25, ge=0, le=1000, description="walls/roof heat exchange with outside, kW/K")
    cooling_levels_kw: tuple[float, ...] = Field(
        (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0), description="heat removed per action, kW"
    )
    carnot_efficiency_fraction: float = Field(0.45, gt=0, le=1, description="chiller COP / Carnot COP")
    evaporator_approach_k: float = Field(12.0, ge=0, le=40, description="room air minus evaporating temperature, K")
    condenser_approach_k: float = Field(10.0, ge=0, le=40, description="condensing minus outside temperature, K")
    min_condensing_temperature_c: float = Field(
        25.0, ge=-20, le=80, description="head-pressure control floor, degrees C"
    )
    max_cop: float = Field(8.0, gt=0, le=50, description="cap on the chiller COP")
    economiser_max_outside_temperature_c: float = Field(
        18.0, ge=-50, le=50, description="free cooling runs below this outside temperature, degrees C"
    )
    economiser_ua_kw_per_k: float = Field(
        1.5, ge=0, le=1000, description="free-cooling capacity per K of (room - outside - approach), kW/K"
    )
    economiser_approach_k: float = Field(
        3.0, ge=0, le=30, description="room minus outside temperature below which free cooling gives nothing, K"
    )
    economiser_cop: float = Field(15.0, gt=0, le=200, description="heat moved per kW of fan/pump power in free cooling")
    recommended_min_temperature_c: float = Field(
        18.0, description="ASHRAE recommended inlet envelope, lower edge, degrees C"
    )
    recommended_max_temperature_c: float = Field(
        27.0, description="ASHRAE recommended inlet envelope, upper edge, degrees C"
    )
    allowable_min_temperature_c: float = Field(15.0, description="below this the room has failed, degrees C")
    allowable_max_temperature_c: float = Field(32.0, description="above this the room has failed, degrees C")
    initial_temperature_c: float = Field(21.0, description="room at minute 0, degrees C")
    builtin_setpoint_c: float = Field(21.0, description="the built-in thermostat's setpoint, degrees C")
    builtin_dead_band_k: float = Field(1.0, gt=0, le=10, description="thermostat dead band (full width), K")
    reward_per_kwh: float = Field(10.0, gt=0, le=1e6, description="reward lost per kWh of cooling electricity")
    penalty_per_degree_minute: float = Field(
        10.0, ge=0, le=1e6, description="reward lost per K x minute beyond the penalised band"
    )
    reward_margin_k: float = Field(
        0.5, ge=0, le=5, description="the penalised band is the recommended one shrunk by this margin, K"
    )
    failure_penalty: float = Field(
        20.0, ge=0, le=1e9, description="reward lost when the room leaves the allowable range"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RoomConfig:
        _twelve(self.monthly_mean_outside_temperature_c, "monthly_mean_outside_temperature_c")
        _ordered(
            self.recommended_min_temperature_c,
            self.recommended_max_temperature_c,
            "recommended_min_temperature_c",
            "recommended_max_temperature_c",
        )
        _ordered(
            self.allowable_min_temperature_c,
            self.allowable_max_temperature_c,
            "allowable_min_temperature_c",
            "allowable_max_temperature_c",
        )
        if not (
            self.allowable_min_temperature_c <= self.recommended_min_temperature_c
            and self.recommended_max_temperature_c <= self.allowable_max_temperature_c
        ):
            raise ValueError(
                f"recommended band [{self.recommended_min_temperature_c}, {self.recommended_max_temperature_c}] "
                f"degrees C must lie inside the allowable range "
                f"[{self.allowable_min_temperature_c}, {self.allowable_max_temperature_c}]"
            )
        if 2 * self.reward_margin_k >= self.recommended_max_temperature_c - self.recommended_min_temperature_c:
            raise ValueError(
                f"reward_margin_k ({self.reward_margin_k}) leaves no band: expected less than half the recommended "
                "band's width"
            )
        for name in ("initial_temperature_c", "builtin_setpoint_c"):
            value = getattr(self, name)
            if not self.recommended_min_temperature_c <= value <= self.recommended_max_temperature_c:
                raise ValueError(
                    f"{name} ({value}) must lie in the recommended band "
                    f"[{self.recommended_min_temperature_c}, {self.recommended_max_temperature_c}] degrees C"
                )
        levels = self.cooling_levels_kw
        if len(levels) < 2 or any(v < 0 for v in levels) or list(levels) != sorted(set(levels)):
            raise ValueError(
                f"cooling_levels_kw {list(levels)}: expected at least 2 increasing, non-negative levels in kW"
            )
        return self


class DQNConfig(Section):
    """The agent: the paper's small network and the reference's DQN recipe, with a few documented knobs."""

    hidden_units: tuple[int, int] = Field((64, 32), description="neurons in the two hidden layers")
    epsilon: float = Field(0.3, ge=0, le=1, description="probability of a random action while training")
    memory_transitions: int = Field(3000, ge=16, le=10_000_000, description="replay memory size, transitions")
    batch_size: int = Field(512, ge=1, le=65_536, description="transitions per gradient step")
    learning_rate: float = Field(0.001, gt=0, le=1, description="Adam learning rate")
    discount: float = Field(0.9, ge=0, lt=1, description="Q-learning discount per minute")
    train_every_steps: int = Field(64, ge=1, le=1_000_000, description="environment minutes per gradient step")
    target_sync_steps: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="gradient steps between target-network copies; 0 = no target network (the reference)",
    )
    double_dqn: bool = Field(
        False, description="choose the next action with the online network, value it with the target network"
    )
    loss: Literal["mse", "huber"] = Field("mse", description="TD loss")
    episode_minutes: int = Field(
        5 * MINUTES_PER_MONTH, ge=10, le=10 * MINUTES_PER_YEAR, description="minutes per training episode"
    )
    max_episodes: int = Field(40, ge=1, le=100_000, description="episodes at most")
    patience_episodes: int = Field(
        10, ge=1, le=100_000, description="episodes without a better total reward before stopping"
    )
    validation_days: int = Field(
        7, ge=1, le=360, description="days per validation period (one per season) for early stopping on validation"
    )
    seed: int = Field(0, ge=0, description="integer seed")

    @model_validator(mode="after")
    def _widths(self) -> DQNConfig:
        if any(not 1 <= w <= 4096 for w in self.hidden_units):
            raise ValueError(f"hidden_units {list(self.hidden_units)}: expected two widths in 1..4096 neurons")
        return self
