"""Benchmark results as files (benchmarks/results.py), written to a temporary folder from a tiny fake result."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

from benchmarks import results
from tests.conftest import ROOT

FIGURES = {"passed": 9, "tried": 9, "energy_source": "codecarbon", "energy_estimated": True}


def test_a_result_file_holds_the_figures_with_machine_commit_command_and_date(tmp_path: Path) -> None:
    when = dt.datetime(2026, 12, 7, 17, 5, 9, tzinfo=dt.UTC)
    path = results.save(FIGURES, "panel", tmp_path, [str(ROOT / "benchmarks" / "panel.py"), "--tables", "iris"], when)

    assert path == tmp_path / "panel-20261207T170509Z.json"
    record = json.loads(path.read_text())
    assert record["result"] == FIGURES
    assert record["benchmark"] == "panel"
    assert record["date"] == "2026-12-07T17:05:09Z"
    assert record["command"] == "python benchmarks/panel.py --tables iris"
    assert len(record["commit"]["hash"]) == 40 and isinstance(record["commit"]["dirty"], bool)
    machine = record["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["memory_gib"] > 0
    assert isinstance(machine["gpus"], list)


def test_two_results_in_one_second_keep_both(tmp_path: Path) -> None:
    when = dt.datetime(2026, 12, 7, 17, 5, 9, tzinfo=dt.UTC)
    first = results.save({"run": 1}, "loop", tmp_path, ["benchmarks/loop.py"], when)
    second = results.save({"run": 2}, "loop", tmp_path, ["benchmarks/loop.py"], when)
    assert first != second
    assert sorted(r["result"]["run"] for r in results.load(tmp_path)) == [1, 2]


def test_emit_prints_the_json_line_last_and_keeps_it_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(results.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["benchmarks/loop.py", "--scenario", "dev-cpu"])
    path = results.emit(FIGURES)

    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1]) == FIGURES
    assert path is not None and path.parent == tmp_path and path.name.startswith("loop-")
    assert json.loads(path.read_text())["result"] == FIGURES
    assert path.name in err


def test_emit_still_prints_when_the_file_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv(results.DIR_ENV, str(blocked))
    assert results.emit(FIGURES, "loop") is None
    out, err = capsys.readouterr()
    assert json.loads(out.splitlines()[-1]) == FIGURES
    assert "result file not written" in err


def test_load_reads_every_result_newest_first(tmp_path: Path) -> None:
    for day in (3, 1, 2):
        results.save({"day": day}, "loop", tmp_path, ["benchmarks/loop.py"], dt.datetime(2026, 12, day, tzinfo=dt.UTC))
    loaded = results.load(tmp_path)
    assert [r["result"]["day"] for r in loaded] == [3, 2, 1]
    assert loaded[0]["file"] == "loop-20261203T000000Z.json"


def test_the_stored_results_are_well_formed() -> None:
    for record in results.load():
        assert {"benchmark", "date", "command", "commit", "machine", "result"} <= set(record), record["file"]
        assert (ROOT / "benchmarks" / f"{record['benchmark']}.py").is_file(), record["file"]
        assert record["file"].startswith(f"{record['benchmark']}-"), record["file"]
