"""Data errors through the real CLI: found before the flow starts, one line, exit 2, nothing registered.

A malformed table used to fail inside the Prefect flow, which printed ~40 lines of traceback
before the one-line error (issue 16). The CLI now prepares the data first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _rows(n: int = 40) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {"length": rng.normal(40, 5, n), "island": rng.choice(["Biscoe", "Dream"], size=n), "species": rng.choice(["A", "B"], size=n)}


def _write(frame: pd.DataFrame) -> Callable[[Path], None]:
    return lambda path: frame.to_csv(path, index=False)


def _stray_text(path: Path) -> None:
    frame = pd.DataFrame(_rows())
    frame["age"] = [str(i) for i in range(39)] + ["?"]
    frame.to_csv(path, index=False)


def _many_levels(path: Path) -> None:
    n = 200_000  # each of the 100,000 levels twice: a category, not an ID (a column of distinct values is dropped as one)
    pd.DataFrame({"x": np.arange(n) % 13, "city": [f"city-{i % 100_000}" for i in range(n)], "y": np.arange(n) % 2}).to_csv(path, index=False)


CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("missing target column", _write(pd.DataFrame(_rows()).drop(columns=["species"])), "species", "target = 'species': expected one of the columns"),
    ("non-numeric feature", _stray_text, "species", "column 'age' row 39 = '?': expected a number"),
    ("empty file", lambda path: path.write_text(""), "species", "the file is empty"),
    ("target missing in every row", _write(pd.DataFrame({**_rows(), "species": [None] * 40})), "species", "missing in all 40 rows"),
    ("column entirely missing", _write(pd.DataFrame({**_rows(), "depth": [np.nan] * 40})), "species", "column 'depth' = 'missing in all 40 rows'"),
    ("categorical column with 100,000 levels", _many_levels, "y", "column 'city' = '100000 distinct values': expected at most 1000 categories"),
]


def _cli(tmp_path: Path, table: Path, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    argv = [sys.executable, "-m", "flows.cli", "run", "--scenario", "dev-cpu", "--dataset", str(table), "--target", target, "--model-name", "bad", *extra]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("make", "target", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_data_error_is_one_line_before_the_flow(tmp_path: Path, make: Callable[[Path], None], target: str, needle: str) -> None:
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


def test_verbose_shows_the_traceback_behind_the_line(tmp_path: Path) -> None:
    table = tmp_path / "table.csv"
    _stray_text(table)
    done = _cli(tmp_path, table, "species", "--verbose")
    assert done.returncode == 2 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("energy-loop: error: dataset ")
