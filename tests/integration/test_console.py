"""What reaches the terminal during `energy-loop run` (a real process, a tiny loop on CodeCarbon) and
`energy-cooling run` (two simulated days): progress lines, the table and the verdict; the orchestrator's
lines only with --verbose (issue 13)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration

# Lines that are not for a person: the Prefect server's start (flows/prefect_api.py) and Prefect's engine, MLflow's
# store set-up, CodeCarbon's tracker, the training epochs (the progress line stands for them).
NOISE = (
    "Prefect API: starting a local server",
    "Beginning flow run",
    "Finished in state",
    "Creating initial MLflow database tables",
    "[codecarbon ",
    "val_loss",
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("CODECARBON_LOG_LEVEL", None)
    return env


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    raw = yaml.safe_load((FIXTURES / "quick.yaml").read_text())
    raw["budget"]["max_iterations"] = 2
    raw["training"]["max_epochs"] = 10
    raw["measurement"] = {**raw["measurement"], "meter": "codecarbon"}  # its tracker's lines are part of the noise
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    argv = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "--scenario",
        str(scenario),
        "--dataset",
        "digits",
        "--parallel",
        "1",
        *extra,
    ]
    return subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)


# The one warning a loop owes a person when other processes shared the CPU it measured on (tasks/meters/contention.py):
# the test suite itself may be that other process, so it is the one line allowed on stderr.
BUSY = re.compile(
    r"warning: candidate #\d+ \([^)]*\): other processes used \d+% of this machine's CPU while it was measured"
)


def test_the_console_shows_progress_table_and_verdict_and_no_orchestrator_lines(tmp_path: Path) -> None:
    done = _run(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode in (0, 1), output
    person = [line for line in done.stderr.splitlines() if not BUSY.match(line)]
    assert person == []  # no other warning or error a person needs came up in this run
    output = done.stdout + "\n".join(person)
    for noise in (*NOISE, "INFO", "WARNING", "Traceback"):
        assert noise not in output, f"{noise!r} reached the console:\n{output}"
    lines = done.stdout.splitlines()
    seconds = r"\d+\.\d s"
    verdict = r"(PASS(: .+)?|miss: .+|rejected: .+)"
    calibrated = r"(calibrated (training )?\w+ )*"  # each precision and training mode, as it is calibrated
    setup = rf"setup  idle power, calibration, parallel width… {calibrated}{seconds}"
    assert any(re.fullmatch(setup, line) for line in lines), done.stdout
    progress: list[str] = []
    for line in (line for line in lines if line.startswith("[")):
        head = progress[-1].split("  ")[0] if progress else None
        if head and progress[-1].endswith("measuring…") and line.startswith(f"{head}  "):
            # A busy warning ended the line mid-measurement; the progress printer goes on in a line of its own.
            progress[-1] += " " + line[len(head) + 2 :]
        else:
            progress.append(line)
    assert len(progress) == 2, done.stdout  # one line per candidate
    assert re.fullmatch(
        rf"\[1/2\] #0 baseline  training… {seconds}(  measuring… {seconds})?  {verdict}", progress[0]
    ), progress[0]
    assert re.fullmatch(
        rf"\[2/2\] #1 \S+ from #0  training… {seconds}(  measuring… {seconds})?  {verdict}", progress[1]
    ), progress[1]
    assert any(
        re.fullmatch(rf"closing  full-test confirmation, batch-size sweep, registration… {seconds}", line)
        for line in lines
    ), done.stdout
    assert "| # | steps |" in done.stdout
    assert re.search(r"^(PASSED|BUDGET_EXHAUSTED|FAILED): ", done.stdout, re.MULTILINE)


def test_verbose_shows_the_orchestrator_lines(tmp_path: Path) -> None:
    done = _run(tmp_path, "--verbose")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    for line in NOISE[:5]:  # the epochs come every few seconds: a tiny run may have none to show
        assert line in done.stderr, f"{line!r} missing with --verbose:\n{done.stderr[-3000:]}"
    assert "| # | steps |" in done.stdout and "Traceback" not in done.stdout + done.stderr


def _cooling(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`energy-cooling run` on the quick fixture (a fixed-power meter: no CodeCarbon lines to hide here)."""
    alias = (
        "from flows.cli import cooling_main; raise SystemExit(cooling_main())"  # `energy-cooling`, from this checkout
    )
    argv = [sys.executable, "-c", alias, "run", "--scenario", str(FIXTURES / "cooling-quick.yaml"), *extra]
    return subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)


def test_the_cooling_console_shows_progress_table_and_verdict_and_no_orchestrator_lines(tmp_path: Path) -> None:
    done = _cooling(tmp_path, "--days", "2")
    output = done.stdout + done.stderr
    assert done.returncode in (0, 1), output
    assert done.stderr == ""
    for noise in (*NOISE, "episode 1/12: ", "INFO", "WARNING", "Traceback"):
        assert noise not in output, f"{noise!r} reached the console:\n{output}"
    lines = done.stdout.splitlines()
    seconds = r"\d+\.\d s"
    progress = [line for line in lines if line.startswith("[")]
    assert progress, done.stdout  # one line per attempt: the quick agent passes at its first or is retrained once
    for i, line in enumerate(progress):
        step = "train 16-8" if i == 0 else r"retrain 16-8"
        assert re.fullmatch(
            rf"\[{i + 1}/2\] #{i} {step}  training…( episode \d+/\d+…)* {seconds}  evaluating… {seconds}  "
            r"(PASS|miss: .+)",
            line,
        ), line
    assert any(re.fullmatch(rf"closing  plots, registration… {seconds}", line) for line in lines), done.stdout
    assert "| # | step | hidden |" in done.stdout
    assert re.search(r"^(PASSED|BUDGET_EXHAUSTED|FAILED): ", done.stdout, re.MULTILINE)


def test_the_cooling_console_with_verbose_shows_the_orchestrator_lines(tmp_path: Path) -> None:
    done = _cooling(tmp_path, "--days", "1", "--verbose")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    for line in (*NOISE[:4], "episode 1/12: "):
        assert line in done.stderr, f"{line!r} missing with --verbose:\n{done.stderr[-3000:]}"
    assert "| # | step | hidden |" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_the_cooling_command_says_a_bad_value_in_one_line(tmp_path: Path) -> None:
    done = _cooling(tmp_path, "--days", "0")
    assert done.returncode == 2 and done.stdout == ""
    errors = done.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("energy-cooling: error: "), done.stderr
    assert "evaluation.days = 0: expected greater than or equal to 1" in errors[0]
    assert not (tmp_path / "mlflow.db").exists()
