"""Stopping a loop for real: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM while it trains ends the
command in one line, exit 130 / 143, its MLflow run KILLED, nothing registered, no traceback anywhere, and no
process of its left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tests.conftest import FIXTURES
from tests.integration.test_servers import BIN

pytestmark = pytest.mark.integration
TRAINING = "#0 baseline  training"  # the progress line of the first candidate, once it trains


class Output:
    """A subprocess's stdout and stderr together, read as it comes (the progress line is written without its end)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.chunks: list[bytes] = []
        assert proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: object) -> None:
        while chunk := os.read(stream.fileno(), 4096):  # type: ignore[attr-defined]
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text:
            assert proc.poll() is None and time.monotonic() < deadline, f"no {needle!r} in:\n{self.text[-3000:]}"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("signum", "to_group", "code", "said"),
    [(signal.SIGINT, True, 130, "Ctrl-C"), (signal.SIGTERM, False, 143, "SIGTERM")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_loop_stopped_while_training_is_killed_in_one_line(
    signum: int, to_group: bool, code: int, said: str, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)  # the command starts its own Prefect server, as on a laptop
    argv = [str(BIN / "energy-loop"), "run", "--scenario", str(FIXTURES / "killable.yaml"), "--dataset", "digits"]
    proc = subprocess.Popen(
        [*argv, "--model-name", "stopped"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    output = Output(proc)
    try:
        output.wait_for(TRAINING, proc, timeout_s=240)
        helpers = psutil.Process(proc.pid).children(recursive=True)  # its Prefect server, at least
        assert helpers
        os.killpg(proc.pid, signum) if to_group else proc.send_signal(signum)
        assert proc.wait(timeout=120) == code, output.text[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.text
    assert "Traceback" not in text, text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"energy-loop: interrupted ({said}): loop run ") and last.endswith(
        "marked KILLED in MLflow; nothing registered"
    ), text[-2000:]
    assert text.count("interrupted") == 1
    client = MlflowClient(store)
    loop_run = client.get_run(last.split("loop run ")[1].split()[0])
    assert loop_run.info.status == "KILLED" and loop_run.data.tags["loop.state"] == "KILLED"
    assert client.search_model_versions("name='stopped'") == []
    _, alive = psutil.wait_procs([p for p in helpers if p.is_running()], timeout=15)
    assert not alive, [p.cmdline() for p in alive]  # its Prefect server stopped with it
