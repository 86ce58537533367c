"""The MLflow keys the registry layer owns: loop-run tags, model-version tags, the figures logged as metrics,
run params, and the tags of the champion lock, the webhook receiver and `promote`.

Values are the keys as stored (renaming one is a migration: docs/layout.md). Keys the policies read are declared
below this layer (`thresholds/keys.py`, `thresholds/energy/keys.py`) and re-exported here for the registry's use.
"""

from __future__ import annotations

from thresholds.keys import FORCED_PROMOTION_REASON, GATES_PASSED, PROMOTED_AT, PROMOTION_MODE, VERDICT

__all__ = ["FORCED_PROMOTION_REASON", "GATES_PASSED", "PROMOTED_AT", "PROMOTION_MODE", "VERDICT"]

# ---- MLflow's and Prefect's own tags --------------------------------------------------------------------------------
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"  # makes a candidate's run a child of the loop's run
PREFECT_FLOW_RUN_ID = "prefect.flow_run_id"  # the Prefect flow run that opened the loop run

# ---- the loop's run -------------------------------------------------------------------------------------------------
LOOP_STATE = "loop.state"  # RUNNING, then PASSED / FAILED / NO_IMPROVEMENT / BUDGET_EXHAUSTED, or FAILED / KILLED
LOOP_REASON = "loop.reason"
LOOP_UNREACHABLE = "loop.unreachable"  # the target no rung left could reach
LOOP_CHAMPION = "loop.champion"  # what happened to `champion` when the loop closed
LOOP_HOST = "loop.host"  # who owns a RUNNING loop run (orphans are reaped by a later loop)
LOOP_PID = "loop.pid"
SCENARIO = "scenario"  # loop-run tags every pipeline writes (copied onto its versions)
# On the loop run, where the champion's record was not comparable with this run's candidates
# (tasks/energy_loop/champion.py): the version re-scored, why, and its figures as this run judged them.
CHAMPION_RESCORED_VERSION = "champion.rescored_version"
CHAMPION_RESCORED_REASON = "champion.rescored_reason"
CHAMPION_RESCORED_PREFIX = "champion.rescored."
SCENARIO_SOURCE = "scenario.source"  # the scenario as the request named it: a bundled name or a path
METER = "meter"
ENVIRONMENT = "environment"  # cooling: `seed` or `room`
CALIBRATION_PREFIX = "calibration."  # + `inference_ratio.<rung>` / `train_ratio.<rung>`: the machine's rung table
CALIBRATION_MACHINE = "calibration.machine"
PARALLEL_PREFIX = "parallel."  # + width, threads_per_worker, why, idle_power_w: the loop's width and why
# The table the loop read (also its dataset input, MLflow's `log_inputs`): to search runs by what they trained on.
DATA_SOURCE = "data.source"  # a file or parts folder's path, or a SQL URL with its password as ***
DATA_DIGEST = "data.digest"  # tasks/data/sources.py content_digest: another table, another digest
DATA_ROWS = "data.rows"

# ---- a candidate's (attempt's) run and version: tags ----------------------------------------------------------------
ENERGY_SOURCE = "energy_source"  # the meter the figures came from: champions are compared only within one source
ENERGY_ESTIMATED = "energy_estimated"
COMPRESSION_STEPS = "compression_steps"  # also a run param
CANDIDATE = "candidate"  # the candidate's index in the loop
REJECTED_REASON = "rejected_reason"
DETAIL_PREFIX = "detail."  # + a key of the candidate's detail record (thresholds/energy/keys.py), on its run
LOOP_RUN_ID = "loop_run_id"  # version tag: the loop run that registered it
LOOP_STATE_AT_CLOSE = "loop_state"  # version tag: the loop's final state
PARETO_PLOT = "pareto_plot"
ATTEMPT = "attempt"  # cooling: the attempt's index
KIND = "kind"  # cooling: train, retrain, shrink, distil (also a run param)
HIDDEN_UNITS = "hidden_units"  # cooling: e.g. 64-32 (also a run param)
FAILED_REASON = "failed_reason"
WEEK_PLOT = "week_plot"
MONTHLY_PLOT = "monthly_plot"
DEPLOYMENT_ENERGY_OPTIMAL_BATCH_SIZE = "deployment.energy_optimal_batch_size"  # `predict` scores at this size

# ---- figures: metrics of the run (step 0) and of the logged model; version tags too (`.6g` text) ------------------
ACCURACY = "accuracy"
RMSE = "rmse"
INFERENCE_ENERGY_J_PER_1K = "inference_energy_j_per_1k"
INFERENCE_ENERGY_SEM_J_PER_1K = "inference_energy_sem_j_per_1k"
INFERENCE_ENERGY_CI95_J_PER_1K = "inference_energy_ci95_j_per_1k"
INFERENCE_REPEATS = "inference_repeats"
ANALYTIC_INFERENCE_ENERGY_J_PER_1K = "analytic_inference_energy_j_per_1k"
TRAIN_ENERGY_J = "train_energy_j"
TRAIN_ENERGY_SEM_J = "train_energy_sem_j"
LATENCY_MS_PER_BATCH = "latency_ms_per_batch"
SPENT_ENERGY_J = "spent_energy_j"
PARAMS = "params"  # the model's parameter count
MACS = "macs"
EPOCHS_RUN = "epochs_run"
EPOCHS_SAVED = "epochs_saved"
TRAIN_S = "train_s"
MEASURE_S = "measure_s"
INFERENCE_RATIO_VS_BASELINE = "inference_ratio_vs_baseline"
INFERENCE_RATIO_CI95_LOW = "inference_ratio_ci95_low"
INFERENCE_RATIO_CI95_HIGH = "inference_ratio_ci95_high"
INFERENCE_PAIRS = "inference_pairs"
TRAIN_RATIO_VS_BASELINE = "train_ratio_vs_baseline"
TRAIN_RATIO_SEM = "train_ratio_sem"
ENERGY_SAVED_PCT = "energy_saved_pct"  # cooling figures
MINUTES_OUTSIDE_BAND = "minutes_outside_band"
BUILTIN_MINUTES_OUTSIDE_BAND = "builtin_minutes_outside_band"
SAVED_VS_BEST_CONTROLLER_PCT = "saved_vs_best_controller_pct"  # held-out years, vs the controller tuned on training
BEST_CONTROLLER_MINUTES_OUTSIDE_BAND = "best_controller_minutes_outside_band"
VS_MPC_PCT = "vs_mpc_pct"
INFERENCE_ENERGY_J_PER_YEAR = "inference_energy_j_per_year"
EPISODES_RUN = "episodes_run"

# ---- run params -----------------------------------------------------------------------------------------------------
STEP = "step"  # energy: the rung's label
PARENT = "parent"  # the candidate (attempt) it was made from
MAX_EPISODES = "max_episodes"  # cooling
EPSILON = "epsilon"

# ---- what `promote`, the champion lock and the webhook receiver record ---------------------------------------------
PROMOTED_BY = "promoted_by"
FORCED_OVER = "forced_over"  # the gate problems a forced promotion went around
LAST_GATED_CHAMPION = "last_gated_champion"  # registered-model tag: the version to move `champion` back to
LOCK_OWNER = "owner"  # tags of the `<model>--champion-lock` registered model
LOCK_HOST = "host"
LOCK_PID = "pid"
LOCK_EXPIRES_AT = "expires_at"
UNGATED_CHAMPION_PREFIX = "ungated_champion."  # on the version and the registered model
UNGATED_CHAMPION_AT = "ungated_champion.at"
UNGATED_CHAMPION_ACTION = "ungated_champion.action"
UNGATED_CHAMPION_REASON = "ungated_champion.reason"
UNGATED_CHAMPION_PROMOTION_MODE = "ungated_champion.promotion_mode"
UNGATED_CHAMPION_VERSION = "ungated_champion.version"
OBSERVED_PREFIX = "observed."  # + what `predict` measured when scoring for real (rows, batch_size, ...), and the
# figures of each `serve` window as metric series on the version's run (energy_j_per_1k, latency_p95_ms, quality, ...)
OBSERVED_INFERENCE_ENERGY_J_PER_1K = "observed.inference_energy_j_per_1k"
OBSERVED_ROWS_AT_BATCH_PREFIX = "observed.rows_at_batch_"  # + a batch bucket's bound: a window's rows in that bucket
OBSERVED_WINDOW_ROWS = "observed.rows"  # the series of a `serve` window that status and the production loop read
OBSERVED_WINDOW_ENERGY_J = "observed.energy_j"
OBSERVED_WINDOW_ENERGY_SEM_J_PER_1K = "observed.energy_j_per_1k_sem"
OBSERVED_WINDOW_LATENCY_P95_MS = "observed.latency_p95_ms"
OBSERVED_WINDOW_QUALITY = "observed.quality"
OBSERVED_WINDOW_LABELLED_ROWS = "observed.labelled_rows"
OBSERVED_WINDOW_ERRORS = "observed.errors"
OBSERVED_WINDOW_REQUESTS = "observed.requests"
# Version tags of the production judgement (`serve` with a scenario's production: block): the last event of each
# kind, as JSON (when, the misses with their limits, the observed batch mix).
PRODUCTION_LAST_BREACH = "production.last_breach"
PRODUCTION_LAST_RECOVERY = "production.last_recovery"
BENCHMARK_MODEL = "model"  # logged-model tag of a benchmark's ONNX graph: its label
