"""CLI input errors exit 2 with one line, before any run is started."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import flows.energy_loop  # at collection: Prefect's log handler must not bind to one test's captured stream
from flows.cli import main
from thresholds.energy.request import LoopRequest


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--scenario", "nope.yaml", "--dataset", "digits"], "scenario = 'nope.yaml'"),
        (["run", "--scenario", "dev-cpu", "--dataset", "imagenet"], "dataset = 'imagenet'"),
        (["run", "--scenario", "dev-cpu", "--dataset", "missing.csv"], "existing .csv"),
        (["run", "--scenario", "dev-cpu", "--dataset", "digits", "--samples", "3"], "--samples = 3"),
        (["run", "--scenario", "dev-cpu", "--dataset", "digits", "--parallel", "many"], "--parallel = 'many'"),
        (
            ["run", "--scenario", "dev-cpu", "--dataset", "digits", "--parallel", "0"],
            "--parallel = '0': expected auto or an integer",
        ),
        (["validate", "nope.yaml"], "expected an existing YAML file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], mlflow_store: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1
    assert not Path("mlflow.db").exists()  # nothing was started or written


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--dataset", "digits"])
    assert info.value.code == 2
    assert "--scenario" in capsys.readouterr().err


def test_validate_prints_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "dev-cpu"]) == 0
    assert '"max_inference_energy_vs_baseline": 0.75' in capsys.readouterr().out


def test_meters_lists_what_auto_picks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["meters"]) == 0
    out = capsys.readouterr().out
    assert "auto -> " in out and "codecarbon" in out


@pytest.mark.parametrize(("extra", "expected"), [([], "auto"), (["--parallel", "3"], "3"), (["--parallel", "1"], "1")])
def test_parallel_defaults_to_auto_and_a_number_forces_it(
    extra: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, mlflow_store: str
) -> None:
    import flows.cli.loops
    import flows.energy_loop

    seen: list[LoopRequest] = []
    monkeypatch.setattr(flows.energy_loop, "energy_loop", lambda request: seen.append(request))
    monkeypatch.setattr(flows.cli.loops, "run_loop", lambda prog, services, loop: loop() or 0)
    assert main(["run", "--scenario", "dev-cpu", "--dataset", "iris", *extra]) == 0
    assert str(seen[0].parallel) == expected and seen[0].dask_address is None


def _user_project(root: Path) -> None:
    """A user's working directory: a model module and a two-class image folder."""
    import numpy as np
    from PIL import Image

    (root / "my_model.py").write_text(
        "from torch import nn\n"
        "def make(input_shape, n_outputs):\n"
        "    return nn.Sequential(nn.Flatten(), "
        "nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], n_outputs))\n"
        "def broken(input_shape, n_outputs):\n"
        "    raise ValueError('no such layer')\n"
    )
    for label in ("cat", "dog"):
        (root / "pics" / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((6, 4), 20 * i, dtype=np.uint8)).save(root / "pics" / label / f"{i}.png")


def test_model_image_size_and_image_cache_reach_the_flow_after_the_checks(
    tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _user_project(tmp_path)
    calls: list[LoopRequest] = []
    outcome = SimpleNamespace(
        state="PASSED", reason="r", table_md="", champion_reason="c", model_name="m", versions={}, loop_run_id="x"
    )
    monkeypatch.setattr(flows.energy_loop, "energy_loop", lambda request: calls.append(request) or outcome)
    # The flow is a stand-in that talks to no Prefect API: a configured (unused) one spares the wait for a local server.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    argv = [
        "run",
        "--scenario",
        "dev-cpu",
        "--dataset",
        str(tmp_path / "pics"),
        "--model",
        "my_model:make",
        "--image-size",
        "5x3",
        "--image-cache",
        "stream",
    ]
    assert main(argv) == 0
    assert calls[0] == LoopRequest(
        scenario="dev-cpu",
        dataset=str(tmp_path / "pics"),
        model_factory="my_model:make",
        image_size="5x3",
        image_cache="stream",
        parallel="auto",  # `run`'s default
    )
    out = capsys.readouterr().out
    assert (
        "samples of shape (1, 5, 3)" in out
        and "Model my_model:make: Sequential, 32 parameters, input (1, 5, 3) -> 2 outputs" in out
    )
    assert "image cache: stream (--image-cache stream)" in out


def test_a_factory_named_in_the_scenario_is_checked_before_the_flow(
    tmp_path: Path, mlflow_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _user_project(tmp_path)
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ntargets:\n  max_accuracy_drop_pt: 2\nmodel:\n  factory: my_model:broken\n"
    )
    assert main(["run", "--scenario", str(tmp_path / "mine.yaml"), "--dataset", str(tmp_path / "pics")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "model.factory = 'my_model:broken'" in err and "ValueError: no such layer" in err
    )
    assert not Path("mlflow.db").exists()


def _flags(argv: list[str]) -> set[str]:
    from flows.cli.app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    command = sub[argv[0]]  # type: ignore[index]
    for name in argv[1:]:
        command = next(a for a in command._actions if a.dest == "cooling_command").choices[name]  # type: ignore[index]
    return {s for a in command._actions for s in a.option_strings}


def test_the_run_flags_are_the_request_fields() -> None:
    from thresholds.cooling.request import CoolingRequest
    from thresholds.request import fields

    assert _flags(["run"]) == {f.option.flag for f in fields(LoopRequest)} | {"-h", "--help", "--verbose"}
    assert _flags(["cooling", "run"]) == {f.option.flag for f in fields(CoolingRequest)} | {"-h", "--help", "--verbose"}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--deployment", "energy-loop/dev-cpu", "--param", "bogus=1"], "--param = 'bogus=1': expected K=V with K"),
        (["--deployment", "energy-loop/dev-cpu", "--param", "samples"], "--param = 'samples': expected K=V"),
        (["--deployment", "cooling-loop/room", "--param", "dataset=x"], "K one of scenario, env, months, days"),
        (["--deployment", "dev-cpu"], "--deployment = 'dev-cpu': expected FLOW/DEPLOYMENT with FLOW one of"),
        (["--deployment", "energy-loop/dev-cpu", "--param", "samples=3"], "samples = 3: expected an integer >= 20"),
        (["--deployment", "cooling-loop/room", "--param", "days=2"], "--param scenario=...: expected when running in"),
    ],
)
def test_trigger_refuses_a_bad_parameter_in_one_line(
    argv: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # the in-process path: nothing to contact, nothing run
    extra = ["--param", "scenario=dev-cpu", "--param", "dataset=iris"] if "samples=3" in argv else []
    assert main(["trigger", *argv, *extra]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "running the flow in this process" not in line]
    assert len(err) == 1 and needle in err[0], err


def test_trigger_without_a_server_runs_the_request_as_run_would(
    monkeypatch: pytest.MonkeyPatch, mlflow_store: str
) -> None:
    import flows.cli.loops
    import flows.energy_loop

    seen: list[LoopRequest] = []
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(flows.energy_loop, "energy_loop", lambda request: seen.append(request))
    monkeypatch.setattr(flows.cli.loops, "run_loop", lambda prog, services, loop: loop() or 0)
    argv = ["trigger", "--deployment", "energy-loop/dev-cpu", "--param", "scenario=dev-cpu"]
    assert main([*argv, "--param", "dataset=iris", "--param", "samples=100", "--param", "image_cache=memory"]) == 0
    assert seen == [LoopRequest(scenario="dev-cpu", dataset="iris", samples=100, image_cache="memory", parallel="auto")]


def test_status_puts_what_serving_observed_beside_the_loops_figures() -> None:
    from flows.cli.registry import _served_line
    from registry.observed import Observed

    seen = Observed(
        windows=3, rows=640, requests=70, errors=1, first_ms=1_765_152_000_000, last_ms=1_765_152_090_000,
        energy_j_per_1k=2.5, energy_j_per_1k_sem=0.25, latency_p95_ms=4.2, quality=0.93, labelled_rows=200,
        rows_by_batch={1: 10, 64: 630},
    )  # fmt: skip
    line = _served_line(seen, 2.0, 0.4)
    assert "640 rows in 70 requests (1 failed), 3 windows since 2025-12-08 00:00 UTC" in line
    assert "rows by batch size <=1: 10, <=64: 630" in line
    assert "observed 2.5 ± 0.25 J/1k; the loop's at this mix 2, at its own batch size 0.4" in line
    assert "latency p95 4.2 ms" in line and "quality 0.93 over 200 labelled rows" in line


def test_status_lists_the_last_production_breach_in_one_line() -> None:
    import json

    from flows.cli.registry import _production_event_line

    tag = {"at": "2026-12-08T01:00:00+00:00", "batch_mix": {"1": 900},
           "misses": [{"figure": "energy", "value": 12.5, "limit": 2.2, "uncertainty": 0.4}]}  # fmt: skip
    assert _production_event_line(json.dumps(tag)) == (
        "2026-12-08T01:00:00+00:00: energy 12.5 over limit 2.2 (rows by batch size {'1': 900})"
    )
    assert _production_event_line("not json") == "not json"
