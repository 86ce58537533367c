"""Keys of a candidate's detail record (`CandidateResult.tags` and `.series`), written by the tasks and the
full-split confirmation: logged as `detail.<key>` tags and per-epoch metrics on the candidate's nested run; the few
that the registry copies onto the version (`serving.*`, the training attribution, the quality metric) keep their key.
"""

from __future__ import annotations

# What the model is and how it is served (copied onto the version: `serving.` prefix).
SERVING_PREFIX = "serving."
SERVING_RUNTIME = "serving.runtime"
SERVING_PRECISION = "serving.precision"
SERVING_THREADS = "serving.threads"
SERVING_BATCH_SIZES = "serving.batch_sizes"
INT8_BACKEND = "int8_backend"
QUALITY_METRIC = "quality_metric"  # also a loop-run tag: the metric the gates judge
EVAL_SAMPLES = "eval_samples"  # "all" once confirmed on the full test split
SUBSET_ACCURACY = "subset_accuracy"  # the accuracy on the evaluation subset, kept when the full split replaces it
ACCURACY_BOUND95_PT = "accuracy_bound95_pt"

# How the inference energy was measured.
MEASUREMENT_OTHER_CPU_SHARE = "measurement.other_cpu_share"  # the share other processes took while measuring
MEASUREMENT_WARNING = "measurement.warning"
ENERGY_DETAIL_PREFIX = "energy."  # the meter's own details of the inference window
ANALYTIC_TABLE = "analytic_table"
MEASURED_INFERENCE_ENERGY_J_PER_1K = "measured_inference_energy_j_per_1k"  # the local reading beside an estimate
IDLE_POWER_W_SUBTRACTED = "idle_power_w_subtracted"
INFERENCE_LATENCY_MS_IQR = "inference_latency_ms_iqr"
INFERENCE_SAMPLES_MEASURED = "inference_samples_measured"
INFERENCE_PAIRED_WITH = "inference_paired_with"
INFERENCE_REFERENCE_J_PER_1K = "inference_reference_j_per_1k"
INFERENCE_RATIO_WORST_SIZE = "inference_ratio_worst_size"
INFERENCE_RATIO_AT_BATCH_PREFIX = "inference_ratio_at_batch_"  # + the batch size
INFERENCE_J_PER_1K_AT_BATCH_PREFIX = "inference_j_per_1k_at_batch_"  # + the batch size

# How the candidate was trained.
TRAIN_HOST = "train_host"
TRAIN_PID = "train_pid"
TRAIN_CPU_S = "train_cpu_s"
TRAIN_WALL_S = "train_wall_s"
TRAIN_ENERGY_ATTRIBUTION = "train_energy_attribution"  # copied onto the version, with the split's details below
TRAIN_ENERGY_ATTRIBUTION_RULE = "train_energy_attribution.rule"
TRAIN_ENERGY_ATTRIBUTION_MACHINE_ENERGY_J = "train_energy_attribution.machine_energy_j"
TRAIN_ENERGY_ATTRIBUTION_PHASE_S = "train_energy_attribution.phase_s"
TRAIN_ENERGY_ATTRIBUTION_IDLE_POWER_W = "train_energy_attribution.idle_power_w"
TRAIN_ENERGY_ATTRIBUTION_CANDIDATES = "train_energy_attribution.candidates"
TRAIN_ENERGY_ATTRIBUTION_CPU_SHARE = "train_energy_attribution.cpu_share"
TRAIN_ENERGY_ATTRIBUTION_TIME_SHARE = "train_energy_attribution.time_share"
TRAIN_ENERGY_ATTRIBUTION_BUSY_J = "train_energy_attribution.busy_j"
TRAIN_ENERGY_ATTRIBUTION_CONSTANT_J = "train_energy_attribution.constant_j"
TEACHER = "teacher"
TEACHER_PARAMS = "teacher_params"
MACS_BEFORE = "macs_before"
PARAMS_BEFORE = "params_before"
PRUNE_AT_EPOCH = "prune_at_epoch"
EPOCHS_BEFORE_PRUNING = "epochs_before_pruning"
FINE_TUNE_BUDGET_EPOCHS = "fine_tune_budget_epochs"
ARCHITECTURE_FROM = "architecture_from"
SEARCH_CAP_J_PER_1K = "search.cap_j_per_1k"
SEARCH_TRIED = "search.tried"
SEARCH_PARETO = "search.pareto"
SEARCH_POINTS = "search.points"

# Per-epoch curves (`CandidateResult.series`): metrics of the candidate's run, step = epoch.
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
EPOCH_ENERGY_J = "epoch_energy_j"
