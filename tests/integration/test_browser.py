"""What a user sees before promoting: the registered model version page of a real MLflow server,
rendered by headless Chromium over a store the loop has filled. Skip locally with -m "not browser"."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.conftest import QuickLoop
from tests.integration.test_servers import BIN, _free_port, _stop, _wait_http

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps dialling out, which this network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1800"]  # fmt: skip


def _render(url: str, profile: Path, screenshot: Path) -> str:
    args = [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
    subprocess.run([*args, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
    return subprocess.run([*args, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120).stdout


def test_the_version_page_shows_the_champion_alias_and_the_energy_tags(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require(CHROMIUM is not None, "Debian's chromium (apt-get install chromium; .ci/run installs it)")
    # Only once Chromium is known to be there: the shared quick loop (tests/integration/conftest.py, quick.yaml
    # on digits, model digits-quick, real Prefect and a real embedded MLflow store) takes a while the first time.
    loop: QuickLoop = request.getfixturevalue("quick_loop")
    outcome, mlflow_store = loop.outcome, loop.store
    assert outcome.state == "PASSED" and outcome.champion_version
    port = _free_port()
    log = tmp_path / "mlflow-ui.log"
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_store, "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=loop.folder, env=os.environ.copy(), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", 120, proc, log)
        shot = Path(os.environ.get("BROWSER_SCREENSHOT_DIR", tmp_path)) / "model-version-page.png"
        dom = _render(
            f"http://127.0.0.1:{port}/#/models/{loop.model_name}/versions/{outcome.champion_version}",
            tmp_path / "profile",
            shot,
        )
    finally:
        _stop(proc)
    assert shot.exists() and shot.stat().st_size > 10_000
    for visible in ("champion", "inference_energy_j_per_1k", "train_energy_j", "energy_source", "fixed-power:20W",
                    "energy_estimated", "compression_steps", "payback", "gates_passed"):  # fmt: skip
        assert visible in dom, f"{visible!r} is not on the version page"
