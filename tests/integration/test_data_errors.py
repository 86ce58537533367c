"""Data errors through every entry that starts the loop: one line, nothing registered, no traceback.

A malformed table used to fail inside the Prefect flow, which printed ~40 lines of traceback
before the one-line error (issue 16). The CLI prepares the data before the flow starts (exit 2);
the flow's first task checks the same for every other caller (a direct call, a deployment run
started by `trigger` or by a schedule) and ends the flow run Failed with that line (issue 13).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from flows.energy_loop import energy_loop
from tests.conftest import ROOT, run_loop_cli
from thresholds.energy.request import LoopRequest
from thresholds.errors import INVALID_INPUT, InputError

pytestmark = pytest.mark.integration


def _rows(n: int = 40) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "length": rng.normal(40, 5, n),
        "island": rng.choice(["Biscoe", "Dream"], size=n),
        "species": rng.choice(["A", "B"], size=n),
    }


def _write(frame: pd.DataFrame) -> Callable[[Path], None]:
    return lambda path: frame.to_csv(path, index=False)


def _stray_text(path: Path) -> None:
    frame = pd.DataFrame(_rows())
    frame["age"] = [str(i) for i in range(39)] + ["?"]
    frame.to_csv(path, index=False)


def _many_levels(path: Path) -> None:
    # each of the 100,000 levels twice: a category, not an ID (a column of distinct values is dropped as one)
    n = 200_000
    pd.DataFrame(
        {"x": np.arange(n) % 13, "city": [f"city-{i % 100_000}" for i in range(n)], "y": np.arange(n) % 2}
    ).to_csv(path, index=False)


CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    (
        "missing target column",
        _write(pd.DataFrame(_rows()).drop(columns=["species"])),
        "species",
        "target = 'species': expected one of the columns",
    ),
    ("non-numeric feature", _stray_text, "species", "column 'age' row 39 = '?': expected a number"),
    ("empty file", lambda path: path.write_text(""), "species", "the file is empty"),
    (
        "target missing in every row",
        _write(pd.DataFrame({**_rows(), "species": [None] * 40})),
        "species",
        "missing in all 40 rows",
    ),
    (
        "column entirely missing",
        _write(pd.DataFrame({**_rows(), "depth": [np.nan] * 40})),
        "species",
        "column 'depth' = 'missing in all 40 rows'",
    ),
    (
        "categorical column with 100,000 levels",
        _many_levels,
        "y",
        "column 'city' = '100000 distinct values': expected at most 1000 categories",
    ),
]


def _cli(tmp_path: Path, table: Path, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ("--dataset", str(table), "--target", target, "--model-name", "bad", *extra)
    return run_loop_cli(tmp_path, *args, timeout_s=300)


@pytest.mark.parametrize(("make", "target", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_data_error_is_one_line_before_the_flow(
    tmp_path: Path, make: Callable[[Path], None], target: str, needle: str
) -> None:
    table = tmp_path / "table.csv"
    make(table)
    done = _cli(tmp_path, table, target)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert needle in lines[0] and lines[0].startswith("energy-loop: error: dataset ")
    # Nothing started, so nothing registered: no tracking store and no Prefect home were even created.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "prefect-home").exists()


def test_with_existing_stores_the_early_start_still_registers_nothing(tmp_path: Path) -> None:
    """Where the stores exist, the Prefect server and the tracking store start before the data is checked
    (flows/prefect_api.py): bad input is still the one line, exit 2, and no run or version."""
    from mlflow import MlflowClient

    from flows.prefect_api import LocalApi, nothing_to_create

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # an earlier loop's tracking database
    with pytest.MonkeyPatch.context() as env:  # and Prefect's, as its server leaves it
        env.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
        env.delenv("PREFECT_API_URL", raising=False)
        server = LocalApi()
        server.ready()
        server.stop()
        assert nothing_to_create(uri)  # so the command below starts both before it checks the data
    table = tmp_path / "table.csv"
    _stray_text(table)
    done = _cli(tmp_path, table, "species")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if line.strip()] == [done.stderr.strip()]
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == [] and client.search_registered_models() == []


def test_verbose_shows_the_traceback_behind_the_line(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    _stray_text(table)
    done = _cli(tmp_path, table, "species", "--verbose")
    assert done.returncode == 2 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("energy-loop: error: dataset ")


# Issue 13's cases, through the entries that start the flow without the CLI's checks in front of it.
FLOW_CASES = {
    "column entirely missing": ("species", "column 'depth' = 'missing in all 40 rows'"),
    "target missing in every row": ("species", "missing in all 40 rows"),
    "categorical column with 100,000 levels": (
        "y",
        "column 'city' = '100000 distinct values': expected at most 1000 categories",
    ),
    "non-existent dataset": (None, "expected an existing .csv or .parquet file"),
}
# A SQL source nothing answers (port 9), its password masked in the line (tasks/data/sources.py): called directly only.
UNREACHABLE_SQL = "postgresql://ana:s3cret@127.0.0.1:9/test?table=t"
SQL_CASE = {
    "unreachable SQL source": (
        "label",
        "dataset = 'postgresql://ana:***@127.0.0.1:9/test?table=t': expected a reachable database (",
    )
}


def _dataset(case: str, folder: Path) -> tuple[str, str | None, str]:
    """(dataset, target, what the line says) for one of FLOW_CASES, its table written into `folder`."""
    target, needle = {**FLOW_CASES, **SQL_CASE}[case]
    if case in SQL_CASE:
        return UNREACHABLE_SQL, target, needle
    table = folder / f"{case.replace(' ', '-').replace(',', '')}.csv"
    if case == "non-existent dataset":
        return str(table), target, needle
    make = next(c[1] for c in CASES if c[0] == case)
    make(table)
    return str(table), target, needle


def _one_line(message: str | None, needle: str) -> None:
    assert message is not None and needle in message and "\n" not in message, message


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("case", [*FLOW_CASES, *SQL_CASE])
def test_the_flow_called_directly_ends_failed_with_the_line(
    case: str, tmp_path: Path, mlflow_store: str, capfd: pytest.CaptureFixture[str]
) -> None:
    dataset, target, needle = _dataset(case, tmp_path)
    state = energy_loop(
        LoopRequest(
            scenario="dev-cpu", dataset=dataset, target=target, model_name="bad", work_root=str(tmp_path / "work")
        ),
        return_state=True,
    )
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, needle)
    with pytest.raises(InputError) as raised:  # what a Python caller of the flow gets
        state.result()
    assert str(raised.value) == state.message
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err and "s3cret" not in captured.out + captured.err
    assert not (tmp_path / "mlflow.db").exists()  # no run was opened: nothing logged, nothing registered


@pytest.fixture(scope="module")
def deployed(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Deployments of the loop (`bad-input`: good defaults; `bad-defaults`: a missing dataset; `bad-type`: a
    parameter of the wrong type; `before-the-request`: flat parameters, as before the request object) on a process
    work pool, and a worker polling it, as `prefect deploy` and the compose stack's worker set them up."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL
    from prefect.workers.process import ProcessWorker

    from tests.integration.test_servers import _stop

    tmp = tmp_path_factory.mktemp("deployed")
    defaults = {"scenario": "dev-cpu", "dataset": "digits", "model_name": "deployed", "work_root": str(tmp / "work")}
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    with get_client(sync_client=True) as client:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(
            WorkPoolCreate(name="bad-input", type="process", base_job_template=template), overwrite=True
        )
        flow_id = client.create_flow_from_name("energy-loop")
        ids = {
            name: client.create_deployment(
                flow_id=flow_id,
                name=name,
                entrypoint="flows/energy_loop.py:energy_loop",
                work_pool_name="bad-input",
                parameters=params,
                pull_steps=pull,
            )
            for name, params in (
                ("bad-input", {"request": defaults}),
                ("bad-defaults", {"request": {**defaults, "dataset": str(tmp / "nope.csv")}}),
                ("bad-type", {"request": {**defaults, "samples": "many"}}),
                ("before-the-request", defaults),  # a deployment from before the request object: flat parameters
            )
        }
    url = str(PREFECT_API_URL.value())
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),  # this checkout's code in the flow run's process, wherever it starts
    }
    log = tmp / "worker.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "bad-input", "--type", "process"]
        worker = subprocess.Popen(argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"url": url, "tmp": tmp, "log": log, "ids": ids}
    finally:
        _stop(worker)


def _no_trace_of_a_run(deployed: dict[str, Any]) -> None:
    assert "Traceback" not in deployed["log"].read_text()  # the worker's output holds the flow runs' console
    assert not (deployed["tmp"] / "mlflow.db").exists()  # no run was opened: nothing logged, nothing registered


@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_a_triggered_deployment_run_ends_failed_with_the_line_and_trigger_exits_2(
    case: str,
    deployed: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    dataset, target, needle = _dataset(case, tmp_path)
    params = [f"dataset={dataset}", *([f"target={target}"] if target else [])]
    argv = [
        "trigger",
        "--deployment",
        "energy-loop/bad-input",
        "--wait",
        "--poll-s",
        "0.5",
        *(x for p in params for x in ("--param", p)),
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("energy-loop: error: ") and needle in errors[0], captured.err
    assert f"{INVALID_INPUT}: " in captured.out  # the state as it streamed
    _no_trace_of_a_run(deployed)


def _final_state(run_id: Any, deployed: dict[str, Any]) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 180
        while (state := client.read_flow_run(run_id).state) is None or not state.is_final():
            assert time.monotonic() < deadline, (
                f"still {state.name if state else None}:\n{deployed['log'].read_text()[-3000:]}"
            )
            time.sleep(0.5)
    return state


def test_a_scheduled_run_with_bad_defaults_ends_failed_with_the_line(deployed: dict[str, Any]) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployed["ids"]["bad-defaults"])  # what the scheduler creates
    state = _final_state(run.id, deployed)
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, "dataset = '")
    _one_line(state.message, "nope.csv': expected an existing .csv or .parquet file")
    _no_trace_of_a_run(deployed)


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        # named as typed: the parameter's key
        ("samples=3", "samples = 3: expected an integer >= 20"),
        ("meter=wattmeter", "meter = 'wattmeter': expected one of"),
        ("image_size=0x0", "image_size = '0x0': expected HxW in pixels"),
        ("image_cache=disk", "image_cache = 'disk': expected one of memory, stream, auto"),
        ("task_type=ranking", "task_type = 'ranking': expected one of auto, classification, regression"),
        ("parallel=0", "parallel = 0: expected auto or an integer from 1 to 64"),
        ("sample=3000", "--param = 'sample=3000': expected K=V with K one of scenario, dataset"),
    ],
)
def test_trigger_refuses_what_it_can_check_before_a_run_is_created(
    param: str,
    needle: str,
    deployed: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prefect import get_client

    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    with get_client(sync_client=True) as client:
        before = len(client.read_flow_runs())
        code = main(["trigger", "--deployment", "energy-loop/bad-input", "--param", param])
        after = len(client.read_flow_runs())
    err = capsys.readouterr().err.strip()
    assert code == 2 and after == before, err
    assert len(err.splitlines()) == 1 and needle in err


def test_a_scenario_only_the_worker_could_have_is_left_to_its_run(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    assert (
        main(["trigger", "--deployment", "energy-loop/bad-input", "--param", "scenario=worker-only/nothing.yaml"]) == 0
    )
    run_id = re.search(r"started flow run \S+ \(([0-9a-f-]+)\)", capsys.readouterr().out)
    assert run_id is not None
    state = _final_state(run_id.group(1), deployed)  # not in this checkout either: its first task says so
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, "scenario = 'worker-only/nothing.yaml': expected an existing YAML file")
    _no_trace_of_a_run(deployed)


def test_trigger_checks_a_scenario_file_this_checkout_has(
    deployed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntargets:\n  max_accuracy_drop_pt: -3\n")
    assert main(["trigger", "--deployment", "energy-loop/bad-input", "--param", f"scenario={bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "targets.max_accuracy_drop_pt = -3" in err


def test_a_scheduled_run_with_a_parameter_of_the_wrong_type_ends_failed_with_the_line(
    deployed: dict[str, Any],
) -> None:
    """Prefect's own parameter validation does not get in first: the run ends as every other bad input does."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployed["ids"]["bad-type"])
    state = _final_state(run.id, deployed)
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, "samples = 'many': expected an integer >= 20")
    _no_trace_of_a_run(deployed)


def test_trigger_merges_its_overrides_onto_the_deployments_request(
    deployed: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect import get_client

    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    missing = str(tmp_path / "missing.csv")
    assert main(["trigger", "--deployment", "energy-loop/bad-input", "--param", f"dataset={missing}"]) == 0
    run_id = re.search(r"started flow run \S+ \(([0-9a-f-]+)\)", capsys.readouterr().out)
    assert run_id is not None
    with get_client(sync_client=True) as client:
        sent = client.read_flow_run(run_id.group(1)).parameters
    # The deployment's own options, the override over them, sent whole (a server merges top-level keys only).
    assert sent == {"request": {"scenario": "dev-cpu", "dataset": missing, "model_name": "deployed",
                                "work_root": str(deployed["tmp"] / "work")}}  # fmt: skip
    state = _final_state(run_id.group(1), deployed)  # the worker's first task: no such file
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, "expected an existing .csv or .parquet file")


def test_trigger_says_how_to_update_a_deployment_from_before_the_request(
    deployed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect import get_client

    monkeypatch.setenv("PREFECT_API_URL", deployed["url"])
    with get_client(sync_client=True) as client:
        before = len(client.read_flow_runs())
        code = main(["trigger", "--deployment", "energy-loop/before-the-request", "--param", "samples=2000"])
        after = len(client.read_flow_runs())
    err = capsys.readouterr().err.strip()
    assert code == 2 and after == before and len(err.splitlines()) == 1, err
    assert "expected parameters {request: {...}}" in err and "prefect deploy --all" in err


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        ({"scenario": "dev-cpu", "dataset": "digits", "samples": "many"}, "samples = 'many': expected an integer"),
        ({"scenario": "dev-cpu", "dataset": "digits", "sample": 3000}, "sample = 3000: expected one of the energy"),
        ({"scenario": "dev-cpu"}, "dataset = None: expected a value (this option is required)"),
        (["dev-cpu", "digits"], "request = ['dev-cpu', 'digits']: expected a mapping of the energy loop's options"),
        ({"scenario": "dev-cpu", "dataset": "digits", "image_size": "big"}, "image_size = 'big': expected HxW"),
    ],
    ids=["wrong type", "unknown key", "missing key", "not a mapping", "bad format"],
)
def test_the_flow_called_with_a_malformed_request_ends_failed_with_the_line(
    request_: object, needle: str, tmp_path: Path, mlflow_store: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A mapping, as a deployment, an event or a Python caller passes it: the first task refuses it, in one line."""
    state = energy_loop(request_, return_state=True)  # type: ignore[arg-type]
    assert state.is_failed() and state.name == INVALID_INPUT
    _one_line(state.message, needle)
    with pytest.raises(InputError):
        state.result()
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "mlflow.db").exists()


def test_ctrl_c_stops_trigger_waiting_in_one_line_and_says_how_to_stop_the_run(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    import signal

    env = {**os.environ, "PREFECT_API_URL": deployed["url"]}
    argv = [sys.executable, "-m", "flows.cli", "trigger", "--deployment", "energy-loop/bad-input", "--wait"]
    argv += ["--param", f"dataset={tmp_path / 'missing.csv'}", "--poll-s", "0.2"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    started = proc.stdout.readline()
    run_id = re.search(r"started flow run \S+ \(([0-9a-f-]+)\)", started)
    assert run_id is not None, started + proc.communicate(timeout=60)[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out + err, err
    assert err.strip().splitlines() == [
        f"energy-loop: interrupted (Ctrl-C): stopped waiting; flow run {started.split()[3]} goes on "
        f"(stop it: prefect flow-run cancel {run_id.group(1)})"
    ]
    state = _final_state(run_id.group(1), deployed)  # it went on without the client, to its own end
    assert state.name == INVALID_INPUT
