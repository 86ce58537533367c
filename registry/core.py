"""The registry core both pipelines stand on: runs, model versions, tags and aliases in MLflow.

One parent run per loop and one nested run per candidate. Model versions are registered
only once the loop reaches a named final state (`close_loop`: artifacts, every model file
checked in the store, all versions, the run finished, then `champion` moved under the lock),
so a crashed or interrupted loop leaves runs marked FAILED/KILLED and nothing registered.
What a pipeline logs and how it judges a champion is in registry/<pipeline>.py.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel

from registry import keys, mlflow_model
from registry.observed import Observed, observed
from registry.store import IncompleteArtifact, client, experiment_id_of, tracking_uri
from thresholds.core import Final, FinalState
from thresholds.energy import keys as energy_keys
from thresholds.energy.production import at_mix
from thresholds.promotion import CHAMPION, gate_problems


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted MLflow params: {"targets": {"min_accuracy": 0.9}} -> targets.min_accuracy."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def open_loop(experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """Create the parent run of a loop; return its run ID."""
    from mlflow.entities import Param

    params = flatten(params)
    c = client()
    experiment_id = experiment_id_of(c, experiment)
    reap_orphans(experiment_id)
    owner_tags = {keys.LOOP_STATE: "RUNNING", keys.LOOP_HOST: socket.gethostname(), keys.LOOP_PID: str(os.getpid())}
    run = c.create_run(experiment_id, run_name=run_name, tags={**tags, **owner_tags})
    c.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return str(run.info.run_id)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


def reap_orphans(experiment_id: str, stale_after_s: float = 24 * 3600) -> list[str]:
    """Mark loop runs whose process died (SIGKILL, OOM, power loss) FAILED, with their nested runs.

    A loop run is orphaned when it is still RUNNING but its process is gone: checked directly
    for runs started on this host, by age (`stale_after_s`) for runs from other hosts. Nothing
    is registered or promoted for them: versions are registered only when a loop closes, and
    `promote` refuses versions whose loop run did not finish.
    """
    import time

    mc = client()
    reaped = []
    running = mc.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{keys.LOOP_STATE}` = 'RUNNING'",
        max_results=200,
    )
    for run in running:
        tags = run.data.tags
        pid, host = tags.get(keys.LOOP_PID, ""), tags.get(keys.LOOP_HOST, "")
        here = host == socket.gethostname() and pid.isdigit()
        age_s = time.time() - run.info.start_time / 1000
        if (here and _process_gone(int(pid))) or (not here and age_s > stale_after_s):
            reason = (
                f"orphaned: process {pid or '?'} on {host or '?'} is gone (killed or crashed); found by a later loop"
            )
            nested = mc.search_runs(
                [experiment_id],
                filter_string=(
                    f"tags.{keys.MLFLOW_PARENT_RUN_ID} = '{run.info.run_id}' and attributes.status = 'RUNNING'"
                ),
            )
            for child in nested:
                mc.set_terminated(child.info.run_id, status="FAILED")
            abort_loop(run.info.run_id, reason, "FAILED")
            reaped.append(str(run.info.run_id))
    return reaped


class NestedRun(NamedTuple):
    """What a candidate's nested run records: its name, params, step-0 figures (None: not measured), per-epoch or
    per-episode curves and tags."""

    name: str
    params: dict[str, str]
    metrics: Mapping[str, float | int | None]
    series: dict[str, list[float]]
    tags: dict[str, str]


class RunFiles(NamedTuple):
    """A nested run's model files: the folder logged as plain artifacts under `artifact_path`, or through
    `log_model(client, run_id)` as an MLflow model when given."""

    model_dir: str | None
    artifact_path: str
    log_model: Callable[[Any, str], None] | None = None


def log_nested_run(loop_run_id: str, record: NestedRun, files: RunFiles, ok: bool) -> str:
    """One candidate's nested run under the loop's run: its record, then its model files; FINISHED if `ok`."""
    run_name, params, metrics, series, tags = record
    model_dir, artifact_path, log_model = files
    from mlflow.entities import Metric, Param, RunTag

    mc = client()
    parent = mc.get_run(loop_run_id)
    run = mc.create_run(parent.info.experiment_id, run_name=run_name, tags={keys.MLFLOW_PARENT_RUN_ID: loop_run_id})
    run_id = str(run.info.run_id)
    found = [Metric(k, float(v), 0, 0) for k, v in metrics.items() if v is not None]
    for name, values in series.items():
        found += [Metric(name, float(v), 0, step) for step, v in enumerate(values, start=1)]
    mc.log_batch(
        run_id,
        metrics=found[:1000],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    for start in range(1000, len(found), 1000):
        mc.log_batch(run_id, metrics=found[start : start + 1000])
    if log_model is not None:
        log_model(mc, run_id)
    elif model_dir and Path(model_dir).is_dir():
        mc.log_artifacts(run_id, model_dir, artifact_path=artifact_path)
    mc.set_terminated(run_id, status="FINISHED" if ok else "FAILED")
    return run_id


class LoopRecord(BaseModel):
    versions: dict[int, str] = {}  # candidate index -> registered version
    champion_version: str | None = None
    champion_moved: bool = False
    champion_reason: str = ""


def champion_version(mc: Any, model_name: str) -> Any | None:
    """The version the `champion` alias points at, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return mc.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def check_logged_model(mc: Any, run_id: str, model_dir: Path, artifact_path: str = "model") -> None:
    """Every file of the saved model is in the run's artifacts (under `artifact_path`) with its full size."""
    logged = {Path(f.path).name: f.file_size for f in mc.list_artifacts(run_id, artifact_path)}
    for local in model_dir.iterdir():
        size = local.stat().st_size
        if logged.get(local.name) != size:
            stored = logged.get(local.name)
            raise IncompleteArtifact(
                f"run {run_id}: artifact {artifact_path}/{local.name} is {stored} bytes in the store, expected {size}: "
                "nothing registered"
            )


class ChampionLockTimeout(RuntimeError):
    """Another loop or promotion held the champion lock for longer than we wait."""


def _lock_name(model_name: str) -> str:
    return f"{model_name}--champion-lock"


@contextmanager
def champion_lock(mc: Any, model_name: str, owner: str, lease_s: float = 120.0, wait_s: float = 90.0) -> Iterator[None]:
    """Mutual exclusion for moving `champion`: compare-and-set on the alias.

    MLflow has no conditional alias update, but creating a registered model is atomic (unique
    name in the store), on sqlite and on a server alike: the lock is a registered model named
    `<model>--champion-lock`, created to acquire and deleted to release. Whoever holds it re-reads
    the current champion, decides, and moves the alias. A holder that died leaves a lock whose
    lease (`expires_at` tag) runs out; the next waiter breaks it.
    """
    from mlflow.exceptions import MlflowException

    name = _lock_name(model_name)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            mc.create_registered_model(
                name,
                tags={
                    keys.LOCK_OWNER: owner,
                    keys.LOCK_HOST: socket.gethostname(),
                    keys.LOCK_PID: str(os.getpid()),
                    keys.LOCK_EXPIRES_AT: f"{time.time() + lease_s:.3f}",
                },
                description=f"Held while {owner} moves the champion alias of {model_name}; deleted when done.",
            )
            break
        except MlflowException as exc:
            # On a lost race the sqlite store re-reads the name after its unique-constraint error; if the
            # holder released in between, that read says RESOURCE_DOES_NOT_EXIST: contended, not an error.
            if not any(code in str(exc.error_code) for code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")):
                raise
        try:
            held = mc.get_registered_model(name)
            expired = time.time() > float(held.tags.get(keys.LOCK_EXPIRES_AT, "0"))
        except MlflowException:
            continue  # released between our two calls: try again at once
        if expired:
            try:
                mc.delete_registered_model(name)
            except MlflowException:
                pass
            continue
        if time.monotonic() > deadline:
            holder = held.tags.get(keys.LOCK_OWNER, "?")
            raise ChampionLockTimeout(f"champion lock of {model_name} held by {holder} for more than {wait_s:g} s")
        time.sleep(0.2 + random.random() * 0.3)
    try:
        yield
    finally:
        try:
            mc.delete_registered_model(name)
        except MlflowException:
            pass


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def version_figures(mc: Any, version: Any, names: Iterable[str]) -> dict[str, float]:
    """A version's figures by key, as numbers: the metrics of the run behind it (`close_loop` re-logs there any figure
    that changed after the run, so they are what was registered), each one missing there read from the version's tag
    of the same key (versions registered by hand, or whose run is gone)."""
    from mlflow.exceptions import MlflowException

    metrics: dict[str, float] = {}
    if version.run_id:
        try:
            metrics = dict(mc.get_run(version.run_id).data.metrics)
        except MlflowException:
            pass
    found = {}
    for name in names:
        value = metrics.get(name)
        value = _number(version.tags.get(name)) if value is None else float(value)
        if value is not None:
            found[name] = value
    return found


def ensure_registered_model(mc: Any, name: str, description: str) -> None:
    """Create the registered model unless it exists (two loops may race to create it)."""
    from mlflow.exceptions import MlflowException

    try:
        mc.create_registered_model(name, description=description)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise


def log_text(mc: Any, run_id: str, filename: str, text: str) -> None:
    """One text file as an artifact of `run_id`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        path.write_text(text)
        mc.log_artifact(run_id, str(path))


def record_gated_champion(mc: Any, model_name: str, version: str) -> None:
    """Remember the last champion that passed its gates: the webhook receiver moves `champion` back to it."""
    mc.set_registered_model_tag(model_name, keys.LAST_GATED_CHAMPION, version)


Judge = Callable[[Any, Any | None], tuple[bool, str]]  # (client, the champion's version or None) -> (wins, why)


def move_champion(mc: Any, model_name: str, version: str, beats: Judge, owner: str) -> tuple[bool, str]:
    """Under the champion lock: re-read the champion, judge with `beats(mc, champion version or None)`, move the alias
    only if it wins."""
    with champion_lock(mc, model_name, owner):
        current = champion_version(mc, model_name)
        wins, reason = beats(mc, current)
        if wins:
            mc.set_registered_model_alias(model_name, CHAMPION, version)
            record_gated_champion(mc, model_name, version)
        return wins, reason


class VersionSpec(BaseModel):
    """A model version to register: the candidate's index, its run, the model folder logged under `artifact_path`."""

    index: int
    run_id: str
    model_dir: str
    artifact_path: str
    tags: dict[str, str]
    model_id: str | None = (
        None  # an MLflow logged model (registered from `models:/<id>`); else the run's artifact folder
    )
    figures: dict[str, float] = {}  # the run's metrics (and the logged model's) hold these values once registered


def close_loop(
    loop_run_id: str,
    model_name: str,
    description: str,
    final: Final,
    texts: dict[str, str],
    files: list[Path],
    versions: list[VersionSpec],
    beats: Judge,
) -> LoopRecord:
    """Every pipeline's closing sequence: artifacts, then every model file checked in the store, then all versions,
    then the run marked finished, then `champion` moved under the lock if the chosen version `beats` it."""
    mc = client()
    ensure_registered_model(mc, model_name, description)
    # Artifacts first: a full disk or an unwritable store fails here, before any version exists.
    for filename, text in texts.items():
        log_text(mc, loop_run_id, filename, text)
    for path in files:
        if path.exists():
            mc.log_artifact(loop_run_id, str(path))
    for spec in versions:  # all checked before the first version is created: none or all are registered
        if spec.model_id is not None:
            mlflow_model.check_logged(mc, spec.model_id, Path(spec.model_dir))
        else:
            check_logged_model(mc, spec.run_id, Path(spec.model_dir), spec.artifact_path)
    record = LoopRecord()
    for spec in versions:
        # Figures that changed after the run was logged (the full-split confirmation) are logged again, so the run's
        # metrics are the version's figures: the champion rule and `status` read them there.
        if spec.figures:
            mlflow_model.attach_figures(mc, spec.run_id, spec.model_id, spec.figures)
        if spec.model_id is not None:
            source, model_id = f"models:/{spec.model_id}", spec.model_id
        else:
            source, model_id = f"runs:/{spec.run_id}/{spec.artifact_path}", None
        version = mc.create_model_version(
            model_name, source=source, run_id=spec.run_id, tags=spec.tags, model_id=model_id
        )
        record.versions[spec.index] = str(version.version)
    chosen = (
        final.chosen
        if final.state == FinalState.PASSED and final.chosen is not None and final.chosen in record.versions
        else None
    )
    mc.set_tag(loop_run_id, keys.LOOP_STATE, final.state.value)
    mc.set_tag(loop_run_id, keys.LOOP_REASON, final.reason[:4000])
    if final.unreachable:
        mc.set_tag(loop_run_id, keys.LOOP_UNREACHABLE, final.unreachable)  # the target no rung left could reach
    mc.set_terminated(loop_run_id, status="FINISHED")
    # The alias moves last, after the run is recorded as finished, and under the champion lock so that
    # two loops finishing at once compare against the champion as it is, not as it was.
    if chosen is not None:
        record.champion_moved, record.champion_reason = move_champion(
            mc, model_name, record.versions[chosen], beats, owner=f"loop run {loop_run_id}"
        )
    moved = f"moved to {record.versions[chosen]}: " if record.champion_moved and chosen is not None else "unchanged: "
    mc.set_tag(loop_run_id, keys.LOOP_CHAMPION, moved + (record.champion_reason or final.state.value)[:3900])
    current = champion_version(mc, model_name)
    record.champion_version = None if current is None else str(current.version)
    return record


def abort_loop(loop_run_id: str, reason: str, status: str = "FAILED") -> None:
    """Mark a loop that crashed or was interrupted; nothing is registered, no alias moves."""
    mc = client()
    mc.set_tag(loop_run_id, keys.LOOP_STATE, status)
    mc.set_tag(loop_run_id, keys.LOOP_REASON, reason[:4000])
    mc.set_terminated(loop_run_id, status=status)


def download_version(model_name: str, ref: str, dst_dir: Path) -> Path:
    """Download a registered version (`3` or `@champion`) into `dst_dir`; returns the model folder."""
    import mlflow

    uri = f"models:/{model_name}/{ref.lstrip('@')}" if not ref.startswith("@") else f"models:/{model_name}@{ref[1:]}"
    mlflow.set_tracking_uri(tracking_uri())
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir)))


class PromotionRefused(RuntimeError):
    """The version's recorded gates do not allow promotion (use --force with a reason)."""


def version_gate_problems(mc: Any, mv: Any) -> list[str]:
    """Why version `mv` may not be champion (empty: it may), from its tags and the runs behind it."""
    from mlflow.exceptions import MlflowException

    def status_of(run_id: str | None) -> str:
        try:
            return str(mc.get_run(run_id).info.status) if run_id else "UNKNOWN"
        except MlflowException:
            return "DELETED"

    tags = dict(mv.tags)
    return gate_problems(
        tags, status_of(mv.run_id), status_of(tags[keys.LOOP_RUN_ID]) if tags.get(keys.LOOP_RUN_ID) else None
    )


def promote(model_name: str, version: str, force: bool = False, reason: str = "", user: str = "") -> str:
    """Move `champion` to `version` if its recorded gates passed, or with `force` and a reason on record."""
    from datetime import UTC, datetime

    mc = client()
    problems = version_gate_problems(mc, mc.get_model_version(model_name, version))
    if problems and not force:
        raise PromotionRefused(f"version {version} of {model_name} cannot be champion: {'; '.join(problems)}")
    if force and not reason.strip():
        raise ValueError("reason = '': expected a non-empty reason for --force (it is written to the version's tags)")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    mc.set_model_version_tag(model_name, version, keys.PROMOTED_AT, now)
    mc.set_model_version_tag(model_name, version, keys.PROMOTED_BY, user or "unknown")
    if force:
        mc.set_model_version_tag(model_name, version, keys.FORCED_PROMOTION_REASON, reason[:4000])
        mc.set_model_version_tag(model_name, version, keys.FORCED_OVER, "; ".join(problems)[:4000] or "nothing")
    with champion_lock(mc, model_name, owner=f"promote by {user or 'unknown'}"):
        mc.set_registered_model_alias(model_name, CHAMPION, version)
        if not problems:
            record_gated_champion(mc, model_name, version)
    return f"champion of {model_name} is now version {version}" + (f" (forced: {reason})" if force else "")


def status(model_name: str) -> dict[str, Any]:
    """The champion and the best passing challenger (lowest inference energy among other passing versions)."""
    mc = client()
    versions = mc.search_model_versions(f"name='{model_name}'")
    champion = champion_version(mc, model_name)
    passing = [
        v
        for v in versions
        if v.tags.get(keys.GATES_PASSED) == "true" and (champion is None or v.version != champion.version)
    ]

    def energy(v: Any) -> float:
        name = keys.INFERENCE_ENERGY_J_PER_1K
        return version_figures(mc, v, [name]).get(name, float("inf"))

    challenger = min(passing, key=energy) if passing else None
    describe = lambda v: None if v is None else {"version": str(v.version), **dict(v.tags)}  # noqa: E731
    return {
        "champion": describe(champion),
        "challenger": describe(challenger),
        "served": {role: served_figures(mc, v) for role, v in (("champion", champion), ("challenger", challenger))},
    }


def served_figures(mc: Any, version: Any) -> tuple[Observed, float | None, float | None] | None:
    """What `serve` observed for a version, the loop's J per 1k at that observed batch mix (from the figures it
    measured per batch size) and the loop's headline J per 1k; None if the version was never served."""
    if version is None:
        return None
    tags = dict(version.tags)
    metric = keys.RMSE if keys.RMSE in tags and keys.ACCURACY not in tags else keys.ACCURACY
    seen = observed(mc, version.run_id, metric)
    if seen is None:
        return None
    headline = version_figures(mc, version, [keys.INFERENCE_ENERGY_J_PER_1K]).get(keys.INFERENCE_ENERGY_J_PER_1K)
    return seen, at_mix(loop_j_per_1k_by_batch(tags, headline), seen.rows_by_batch), headline


def loop_j_per_1k_by_batch(tags: dict[str, str], headline: float | None) -> dict[int, float]:
    """The J per 1k the loop measured for a version (its tags, its headline figure) at each batch size it was
    judged at ({} where unknown)."""
    prefix = energy_keys.INFERENCE_J_PER_1K_AT_BATCH_PREFIX
    by_batch = {int(k[len(prefix) :]): float(v) for k, v in tags.items() if k.startswith(prefix)}
    sizes = [int(b) for b in tags.get(energy_keys.SERVING_BATCH_SIZES, "").split(",") if b.strip().isdigit()]
    if not by_batch and len(sizes) == 1 and headline is not None:
        by_batch = {sizes[0]: headline}  # measured at one size: the headline is that size's figure
    return by_batch


def loop_result(flow_run_id: str) -> tuple[str, str] | None:
    """(loop.state, loop.reason) of the loop run a Prefect flow run opened, in any pipeline's experiment, or None."""
    mc = client()
    experiment_ids = [e.experiment_id for e in mc.search_experiments()]
    if not experiment_ids:
        return None
    runs = mc.search_runs(
        experiment_ids,
        filter_string=f"tags.`{keys.PREFECT_FLOW_RUN_ID}` = '{flow_run_id}' and tags.`{keys.LOOP_STATE}` != ''",
        max_results=1,
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    return tags.get(keys.LOOP_STATE, "UNKNOWN"), tags.get(keys.LOOP_REASON, "")
