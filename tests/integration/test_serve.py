"""`energy-loop serve` for real: a subprocess on loopback against the quick loop's embedded MLflow store, asked over
HTTP as a client would: answers as MLflow's pyfunc gives them, metrics in Prometheus format and on the version's run,
observed quality from feedback, the alias moved under load from several threads, a broken version refused, each bad
input answered in one line, and SIGTERM ending it with its last window written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import QuickLoop
from tests.integration.serve_client import Server, start_serve, stop_serve
from tests.integration.test_serving import _raw_rows

pytestmark = [pytest.mark.integration]
ALIAS = "serve-test"


def _start(loop: QuickLoop, tmp_path: Path, *extra: str) -> Server:
    env = {**os.environ, "MLFLOW_TRACKING_URI": loop.store}
    return start_serve(f"{loop.model_name}@{ALIAS}", env, loop.folder, tmp_path, *extra)


@pytest.fixture
def versions(quick_loop: QuickLoop) -> Iterator[list[str]]:
    """The loop's versions, its alias for these tests on the first one (the champion stays where it is)."""
    client = MlflowClient(quick_loop.store)
    found = sorted((str(v.version) for v in client.search_model_versions(f"name='{quick_loop.model_name}'")), key=int)
    assert len(found) >= 2
    client.set_registered_model_alias(quick_loop.model_name, ALIAS, found[0])
    yield found
    client.delete_registered_model_alias(quick_loop.model_name, ALIAS)


def test_serve_answers_as_the_pyfunc_measures_itself_and_stops_on_sigterm(
    quick_loop: QuickLoop, versions: list[str], tmp_path: Path
) -> None:
    import mlflow
    from prometheus_client.parser import text_string_to_metric_families

    server = _start(quick_loop, tmp_path, "--interval-s", "1", "--feedback-dir", str(tmp_path / "feedback"))
    try:
        raw, labels = _raw_rows(8)
        status, headers, body = server.score(raw)
        assert status == 200, body
        expected = mlflow.pyfunc.load_model(f"models:/{quick_loop.model_name}/{versions[0]}").predict(raw)
        assert json.loads(body) == json.loads(json.dumps({"predictions": expected.to_dict(orient="records")}))
        request_id = headers["x-request-id"]
        # Half the labels wrong on purpose: the observed accuracy is the share the test computes by hand.
        answered = [p["prediction"] for p in json.loads(body)["predictions"]]
        given = [a if i % 2 == 0 else next(c for c in "0123456789" if c != a) for i, a in enumerate(answered)]
        feedback = {"request_id": request_id, "labels": given}
        assert server.ask("/feedback", json.dumps(feedback).encode())[:1] == (200,)
        again = server.ask("/feedback", json.dumps(feedback).encode())  # counted once
        assert again[0] == 400 and b"request_id" in again[2]
        health = json.loads(server.ask("/health")[2])
        assert health["version"] == versions[0] and health["alias"] == ALIAS and health["model"] == "digits-quick"
        time.sleep(2.5)  # a reporting window closes
        families = {f.name: f for f in text_string_to_metric_families(server.ask("/metrics")[2].decode())}
        assert {s.value for s in families["energy_loop_serving_quality"].samples} == {0.5}
        assert families["energy_loop_serving_predictions"].samples[0].value == 8
        assert families["energy_loop_serving_energy_joules"].samples[0].value > 0
        (provenance,) = families["energy_loop_serving_energy_info"].samples
        assert provenance.labels["attribution"] == "process-cpu-share" and provenance.labels["estimated"] == "true"
        buckets = [s for s in families["energy_loop_serving_request_rows"].samples if s.name.endswith("_bucket")]
        assert any(s.labels["le"] == "8.0" and s.value == 1 for s in buckets)  # one request of 8 rows
        parts = list((tmp_path / "feedback").glob("*.parquet"))
        assert len(parts) == 1
        import pandas as pd

        written = pd.read_parquet(parts[0])
        assert list(written["label"]) == given and list(written.columns[:-1]) == list(raw.columns)
    finally:
        code = stop_serve(server)
    log = server.log.read_text()
    assert code == 0 and "Traceback" not in log and "stopped serving: last window" in log, log
    run_id = MlflowClient(quick_loop.store).get_model_version(quick_loop.model_name, versions[0]).run_id
    history = MlflowClient(quick_loop.store).get_metric_history(run_id, "observed.energy_j_per_1k")
    assert history and all(m.value > 0 for m in history)
    assert MlflowClient(quick_loop.store).get_metric_history(run_id, "observed.quality")[0].value == 0.5
    run_tags = MlflowClient(quick_loop.store).get_run(run_id).data.tags
    # What `energy-loop status` shows beside the loop's figures: every window summed up.
    from registry.core import served_figures

    client = MlflowClient(quick_loop.store)
    summed = served_figures(client, client.get_model_version(quick_loop.model_name, versions[0]))
    assert summed is not None
    seen = summed[0]
    assert (seen.rows, seen.requests, seen.rows_by_batch, seen.labelled_rows, seen.quality) == (8, 1, {8: 8}, 8, 0.5)
    assert seen.energy_j_per_1k is not None and seen.energy_j_per_1k > 0
    assert run_tags["observed.energy_attribution"] == "process-cpu-share" and run_tags["observed.energy_source"]
    assert MlflowClient(quick_loop.store).get_metric_history(run_id, "observed.idle_power_w")[0].value > 0


def test_the_alias_moves_under_load_without_a_failed_request_and_a_broken_version_is_refused(
    quick_loop: QuickLoop, versions: list[str], tmp_path: Path
) -> None:
    client = MlflowClient(quick_loop.store)
    server = _start(quick_loop, tmp_path, "--poll-s", "0.5")
    raw, _ = _raw_rows(4)
    failures: list[str] = []
    answered: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            status, _, body = server.score(raw)
            (answered if status == 200 else failures).append(body.decode()[:200])

    threads = [threading.Thread(target=stream) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        client.set_registered_model_alias(quick_loop.model_name, ALIAS, versions[1])
        deadline = time.monotonic() + 60
        while json.loads(server.ask("/health")[2])["version"] != versions[1]:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        # A version whose files do not load: the server keeps the one it has and says why.
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "MLmodel").write_text("not: [a model\n")
        bad = client.create_model_version(quick_loop.model_name, str(broken))
        client.set_registered_model_alias(quick_loop.model_name, ALIAS, str(bad.version))
        deadline = time.monotonic() + 60
        while (health := json.loads(server.ask("/health")[2]))["last_swap_error"] is None:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        assert health["version"] == versions[1] and health["status"] == "degraded"
        assert health["last_swap_error"].startswith(f"version {bad.version}: ")
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        stop_serve(server)
    assert failures == [] and len(answered) > 10


def test_a_production_miss_that_holds_is_one_breach_and_its_end_one_recovery(
    quick_loop: QuickLoop, versions: list[str], tmp_path: Path
) -> None:
    """Observed accuracy judged against the scenario's production block: wrong labels give a breach (announced,
    tagged on the version), right labels a recovery; the windows between them add no second breach."""
    import yaml

    scenario = tmp_path / "production.yaml"
    block = {"judge": ["quality"], "min_accuracy": 0.5, "windows": 1, "min_rows": 8, "sigmas": 0, "cooldown_s": 0}
    scenario.write_text(yaml.safe_dump({"name": "serve-production", "production": block}))
    server = _start(quick_loop, tmp_path, "--interval-s", "1", "--scenario", str(scenario))
    raw, _ = _raw_rows(8)

    def label(right: bool) -> None:
        status, headers, body = server.score(raw)
        answered = [p["prediction"] for p in json.loads(body)["predictions"]]
        labels = answered if right else [next(c for c in "0123456789" if c != a) for a in answered]
        feedback = {"request_id": headers["x-request-id"], "labels": labels}
        assert server.ask("/feedback", json.dumps(feedback).encode())[0] == 200

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 30
        while text not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)

    try:
        label(right=False)
        wait_for("energy-loop.production.breach")
        label(right=False)  # still missing: no second event
        time.sleep(1.5)
        label(right=True)
        wait_for("energy-loop.production.recovered")
    finally:
        assert stop_serve(server) == 0
    log = server.log.read_text()
    assert log.count("energy-loop.production.breach") == 1 and "Traceback" not in log, log
    assert "quality 0 > limit 0.5" in log, log
    tags = MlflowClient(quick_loop.store).get_model_version(quick_loop.model_name, versions[0]).tags
    breach = json.loads(tags["production.last_breach"])
    assert breach["misses"][0] == {"figure": "quality", "value": 0.0, "limit": 0.5, "uncertainty": 0.0}
    assert json.loads(tags["production.last_recovery"])["misses"] == []


def test_bad_input_is_one_clear_answer_and_the_server_keeps_serving(
    quick_loop: QuickLoop, versions: list[str], tmp_path: Path
) -> None:
    server = _start(quick_loop, tmp_path, "--api-key", "s3cret", "--max-body-mb", "0.01")
    token = {"Authorization": "Bearer s3cret"}
    raw, _ = _raw_rows(3)
    try:
        assert server.score(raw)[0] == 401
        assert server.score(raw, {"Authorization": "Bearer wrong"})[0] == 401
        assert server.ask("/health")[0] == 200  # health checks need no token
        status, _, body = server.ask("/invocations", b"{not json", token)
        assert status == 400 and b"Traceback" not in body
        status, _, body = server.score(raw.drop(columns=[raw.columns[5]]), token)
        assert status == 400 and raw.columns[5].encode() in body, body
        assert server.ask("/invocations", b"x" * 20_000, token)[0] == 413
        for refused in (
            {"request_id": "no-such-id", "labels": ["1"]},
            {"labels": ["1"]},
            [1, 2],
        ):
            assert server.ask("/feedback", json.dumps(refused).encode(), token)[0] == 400
        status, headers, _ = server.score(raw, token)
        assert status == 200
        for labels in (["1", "2"], ["1", "2", "eleven"], [1.5, 2, 3]):  # too few, not a class, not a class
            answer = server.ask(
                "/feedback", json.dumps({"request_id": headers["x-request-id"], "labels": labels}).encode(), token
            )
            assert answer[0] == 400 and b"labels" in answer[2], answer
        assert server.score(raw, token)[0] == 200  # still serving
    finally:
        assert stop_serve(server) == 0


def test_a_reference_that_names_nothing_is_one_line_and_exit_2(quick_loop: QuickLoop) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", f"{quick_loop.model_name}@no-such-alias", "--port", "1"],
        cwd=quick_loop.folder,
        env={**os.environ, "MLFLOW_TRACKING_URI": quick_loop.store},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("energy-loop: error: alias 'no-such-alias' of digits-quick")
