"""`loop_result` finds the loop run a Prefect flow run opened, in whichever pipeline's experiment it is."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from registry.core import loop_result


@pytest.mark.parametrize("experiment", ["energy-loop", "cooling-loop"])
def test_loop_result_reads_the_loop_run_of_either_pipeline(mlflow_store: str, experiment: str) -> None:
    client = MlflowClient(mlflow_store)
    exp_id = client.create_experiment(experiment)
    client.create_run(
        exp_id, tags={"prefect.flow_run_id": "other", "loop.state": "FAILED", "loop.reason": "not this one"}
    )
    client.create_run(
        exp_id,
        tags={"prefect.flow_run_id": "abc-123", "loop.state": "PASSED", "loop.reason": "attempt #0 meets every target"},
    )
    assert loop_result("abc-123") == ("PASSED", "attempt #0 meets every target")
    assert loop_result("no-such-flow-run") is None
