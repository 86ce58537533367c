"""Keys the energy flow's tasks write beyond the registry's (registry/keys.py) and the candidate record's
(thresholds/energy/keys.py): the data tags of the loop run and its versions, and the deployment hints on the chosen
candidate's version."""

from __future__ import annotations

DATASET = "dataset"  # loop-run tag
TARGET = "target"  # loop-run tag: a table's target column, where the request named one
PRODUCTION_RETRAIN_FOR = "production.retrain_for"  # loop-run tag: the figures a production breach missed (a,b)
SAMPLES = "samples"  # loop-run param beside the scenario's fields (dotted: `targets.min_accuracy`): the sample cap
QUALITY_METRIC_REASON = "quality_metric_reason"
MODEL_HOOK_PREFIX = "model."  # + a model hook's name (the user's own model code)
DATA_NOTES = "data.notes"  # what preparing the data did (dropped rows, filled values)
DATA_KEY = (
    "data.key"  # the prepared data's cache key (dataset, content, sample cap, split): the same key, the same rows
)
DEPLOYMENT_ENERGY_J_PER_1K_BY_BATCH_SIZE = "deployment.energy_j_per_1k_by_batch_size"
PAYBACK = "payback"
PAYBACK_LOOP_ENERGY_J = "payback_loop_energy_j"
PAYBACK_PREDICTIONS = "payback_predictions"
# The batch sizes every candidate is measured and judged at (tasks/energy_loop/batch_fit.py), on the loop run.
MEASURED_BATCH_SIZES = "measurement.batch_sizes"
CALL_S_AT_BATCH = "measurement.call_s_at_batch"
BATCH_SIZES_REASON = "measurement.batch_sizes_reason"
# The loop's own cost (tasks/energy_loop/ledger.py), metrics of the loop run: the totals and, after the prefixes, each
# part (calibration, training, measurement, orchestration).
LOOP_ENERGY_J = "loop_energy_j"
LOOP_WALL_S = "loop_wall_s"
LOOP_ENERGY_J_PREFIX = "loop_energy_j_"
LOOP_WALL_S_PREFIX = "loop_wall_s_"
