"""`energy-loop serve` against its goals: what measuring costs, swaps, observed energy, throughput, a soak.

    python benchmarks/serving.py [--soak-s 300] [--quick] [--scenario PATH] [--dataset digits]

Sets up its own store first: a short loop (`energy-loop run`, a small built-in scenario unless `--scenario`)
into an MLflow store in a temporary folder, whose versions it then serves as subprocesses on loopback, asked by
client threads of this process (http.client, one keep-alive connection per thread and server):

  telemetry_overhead          /invocations latency with `--telemetry on` vs `off`, two servers of the same version
                              asked in ABBA order by one thread, at batch 1 and 64: the worst relative overhead of
                              the medians (goal <= 0.02)
  swap_failed_requests        a server following `NAME@ALIAS` (`--poll-s 0.5`) under 4 client threads while the
                              alias moves between two versions; failed requests (goal 0), each swap seen in /health
                              and /metrics
  observed_vs_loop            J per 1k the server observes (`observed.energy_j_per_1k`, the windows wholly inside
                              the traffic) at the batch size the loop measured the version at, over the loop's
                              `inference_energy_j_per_1k` (goal 0.85..1.15): Parquet bodies (the headline), JSON beside
  throughput_vs_mlflow_serve  requests/s at batch 1, energy-loop serve over `mlflow models serve` of the same version,
                              in interleaved ABBA bursts from the same 4 client threads (goal >= 1.0)
  soak_errors, rss_growth_pct 16 client threads for `--soak-s` with feedback for a share of the answers: failed
                              requests (goal 0) and the server's VmRSS, first minute to last (goal <= 5 %)

Energy on a machine without RAPL is estimated (the JSON says which meter). A table, then ONE JSON line (also kept
as benchmarks/results/serving-<stamp>.json). `--quick` is a smoke run of the script (a tiny soak, few requests):
its figures are not results. Run it alone on the machine; the default run takes about 13 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._http_load import JSON_TYPE, Bodies, Client, Load, Server, quartiles  # noqa: E402  (the root is on the path now)
from benchmarks.results import emit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWAP_ALIAS = "bench-swap"
CLASSIFIERS = ("digits", "iris", "wine", "breast_cancer", "mnist1d")  # built-in: the soak's feedback posts class labels
# A loop of a few minutes on 2 cores that registers at least two versions, measured at one batch size.
SCENARIO_YAML = """\
name: serving-bench
description: A short loop whose versions the serving benchmark serves.
targets:
  max_accuracy_drop_pt: 10.0
  max_train_energy_vs_baseline: 0.9
budget:
  max_iterations: 3
training:
  max_epochs: 40
  patience: 2
  batch_size: 128
  fine_tune_epochs: 2
measurement:
  meter: auto
  inference_batch_size: 256
  min_window_s: 0.5
  eval_subset: 120
"""


class BadInput(ValueError):
    """What the loop refused, in its own one line."""


class Plan(NamedTuple):
    """How much of each part to run (the default run, or `--quick`'s smoke run)."""

    overhead_rounds: int  # ABBA blocks per batch size
    swap_moves: int
    observed_windows: int  # reporting windows per body type
    interval_s: float
    throughput_blocks: int  # ABBA blocks of bursts
    burst_s: float
    soak_s: float


DEFAULT = Plan(overhead_rounds=300, swap_moves=6, observed_windows=6, interval_s=10.0, throughput_blocks=8,
               burst_s=3.0, soak_s=300.0)  # fmt: skip
QUICK = Plan(overhead_rounds=20, swap_moves=3, observed_windows=2, interval_s=2.0, throughput_blocks=2,
             burst_s=1.0, soak_s=20.0)  # fmt: skip


class Setup(NamedTuple):
    """The store the benchmark serves from and what the loop recorded for the version it serves."""

    folder: Path
    env: dict[str, str]
    name: str
    version: str  # served in every part but the swap
    others: list[str]  # the other versions, newest last (the swap moves to one of them)
    batch_sizes: list[int]  # the version's measured batch sizes
    loop_j_per_1k: float | None
    energy_source: str


def set_up(scenario: str | None, dataset: str, folder: Path) -> Setup:
    """Run a short loop into a store in `folder` (its console output in loop.log); the versions to serve."""
    from mlflow import MlflowClient

    from registry import keys
    from thresholds.energy import keys as energy_keys

    if scenario is None:
        scenario = str(folder / "scenario.yaml")
        Path(scenario).write_text(SCENARIO_YAML, encoding="utf-8")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # `mlflow models serve --env-manager local` execs `uvicorn` from PATH: this interpreter's environment first.
    bin_path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": path, "PATH": bin_path}  # fmt: skip
    name = "serving-bench"
    argv = [sys.executable, "-m", "flows.cli", "run", "--scenario", scenario, "--dataset", dataset,
            "--model-name", name, "--parallel", "1"]  # fmt: skip
    with (folder / "loop.log").open("w") as out:
        code = subprocess.run(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    os.environ["MLFLOW_TRACKING_URI"] = store  # this process's MLflow calls (models:/ URIs) read the same store
    if code == 2:  # bad input (a scenario that does not load): the command said why in one line
        raise BadInput(((folder / "loop.log").read_text().strip().splitlines() or ["energy-loop run exited 2"])[-1])
    mc = MlflowClient(store)
    found = sorted(mc.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    if not found:
        raise RuntimeError(f"the loop registered no version (exit {code}): {(folder / 'loop.log').read_text()[-2000:]}")
    try:
        chosen = mc.get_model_version_by_alias(name, "champion")
    except Exception:  # no champion (the loop did not pass): its last version
        chosen = found[-1]
    others = [v for v in found if v.version != chosen.version]
    if not others:  # one version: the same model registered again gives the swap a second one
        others = [mc.create_model_version(name, str(chosen.source), chosen.run_id, tags=dict(chosen.tags))]
    tags, run = dict(chosen.tags), mc.get_run(str(chosen.run_id))
    sizes_text = tags.get(energy_keys.SERVING_BATCH_SIZES) or run.data.tags.get(energy_keys.SERVING_BATCH_SIZES, "")
    loop_j = run.data.metrics.get(keys.INFERENCE_ENERGY_J_PER_1K)
    return Setup(
        folder, env, name, str(chosen.version), [str(v.version) for v in others],
        [int(b) for b in sizes_text.split(",") if b.strip()] or [1], loop_j, tags.get(keys.ENERGY_SOURCE, ""),
    )  # fmt: skip


def start(label: str, argv: list[str], setup: Setup) -> Server:
    return Server(label, argv, setup.folder, setup.env)


def served(model: str, *extra: str) -> list[str]:
    """The command line of `energy-loop serve` (without `--port`)."""
    return [sys.executable, "-m", "flows.cli", "serve", model, *extra]


def telemetry_overhead(setup: Setup, bodies: Bodies, plan: Plan) -> dict[str, Any]:
    """Latency with telemetry on and off, ABBA over two servers of one version, at batch 1 and 64."""
    model = f"{setup.name}/{setup.version}"
    on = start("telemetry-on", served(model, "--interval-s", str(plan.interval_s)), setup)
    try:
        off = start("telemetry-off", served(model, "--telemetry", "off"), setup)
    except Exception:
        on.stop()
        raise
    a, b = Client(on.port), Client(off.port)

    def timed(client: Client, body: bytes) -> float:
        started = time.perf_counter()
        status, _, answer = client.call("POST", "/invocations", body)
        if status != 200:
            raise RuntimeError(f"telemetry overhead: answer {status}: {answer[:300]!r}")
        return time.perf_counter() - started

    out: dict[str, Any] = {}
    try:
        for batch in (1, 64):
            body = bodies.json(batch)
            for _ in range(10):  # warm-up: first calls, connection set-up
                timed(a, body), timed(b, body)
            on_s, off_s, ratios = [], [], []
            for _ in range(plan.overhead_rounds):
                a1, b1, b2, a2 = timed(a, body), timed(b, body), timed(b, body), timed(a, body)
                on_s += [a1, a2]
                off_s += [b1, b2]
                ratios.append((a1 + a2) / (b1 + b2))
            (on_q1, on_med, on_q3), (off_q1, off_med, off_q3) = quartiles(on_s), quartiles(off_s)
            r_q1, r_med, r_q3 = quartiles(ratios)
            out[f"batch_{batch}"] = {
                "requests": 4 * plan.overhead_rounds,
                "median_on_ms": round(on_med * 1000, 4),
                "median_off_ms": round(off_med * 1000, 4),
                "iqr_on_ms": [round(on_q1 * 1000, 4), round(on_q3 * 1000, 4)],
                "iqr_off_ms": [round(off_q1 * 1000, 4), round(off_q3 * 1000, 4)],
                "relative_overhead": round(on_med / off_med - 1, 4),
                "paired_block_ratio_median": round(r_med, 4),  # ABBA block: (A1 + A2) / (B1 + B2)
                "paired_block_ratio_iqr": [round(r_q1, 4), round(r_q3, 4)],
            }
    finally:
        a.close()
        b.close()
        on.stop()
        off.stop()
    out["value"] = max(v["relative_overhead"] for v in out.values())
    return out


def swap_failed_requests(setup: Setup, bodies: Bodies, plan: Plan) -> dict[str, Any]:
    """4 client threads on a server following an alias that moves between two versions: failed requests, and
    each move seen in /health, /metrics and (where the two versions answer differently) in the answers."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.pyfunc import scoring_server

    mc = MlflowClient(setup.env["MLFLOW_TRACKING_URI"])
    mc.set_registered_model_alias(setup.name, SWAP_ALIAS, setup.version)
    probe_rows = bodies.rows(64)
    expected = {}
    for v in (setup.version, *reversed(setup.others)):
        out = io.StringIO()
        uri = f"models:/{setup.name}/{v}"
        scoring_server.predictions_to_json(mlflow.pyfunc.load_model(uri).predict(probe_rows), out)
        expected[v] = json.loads(out.getvalue())
    # A second version that answers differently, where there is one: then the answers show each swap too.
    other = next((v for v in reversed(setup.others) if expected[v] != expected[setup.version]), setup.others[-1])
    distinct = expected[setup.version] != expected[other]
    server = start("swap", served(f"{setup.name}@{SWAP_ALIAS}", "--poll-s", "0.5",
                                   "--interval-s", str(plan.interval_s)), setup)  # fmt: skip
    clients = [Client(server.port) for _ in range(4)]
    body = bodies.json(4)

    def work(i: int) -> tuple[int, bytes]:
        status, _, answer = clients[i].call("POST", "/invocations", body)
        return status, answer

    moves, probe = [], Client(server.port)
    try:
        with Load(4, work) as load:
            time.sleep(1.0)
            target = setup.version
            for _ in range(plan.swap_moves):
                target = other if target == setup.version else setup.version
                started = time.monotonic()
                mc.set_registered_model_alias(setup.name, SWAP_ALIAS, target)
                while server.health()["version"] != target and time.monotonic() - started < 60:
                    time.sleep(0.05)
                seen_s = time.monotonic() - started
                metrics = probe.call("GET", "/metrics")[2].decode()
                info = [line for line in metrics.splitlines() if line.startswith("energy_loop_serving_model_info{")]
                status, _, answer = probe.call("POST", "/invocations", bodies.json(64))
                moves.append({
                    "to": target,
                    "health": server.health()["version"] == target,
                    "metrics": len(info) == 1 and f'version="{target}"' in info[0],
                    "answer": (status == 200 and json.loads(answer) == expected[target]) if distinct else None,
                    "seen_after_s": round(seen_s, 2),
                })  # fmt: skip
                time.sleep(1.0)  # the new version serves a while before the next move
    finally:
        probe.close()
        for c in clients:
            c.close()
        server.stop()
        mc.delete_registered_model_alias(setup.name, SWAP_ALIAS)
    switched = all(m["health"] and m["metrics"] and m["answer"] is not False for m in moves)
    return {
        "value": load.failed,
        "requests": load.ok + load.failed,
        "client_threads": 4,
        "moves": len(moves),
        "versions": [setup.version, other],
        "versions_answer_differently": distinct,
        "all_switched": switched,
        "max_seen_after_s": max(m["seen_after_s"] for m in moves),
        "resent_on_closed_connection": sum(c.resent for c in clients),
        "errors": load.errors,
        "each_move": moves,
    }


def observed_vs_loop(setup: Setup, bodies: Bodies, plan: Plan) -> dict[str, Any]:
    """J per 1k the server observes at the loop's batch size, over the loop's figure: Parquet and JSON bodies, each on
    its own server, from the windows wholly inside its traffic (`observed.*` on the version's run)."""
    from mlflow import MlflowClient

    from registry.keys import OBSERVED_PREFIX

    mc = MlflowClient(setup.env["MLFLOW_TRACKING_URI"])
    run_id = str(mc.get_model_version(setup.name, setup.version).run_id)
    out: dict[str, Any] = {"batch_sizes": setup.batch_sizes, "loop_j_per_1k": setup.loop_j_per_1k}
    for kind, content_type in (("parquet", bodies.parquet_type), ("json", JSON_TYPE)):
        payloads = [bodies.parquet(b) if kind == "parquet" else bodies.json(b) for b in setup.batch_sizes]
        server = start(f"observed-{kind}", served(f"{setup.name}/{setup.version}",
                                                   "--interval-s", str(plan.interval_s)), setup)  # fmt: skip
        client, requests = Client(server.port), 0
        try:
            started_ms = time.time() * 1000
            # One interval more than the windows asked for: that many windows lie wholly inside the traffic.
            deadline = time.monotonic() + plan.interval_s * (plan.observed_windows + 1) + 0.5
            while time.monotonic() < deadline:  # one client, back to back (sizes in turn), as the loop calls
                payload = payloads[requests % len(payloads)]
                status, _, answer = client.call("POST", "/invocations", payload, content_type)
                if status != 200:
                    raise RuntimeError(f"observed ({kind}): answer {status}: {answer[:300]!r}")
                requests += 1
            ended_ms = time.time() * 1000
        finally:
            client.close()
            server.stop()
        logged = {  # WindowFigures fields -> {(timestamp, step): value}; the MLflow key is OBSERVED_PREFIX + field
            k: {(m.timestamp, m.step): m.value for m in mc.get_metric_history(run_id, OBSERVED_PREFIX + k)}
            for k in ("energy_j", "rows", "duration_s", "energy_j_per_1k", "latency_p50_ms")
        }
        inside = [
            key for key in logged["energy_j_per_1k"]
            # A window ends when it is logged (a few ms before its timestamp): wholly inside the traffic.
            if key[0] - logged["duration_s"].get(key, 1e9) * 1000 >= started_ms and key[0] <= ended_ms + 250
        ]  # fmt: skip
        per_window = [logged["energy_j_per_1k"][k] for k in inside]
        energy_j, rows = sum(logged["energy_j"][k] for k in inside), sum(logged["rows"][k] for k in inside)
        observed = energy_j / rows * 1000 if rows else None
        out[kind] = {
            "requests": requests,
            "windows": len(inside),
            "rows": int(rows),
            "observed_j_per_1k": None if observed is None else round(observed, 5),
            "window_j_per_1k_mean": round(statistics.fmean(per_window), 5) if per_window else None,
            "window_j_per_1k_sem": round(statistics.stdev(per_window) / len(per_window) ** 0.5, 5)
            if len(per_window) > 1
            else None,
            "ratio": None if observed is None or not setup.loop_j_per_1k else round(observed / setup.loop_j_per_1k, 4),
            "server_latency_p50_ms": round(statistics.median(logged["latency_p50_ms"][k] for k in inside), 3)
            if inside
            else None,
        }
    out["where_the_time_goes"] = time_per_batch(setup, bodies, mc.get_run(run_id).data.metrics)
    tags = mc.get_run(run_id).data.tags
    out["observed_energy_source"] = tags.get(OBSERVED_PREFIX + "energy_source", "")
    out["observed_energy_estimated"] = tags.get(OBSERVED_PREFIX + "energy_estimated", "") == "true"
    out["value"] = out["parquet"]["ratio"]
    return out


def time_per_batch(setup: Setup, bodies: Bodies, run_metrics: dict[str, float]) -> dict[str, Any]:
    """One batch at the loop's first batch size: the model alone as the loop timed it (on prepared tensors), and the
    version's pyfunc (raw rows: preprocessing, model, answer frame) in this process, ms; the rest of a server's time
    per request is HTTP and parsing the body."""
    import mlflow

    from registry.keys import LATENCY_MS_PER_BATCH

    model = mlflow.pyfunc.load_model(f"models:/{setup.name}/{setup.version}")
    rows = bodies.rows(setup.batch_sizes[0])
    model.predict(rows)  # warm-up
    calls_s = []
    for _ in range(20):
        started = time.perf_counter()
        model.predict(rows)
        calls_s.append(time.perf_counter() - started)
    return {
        "batch_size": setup.batch_sizes[0],
        "loop_model_ms": round(run_metrics.get(LATENCY_MS_PER_BATCH) or 0.0, 4) or None,
        "pyfunc_in_process_ms": round(statistics.median(calls_s) * 1000, 3),
    }


def throughput_vs_mlflow_serve(setup: Setup, bodies: Bodies, plan: Plan) -> dict[str, Any]:
    """Requests/s at batch 1: energy-loop serve (telemetry on) over `mlflow models serve` of the same version, in
    ABBA bursts from the same 4 client threads (each with a connection to both)."""
    model = f"{setup.name}/{setup.version}"
    ours = start("energy-loop-serve", served(model, "--interval-s", str(plan.interval_s)), setup)
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    try:
        mlflow_argv = [mlflow_cli, "models", "serve", "-m", f"models:/{model}", "--env-manager", "local",
                       "-h", "127.0.0.1", "-w", "1"]  # fmt: skip
        theirs = start("mlflow-models-serve", mlflow_argv, setup)
    except Exception:
        ours.stop()
        raise
    servers = {"energy_loop": ours, "mlflow": theirs}
    clients = {label: [Client(s.port) for _ in range(4)] for label, s in servers.items()}
    body = bodies.json(1)

    def burst(label: str, seconds: float) -> tuple[int, int, float]:
        """(answered, failed, wall s) of a burst of the 4 threads on one server."""
        counts = [[0, 0] for _ in range(4)]
        deadline = time.monotonic() + seconds

        def send(i: int) -> None:
            while time.monotonic() < deadline:
                try:
                    ok = clients[label][i].call("POST", "/invocations", body)[0] == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                counts[i][0 if ok else 1] += 1

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(c[0] for c in counts), sum(c[1] for c in counts), time.monotonic() - started

    rates: dict[str, list[float]] = {"energy_loop": [], "mlflow": []}
    totals = {label: [0, 0, 0.0] for label in rates}
    try:
        for label in rates:
            burst(label, 1.0)  # warm-up
        for _ in range(plan.throughput_blocks):
            for label in ("energy_loop", "mlflow", "mlflow", "energy_loop"):
                ok, failed, wall_s = burst(label, plan.burst_s)
                rates[label].append(ok / wall_s)
                totals[label] = [totals[label][0] + ok, totals[label][1] + failed, totals[label][2] + wall_s]
    finally:
        for group in clients.values():
            for c in group:
                c.close()
        ours.stop()
        theirs.stop()
    ours_rps, theirs_rps = rates["energy_loop"], rates["mlflow"]
    pairs = range(0, len(ours_rps), 2)  # the two bursts of each ABBA block
    per_block = [(ours_rps[i] + ours_rps[i + 1]) / (theirs_rps[i] + theirs_rps[i + 1]) for i in pairs]
    q1, med, q3 = quartiles(per_block)
    rps = {label: totals[label][0] / totals[label][2] for label in totals}
    return {
        "value": round(rps["energy_loop"] / rps["mlflow"], 4),
        "energy_loop_rps": round(rps["energy_loop"], 2),
        "mlflow_rps": round(rps["mlflow"], 2),
        "requests": {label: int(totals[label][0] + totals[label][1]) for label in totals},
        "failed": {label: int(totals[label][1]) for label in totals},
        "block_ratio_median": round(med, 4),
        "block_ratio_iqr": [round(q1, 4), round(q3, 4)],
        "client_threads": 4,
        "bursts_s": plan.burst_s,
        "server_workers": "energy-loop --workers 1 (threads); mlflow -w 1 (uvicorn processes)",
    }


def soak(setup: Setup, bodies: Bodies, plan: Plan) -> dict[str, Any]:
    """16 client threads for `soak_s` at batch 1, 8 and 64 in turn, feedback for one answer in four: failed
    requests, and the server's resident memory over the first and the last minute."""
    server = start("soak", served(f"{setup.name}/{setup.version}", "--interval-s", str(plan.interval_s)), setup)
    batches, threads = (1, 8, 64), 16
    payloads = {b: (bodies.json(b), json.dumps(bodies.labels_for(b))) for b in batches}
    clients = [Client(server.port) for _ in range(threads)]
    sent, feedback = [0] * threads, [0] * threads

    def work(i: int) -> tuple[int, bytes]:
        n, sent[i] = sent[i], sent[i] + 1
        body, labels = payloads[batches[n % len(batches)]]
        status, headers, answer = clients[i].call("POST", "/invocations", body)
        if status != 200 or n % 4:
            return status, answer
        feedback[i] += 1
        note = f'{{"request_id": {json.dumps(headers.get("x-request-id"))}, "labels": {labels}}}'.encode()
        status, _, answer = clients[i].call("POST", "/feedback", note)
        return status, answer

    samples: list[tuple[float, int]] = []
    try:
        with Load(threads, work) as load:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < plan.soak_s:
                rss = server.rss_kib()
                if rss is not None:
                    samples.append((elapsed, rss))
                time.sleep(min(2.0, plan.soak_s / 20))
    finally:
        for c in clients:
            c.close()
        code = server.stop()
    span_s = min(60.0, plan.soak_s / 4)  # the first and the last minute (a quarter of a shorter soak)
    first = [r for t, r in samples if t <= span_s]
    last = [r for t, r in samples if t >= plan.soak_s - span_s]
    first_kib, last_kib = statistics.median(first), statistics.median(last)
    return {
        "soak_errors": load.failed,
        "rss_growth_pct": round((last_kib / first_kib - 1) * 100, 2),
        "soak_s": plan.soak_s,
        "client_threads": threads,
        "calls": load.ok + load.failed,  # /invocations, with the /feedback that followed one in four
        "feedback_posted": sum(feedback),
        "rss_first_mib": round(first_kib / 1024, 1),
        "rss_last_mib": round(last_kib / 1024, 1),
        "rss_max_mib": round(max(r for _, r in samples) / 1024, 1),
        "rss_span_s": span_s,
        "resent_on_closed_connection": sum(c.resent for c in clients),
        "server_exit_code": code,
        "errors": load.errors,
    }


GOALS = {  # the goals, per headline key
    "telemetry_overhead": lambda v: v <= 0.02,
    "swap_failed_requests": lambda v: v == 0,
    "observed_vs_loop": lambda v: 0.85 <= v <= 1.15,
    "throughput_vs_mlflow_serve": lambda v: v >= 1.0,
    "soak_errors": lambda v: v == 0,
    "rss_growth_pct": lambda v: v <= 5.0,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak-s", type=float, default=None, help="seconds of the soak (default 300; --quick 20)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of the script: its figures are not results")
    parser.add_argument("--scenario", default=None, help="the loop's scenario (default: a short built-in one)")
    parser.add_argument("--dataset", default="digits", choices=CLASSIFIERS, help="a built-in dataset (default digits)")
    args = parser.parse_args()
    plan = QUICK if args.quick else DEFAULT
    if args.soak_s is not None:
        if not args.soak_s >= 4:
            print(f"benchmarks/serving.py: error: --soak-s = {args.soak_s}: expected seconds >= 4", file=sys.stderr)
            return 2
        plan = plan._replace(soak_s=args.soak_s)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # SIGTERM (a `timeout`, a CI job stopped) unwinds like Ctrl-C: every part's `finally` stops its servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        folder = Path(tmp)
        print(f"setting up: a short loop into {folder} ...", file=sys.stderr, flush=True)
        try:
            setup = set_up(args.scenario, args.dataset, folder)
        except BadInput as exc:
            print(f"benchmarks/serving.py: error: {exc}", file=sys.stderr)
            return 2
        setup_s = time.perf_counter() - started
        bodies = Bodies(args.dataset)
        parts: dict[str, Any] = {}
        for key, part in (("telemetry_overhead", telemetry_overhead), ("swap_failed_requests", swap_failed_requests),
                          ("observed_vs_loop", observed_vs_loop),
                          ("throughput_vs_mlflow_serve", throughput_vs_mlflow_serve), ("soak", soak)):  # fmt: skip
            print(f"{key} ...", file=sys.stderr, flush=True)
            part_started = time.perf_counter()
            parts[key] = part(setup, bodies, plan)
            parts[key]["wall_s"] = round(time.perf_counter() - part_started, 1)
    soaked = parts.pop("soak")
    figures: dict[str, Any] = {
        "quick": args.quick,  # true: a smoke run of the script, not a result
        **{key: figures_of["value"] for key, figures_of in parts.items()},
        "soak_errors": soaked["soak_errors"],
        "rss_growth_pct": soaked["rss_growth_pct"],
        "energy_source": parts["observed_vs_loop"]["observed_energy_source"] or setup.energy_source,
        "energy_estimated": parts["observed_vs_loop"]["observed_energy_estimated"],
        "loop_energy_source": setup.energy_source,
        "model": setup.name,
        "version": setup.version,
        "setup_s": round(setup_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "under_load": "other processes may share this machine: label figures with its load",
        "details": {**parts, "soak": soaked},
    }
    figures["goals_met"] = {key: figures[key] is not None and bool(goal(figures[key])) for key, goal in GOALS.items()}
    print_table(figures)
    emit(figures)
    return 0


def print_table(figures: dict[str, Any]) -> None:
    d = figures["details"]
    if figures["quick"]:
        print("QUICK RUN: a smoke test of the script, few requests and a tiny soak; these figures are not results.\n")
    print(f"energy-loop serve, {figures['model']} version {figures['version']}; energy {figures['energy_source']}"
          f" ({'estimated' if figures['energy_estimated'] else 'measured'})\n")  # fmt: skip
    print(f"{'goal':30s} {'value':>10s}  {'met':5s} figures behind it")
    o, gap = d["telemetry_overhead"], d["observed_vs_loop"]["where_the_time_goes"]
    rows = [
        ("telemetry_overhead (<= 0.02)", "telemetry_overhead", "; ".join(
            f"b{b}: on {o[f'batch_{b}']['median_on_ms']} ms / off {o[f'batch_{b}']['median_off_ms']} ms "
            f"({o[f'batch_{b}']['requests']} req)" for b in (1, 64))),
        ("swap_failed_requests (0)", "swap_failed_requests",
         f"{d['swap_failed_requests']['requests']} req, {d['swap_failed_requests']['moves']} moves, all switched: "
         f"{d['swap_failed_requests']['all_switched']}"),
        ("observed_vs_loop (0.85..1.15)", "observed_vs_loop",
         f"parquet {d['observed_vs_loop']['parquet']['observed_j_per_1k']} J/1k, json "
         f"{d['observed_vs_loop']['json']['observed_j_per_1k']} (ratio {d['observed_vs_loop']['json']['ratio']}), "
         f"loop {d['observed_vs_loop']['loop_j_per_1k']} at batch {d['observed_vs_loop']['batch_sizes']}; per "
         f"batch: loop's model {gap['loop_model_ms']} ms, pyfunc {gap['pyfunc_in_process_ms']} ms, server p50 "
         f"{d['observed_vs_loop']['parquet']['server_latency_p50_ms']} ms"),
        ("throughput_vs_mlflow_serve (>= 1)", "throughput_vs_mlflow_serve",
         f"{d['throughput_vs_mlflow_serve']['energy_loop_rps']} vs {d['throughput_vs_mlflow_serve']['mlflow_rps']}"
         f" req/s at batch 1"),
        ("soak_errors (0)", "soak_errors", f"{d['soak']['calls']} calls in {d['soak']['soak_s']:g} s"),
        ("rss_growth_pct (<= 5)", "rss_growth_pct", f"{d['soak']['rss_first_mib']} -> {d['soak']['rss_last_mib']} MiB"),
    ]  # fmt: skip
    for label, key, behind in rows:
        print(f"{label:30s} {figures[key]!s:>10s}  {str(figures['goals_met'][key]):5s} {behind}")
    print(f"\nwall {figures['wall_s']} s (setup {figures['setup_s']} s); {figures['under_load']}")


if __name__ == "__main__":
    sys.exit(main())
