"""tasks/models/vision_compat.py: torchvision imports beside the CPU torch when only its compiled ops fail to load."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.models import vision_compat
from tests.conftest import ROOT, require

# A stand-in for PyPI's CUDA torchvision 0.28.0 beside torch 2.13.0+cpu: its compiled library did not load
# (`_has_ops()` is False), and the package registers a fake for an operator that library would have declared.
FAKE_INIT = """
import torch
from . import extension

@torch.library.register_fake("torchvision::{op}")
def _(dets, scores, iou_threshold):
    return dets.new_empty(0, dtype=torch.long)

models = "the pure-Python parts"
"""
CHECK = """
import torch
from tasks.models import vision_compat

print("unavailable:", vision_compat.unavailable())
tv = vision_compat.load()
print("models:", tv.models)
try:
    torch.ops.torchvision.nms(torch.rand(3, 4), torch.rand(3), 0.5)
except RuntimeError as exc:
    print("nms:", exc)
"""


def run_beside_fake_torchvision(tmp_path: Path, op: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (the shim declares operators in torch's process-wide registry) with the fake package first on
    the path."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_INIT.format(op=op))
    (package / "extension.py").write_text("def _has_ops():\n    return False\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_missing_nms_schema_is_declared_and_its_kernel_says_why(tmp_path: Path) -> None:
    done = run_beside_fake_torchvision(tmp_path, "nms")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "unavailable: None",
        "models: the pure-Python parts",
        "nms: torchvision's compiled ops did not load beside this torch (see tasks/models/vision_compat.py)",
    ]


def test_an_operator_it_has_no_schema_for_is_reported_not_guessed(tmp_path: Path) -> None:
    done = run_beside_fake_torchvision(tmp_path, "box_area")
    assert done.returncode == 1
    assert (
        "unavailable: torchvision does not import beside this torch (RuntimeError: operator torchvision::box_area "
        "does not exist)" in done.stdout
    )
    assert "RuntimeError: operator torchvision::box_area does not exist" in done.stderr.splitlines()[-1]


def test_without_torchvision_the_reason_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # Python's own "not installed"
    assert vision_compat.unavailable() == "torchvision is not installed (pip install -e '.[vision]')"


def test_the_installed_torchvision_builds_resnet18() -> None:
    require((why := vision_compat.unavailable()) is None, f"the [vision] extra: {why}")
    import torch

    torchvision = vision_compat.load()
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    logits = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert logits.shape == (2, 3) and model.conv1.weight.grad is not None
    if not torchvision.extension._has_ops():  # the shim is what made it import: detection ops say so when called
        with pytest.raises(RuntimeError, match="compiled ops"):
            torch.ops.torchvision.nms(torch.rand(3, 4), torch.rand(3), 0.5)
