"""The loop's console: progress fragments joined into one line per candidate; this project's warnings
shown in one line; the orchestrator's and the libraries' lines only with --verbose."""

from __future__ import annotations

import logging
import os

import pytest

from flows import console
from tasks.common import progress
from tasks.energy_loop import progress as loop_progress
from tests.conftest import ROOT


def _record(name: str, level: int, message: str, path: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, path, 1, message, None, None)


LIBRARY = "/venv/lib/python3.11/site-packages/prefect/task_engine.py"
OURS = str(ROOT / "tasks" / "candidate.py")


def test_fragments_become_one_line_per_candidate_and_a_warning_cuts_in_cleanly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with console.session(verbose=False):
        progress.say("[1/3] #0 baseline", "training…")
        progress.say("[1/3] #0 baseline", "2.0 s  measuring…")
        progress.say("[1/3] #0 baseline", "1.0 s  PASS", end=True)
        progress.say("[2/3] #1 prune:0.3 from #0", "training…")
        logging.getLogger().handle(
            _record("tasks.energy_loop.candidate", logging.WARNING, "candidate #1 (prune:0.3) rejected: diverged", OURS)
        )
        progress.say("[2/3] #1 prune:0.3 from #0", "0.5 s", end=True)
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "[1/3] #0 baseline  training… 2.0 s  measuring… 1.0 s  PASS",
        "[2/3] #1 prune:0.3 from #0  training…",
        "[2/3] #1 prune:0.3 from #0  0.5 s",  # the line starts again after the warning
    ]
    assert err == "warning: candidate #1 (prune:0.3) rejected: diverged\n"


@pytest.mark.parametrize(
    ("name", "level", "message", "path"),
    [
        ("prefect.task_runs", logging.INFO, "Finished in state Completed()", LIBRARY),
        (
            "prefect",
            logging.INFO,
            "Starting temporary server on http://127.0.0.1:8298",
            LIBRARY.replace("task_engine", "server/api/server"),
        ),
        (
            "prefect.flow_runs",
            logging.ERROR,
            "Encountered exception during execution:\nTraceback (most recent call last):",
            LIBRARY,
        ),
        (
            "mlflow.store.db.utils",
            logging.INFO,
            "Creating initial MLflow database tables...",
            "/venv/lib/python3.11/site-packages/mlflow/store/db/utils.py",
        ),
        (
            "py.warnings",
            logging.WARNING,
            "copyreg.py:105: FutureWarning: `isinstance(treespec, LeafSpec)` is deprecated",
            "/usr/lib/python3.11/warnings.py",
        ),
        (
            "tasks.models.train",
            logging.INFO,
            "#0 baseline: epoch 6/60 val_loss 0.5024 (best 0.5024 @ 6)",
            str(ROOT / "tasks" / "train.py"),
        ),
    ],
)
def test_what_is_not_for_a_person_shows_only_with_verbose(
    name: str, level: int, message: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for verbose in (False, True):
        with console.session(verbose=verbose):
            logging.getLogger().handle(_record(name, level, message, path))
        out, err = capsys.readouterr()
        first = message.splitlines()[0]
        assert (first in err) is verbose and first not in out


def test_with_verbose_progress_is_a_log_line_among_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    with console.session(verbose=True):
        progress.say("[1/3] #0 baseline", "training…")
    out, err = capsys.readouterr()
    assert out == "" and "INFO tasks.common.progress: [1/3] #0 baseline  training…" in err


def test_the_session_gives_back_the_logging_and_environment_it_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", raising=False)
    root = logging.getLogger()
    before = (root.handlers[:], root.level, logging.getLogger("mlflow").level)
    with console.session(verbose=False):
        assert [type(h) for h in root.handlers] == [console.Console]
        assert logging.getLogger("mlflow").level == logging.ERROR
        assert (
            os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "WARNING"
        )  # the Dask workers' and server's console too
    assert (root.handlers, root.level, logging.getLogger("mlflow").level) == before
    assert "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" not in os.environ


def test_a_long_stretch_adds_a_few_counters_to_its_line_not_one_per_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = iter([0.0, 10.0, 31.0, 50.0, 61.0, 70.0, 139.0, 141.0])  # seconds: the ticker's start, then one per episode
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    line = progress.numbered(1, 3, "retrain 16-8")
    with console.session(verbose=False):
        progress.say(line, "training…")
        tick = progress.Ticker(line)
        for episode in range(1, 8):
            tick(f"episode {episode}/200…")
        monkeypatch.undo()
        progress.say(line, "141.0 s  evaluating…")
        progress.say(line, "0.1 s  PASS", end=True)
    # Said at 31 s, then once the stretch had doubled (62 s, 140 s); 7 episodes, 3 counters.
    assert (
        capsys.readouterr().out
        == "[2/3] #1 retrain 16-8  training… episode 2/200… episode 5/200… episode 7/200… 141.0 s  evaluating… "
        "0.1 s  PASS\n"
    )


def test_a_rung_refused_as_not_applicable_says_so_and_the_next_candidate_keeps_its_place(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from thresholds.energy.policy import CandidateResult, Next, Step, StepKind
    from thresholds.energy.schema import Scenario

    scenario = Scenario.model_validate(
        {"name": "t", "targets": {"max_accuracy_drop_pt": 2.0}, "budget": {"max_iterations": 3}}
    )
    base = CandidateResult(index=0, step=Step(kind=StepKind.BASELINE), accuracy=0.9, energy_source="replay")
    fuse = Step(kind=StepKind.FUSE, parent=0)
    refused = CandidateResult(
        index=1,
        step=fuse,
        rejected_reason="no fused form of #0: nothing to fuse",
        not_applicable=True,
        energy_source="replay",
    )
    prune = Step(kind=StepKind.PRUNE, value=0.5, parent=0)
    with console.session(verbose=False):
        loop_progress.training(scenario, [base], [Next(step=fuse, why="x")])
        loop_progress.trained(scenario, [base], refused)
        loop_progress.judged(scenario, [base, refused], refused)
        loop_progress.training(scenario, [base, refused], [Next(step=prune, why="x")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[2/3] #1 fuse from #0  training… 0.0 s rejected: no fused form") and lines[0].endswith(
        "(not applicable: no iteration used)"
    )
    assert lines[1].startswith(
        "[2/3] #2 prune:0.5 from #0  training…"
    )  # the refusal used no iteration: #2 is still the second


def test_a_passing_candidate_shows_its_inference_figure(capsys: pytest.CaptureFixture[str]) -> None:
    from thresholds.energy.policy import CandidateResult, Step, StepKind
    from thresholds.energy.schema import Scenario

    scenario = Scenario.model_validate(
        {"name": "t", "targets": {"max_accuracy_drop_pt": 2.0, "max_inference_energy_vs_baseline": 0.5}}
    )
    base = CandidateResult(
        index=0, step=Step(kind=StepKind.BASELINE), accuracy=0.9, inference_energy_j_per_1k=1.0, energy_source="replay"
    )
    ort = Step(kind=StepKind.ORT, value="fp32", parent=0)
    served = CandidateResult(index=1, step=ort, accuracy=0.9, inference_energy_j_per_1k=0.25, energy_source="replay")
    with console.session(verbose=False):
        loop_progress.judged(scenario, [base, served], served)
    assert capsys.readouterr().out.rstrip("\n").endswith("PASS: inference_energy_vs_baseline 0.25x <= 0.5x")
