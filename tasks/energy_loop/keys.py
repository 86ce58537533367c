"""Keys the energy flow's tasks write beyond the registry's (registry/keys.py) and the candidate record's
(thresholds/energy/keys.py): the data tags of the loop run and its versions, and the deployment hints on the chosen
candidate's version."""

from __future__ import annotations

DATASET = "dataset"  # loop-run tag
SAMPLES = "samples"  # loop-run param beside the scenario's fields (dotted: `targets.min_accuracy`): the sample cap
QUALITY_METRIC_REASON = "quality_metric_reason"
MODEL_HOOK_PREFIX = "model."  # + a model hook's name (the user's own model code)
DATA_NOTES = "data.notes"  # what preparing the data did (dropped rows, filled values)
DEPLOYMENT_ENERGY_J_PER_1K_BY_BATCH_SIZE = "deployment.energy_j_per_1k_by_batch_size"
PAYBACK = "payback"
PAYBACK_LOOP_ENERGY_J = "payback_loop_energy_j"
PAYBACK_PREDICTIONS = "payback_predictions"
