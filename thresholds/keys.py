"""Keys of a model version's record that the promotion policy (`thresholds/promotion.py`) reads.

Every MLflow key the project writes or reads is a constant of a `keys.py` module of the lowest layer that uses it
(this one, `thresholds/energy/keys.py`, `registry/keys.py`, `tasks/energy_loop/keys.py`, `tasks/cooling/keys.py`);
tests/test_keys.py fails on a literal key anywhere else.
"""

from __future__ import annotations

GATES_PASSED = "gates_passed"  # version tag: "true" when the candidate met every gate of its scenario
VERDICT = "verdict"  # version and run tag: the gates' verdict in words
PROMOTION_MODE = "promotion_mode"  # loop-run and version tag: `warn` or `enforce` (the scenario's promotion)
FORCED_PROMOTION_REASON = "forced_promotion_reason"  # version tag: why `promote --force` went around the gates
PROMOTED_AT = "promoted_at"  # version tag: when `promote` moved `champion` to it (ISO 8601, UTC)
