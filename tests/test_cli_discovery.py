"""The tests that run the CLI as a subprocess find it beside the running interpreter, whatever VIRTUAL_ENV says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_cli_scripts_are_found_from_the_running_interpreter() -> None:
    code = "from tests.integration.test_servers import BIN; print(BIN)"
    env = {**os.environ, "VIRTUAL_ENV": str(ROOT / "no-such-venv")}
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert (Path(found) / "energy-loop").exists(), found
