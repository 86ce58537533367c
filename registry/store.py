"""The tracking store itself: where it is, a client for it, and the runs that only hold a benchmark's outputs.

The bottom of `registry/`: every other module of it may import this one, and it imports none of them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def open_store_in_background() -> Callable[[], None]:
    """Open the tracking store in a thread (an SQL store checks or creates its tables: most of a second,
    which MLflow then caches per URI) while a command does other work; call the result before the first
    tracking call, so two threads never set the store up at once. A failure is left for that call to say."""
    import contextlib
    import threading

    def open_store() -> None:
        with contextlib.suppress(Exception):  # the loop's own first call reports it, with the retry budget
            client().search_experiments(max_results=1)

    thread = threading.Thread(target=open_store, name="open-tracking-store", daemon=True)
    thread.start()
    return thread.join


def experiment_id_of(mlflow_client: Any, name: str) -> str:
    exp = mlflow_client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    uri = tracking_uri()
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        # Embedded store: keep artifacts in a folder beside the database, not in ./mlruns.
        db_dir = Path(uri.split("///", 1)[1]).parent if "///" in uri else Path(".")
        location = (db_dir / "mlartifacts").resolve().as_uri()
    return str(mlflow_client.create_experiment(name, artifact_location=location))


def log_benchmark(experiment: str, params: dict[str, str], artifacts: list[Path]) -> str:
    """One finished run holding a benchmark's outputs (table, plots)."""
    from mlflow.entities import Param

    mc = client()
    run = mc.create_run(experiment_id_of(mc, experiment), run_name=experiment)
    mc.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    for path in artifacts:
        mc.log_artifact(run.info.run_id, str(path))
    mc.set_terminated(run.info.run_id, status="FINISHED")
    return str(run.info.run_id)


class IncompleteArtifact(RuntimeError):
    """A candidate's model files are not all in the artifact store: it is not registered."""
