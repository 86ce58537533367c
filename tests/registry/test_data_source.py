"""The table a loop read, on its MLflow run: a training dataset input (source, rows, digest) and tags to search by."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from registry import keys
from registry.core import open_loop
from registry.energy import EXPERIMENT, log_data_source
from tasks.data.datasets import load_cached, prepare


def _part(folder: Path, start: int, n: int) -> None:
    rng = np.random.default_rng(start)
    frame = pd.DataFrame(
        {"x0": rng.normal(size=n), "when": pd.Timestamp("2026-01-01", tz="UTC"), "label": np.arange(n) % 2}
    )
    frame.to_parquet(folder / f"part-{1_700_000_000_000 + start}-{start:06d}.parquet", index=False)


def test_each_run_logs_what_it_read_with_its_own_digest(mlflow_store: str, tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    _part(folder, 0, 30)
    client = MlflowClient(mlflow_store)
    logged = []
    for more in (0, 10):  # the second run reads the folder after 10 more labelled rows arrived
        if more:
            _part(folder, 30, more)
        source = load_cached(str(prepare(str(folder), tmp_path / "cache", target="label"))).source
        run_id = open_loop(EXPERIMENT, "loop", {}, {})
        log_data_source(run_id, source)
        run = client.get_run(run_id)
        (dataset_input,) = run.inputs.dataset_inputs
        logged.append((dataset_input, run.data.tags))
    for (dataset_input, tags), rows in zip(logged, (30, 40), strict=True):
        dataset = dataset_input.dataset
        assert dataset.name == "feedback" and dataset.source_type == "local"
        assert json.loads(dataset.source) == {"uri": str(folder.resolve())}
        assert json.loads(dataset.profile)["num_rows"] == rows
        assert json.loads(dataset.schema)["mlflow_colspec"] == [
            {"name": "x0", "type": "double"},
            {"name": "when", "type": "datetime"},
            {"name": "label", "type": "long"},
        ]
        assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]
        assert tags[keys.DATA_DIGEST] == dataset.digest and tags[keys.DATA_ROWS] == str(rows)
        assert tags[keys.DATA_SOURCE] == str(folder.resolve())
    assert logged[0][0].dataset.digest != logged[1][0].dataset.digest
