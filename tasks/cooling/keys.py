"""Keys the cooling tasks write on an attempt's run beyond the registry's (registry/keys.py): its extra figures
(metrics, step 0), its per-episode curves (metrics, step = episode) and the meter's details."""

from __future__ import annotations

DISTIL_MSE = "distil_mse"
GRADIENT_STEPS = "gradient_steps"
ENV_STEPS = "env_steps"
BEST_EPISODE = "best_episode"
WALL_S = "wall_s"
STEPS_PER_S = "steps_per_s"
ENERGY_SAVED_PCT_MIN = "energy_saved_pct_min"
ENERGY_SAVED_PCT_MAX = "energy_saved_pct_max"
INFERENCE_MEASURED_MINUTES = "inference_measured_minutes"
PARAMETERS = "parameters"
EPISODE_REWARD = "episode_reward"
VALIDATION_SCORE = "validation_score"
METER_DETAIL_PREFIX = "meter."
