"""A user's model and data through the whole loop (real Prefect, real embedded MLflow), at tiny sizes.

The examples' own factories (`examples/resnet_digits.py`, `examples/transformer_seq.py`) run with small
widths through a user's module (`tiny.py` in the working directory, as a user would wrap them); the data
are sklearn's digits written as PNG files by `examples/make_digits_images.py`, and mnist1d as
sequences from `examples/mnist1d_sequence.py:load`; the image folder is streamed (`--image-cache stream`).
Then `energy-loop predict` scores an image folder. The transformer also goes through with the user's own
loss and metric (`--loss`, `--metric`) and whole-head pruning.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from flows.cli import main
from tasks.data.datasets import load_cached, prepare
from tasks.models import factory as models
from tests.conftest import FIXTURES, ROOT
from thresholds import scenario_with_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TINY = """
from examples import resnet_digits, transformer_seq

def resnet(input_shape, n_outputs):
    return resnet_digits.make(input_shape, n_outputs, widths=(8, 16), blocks_per_stage=1)

def transformer(input_shape, n_outputs):
    return transformer_seq.make(input_shape, n_outputs, d_model=16, n_heads=2, n_layers=1, ff_dim=32)
"""


@pytest.fixture
def user_dir(mlflow_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of a user: their module beside them, the examples importable (as from a checkout)."""
    (tmp_path / "tiny.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "tiny"]:
        del sys.modules[name]
    return tmp_path


def _digits_png(folder: Path, per_class: int = 30, size: int = 8) -> Path:
    spec = importlib.util.spec_from_file_location("make_digits_images", ROOT / "examples" / "make_digits_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.write(folder, size=size, per_class=per_class) == 10 * per_class
    return folder


def _cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in this process: exit code, stdout, stderr. Not capsys: Prefect's console log handler, created at
    the session's first flow run, would keep a test's capture stream after it closes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _run(*argv: str) -> tuple[int, str, str]:
    return _cli("run", "--scenario", str(FIXTURES / "byo-quick.yaml"), *argv)


def test_a_resnet_on_an_image_folder_goes_through_the_loop_and_scores_new_images(
    user_dir: Path, mlflow_store: str
) -> None:
    digits = _digits_png(user_dir / "digits_png")
    # Streamed: batches decoded on the fly by DataLoader workers (300 files: over the 256 that start workers).
    code, out, _ = _run(
        "--dataset", str(digits), "--model", "tiny:resnet", "--model-name", "byo-resnet", "--image-cache", "stream"
    )
    assert code == 1, out  # the fixture's inference target is out of reach
    assert "samples of shape (1, 8, 8)" in out and "Model tiny:resnet: ResNet" in out and "image cache: stream" in out
    client = MlflowClient(mlflow_store)
    versions = client.search_model_versions("name='byo-resnet'")
    assert len(versions) == 3 and any("prune" in v.tags.get("compression_steps", "") for v in versions), out
    # The image model's needs are recorded beside its weights: size, channels, class labels, standardisation.
    run_dir = next((user_dir / ".energy-loop" / "runs").iterdir())
    pruned = next(d for d in sorted(run_dir.glob("candidate-*")) if "prune" in (d / "spec.json").read_text())
    pre = (pruned / "preprocessing.json").read_text()
    assert '"channels": 1' in pre and '"height": 8' in pre and '"class_labels": [\n    "0"' in pre
    model, spec = models.load(pruned)  # the pruned ResNet rebuilt from its factory + recorded structure
    assert spec.factory == "tiny:resnet" and model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)

    # `predict` on a folder of new images (larger than the training size: resized to the model's 8x8).
    new = _digits_png(user_dir / "new", per_class=2, size=16)
    for path in (new / "3").iterdir():
        path.rename(new / f"three-{path.name}")  # a flat folder of files to score, any layout
    version = versions[-1].version
    scored = user_dir / "scored.csv"
    code, out, err = _cli("predict", f"byo-resnet/{version}", "--input", str(new), "--output", str(scored))
    assert code == 0, err
    assert "scoring 20 rows" in err and "wrote 20 predictions" in out
    frame = pd.read_csv(scored)
    assert len(frame) == 20 and list(frame.columns[:2]) == ["file", "prediction"] and "probability_9" in frame.columns
    assert set(frame["prediction"].astype(str)) <= {str(i) for i in range(10)}
    assert client.get_model_version("byo-resnet", version).tags["observed.rows"] == "20"
    # A file that breaks past a valid header (it is only found while decoding, mid-stream): named in one line,
    # exit 2, the earlier predictions and the version's record untouched.
    good = next(new.glob("three-*.png")).read_bytes()
    (new / "zz-broken.png").write_bytes(good[: len(good) * 2 // 3])
    before = scored.read_text()
    code, out, err = _cli("predict", f"byo-resnet/{version}", "--input", str(new), "--output", str(scored))
    assert code == 2 and "zz-broken.png" in err and "Traceback" not in err + out, err
    assert [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]]
    assert (
        scored.read_text() == before and client.get_model_version("byo-resnet", version).tags["observed.rows"] == "20"
    )
    (new / "zz-broken.png").unlink()
    # One image file is not what predict takes: one line, exit 2.
    code, _, err = _cli(
        "predict", f"byo-resnet/{version}", "--input", str(digits / "0" / "0.png"), "--output", str(scored)
    )
    assert code == 2 and err.count("\n") == 1 and "a .csv or .parquet file, or a folder of images" in err


def test_a_transformer_on_a_dataset_function_goes_through_the_loop(user_dir: Path, mlflow_store: str) -> None:
    code, out, _ = _run(
        "--dataset",
        "examples.mnist1d_sequence:load",
        "--samples",
        "300",
        "--model",
        "tiny:transformer",
        "--model-name",
        "byo-seq",
    )
    assert code == 1, out  # the fixture's inference target is out of reach
    assert "samples of shape (40, 1)" in out and "TransformerClassifier" in out
    versions = MlflowClient(mlflow_store).search_model_versions("name='byo-seq'")
    steps = {v.tags.get("compression_steps", "") for v in versions}
    assert len(versions) == 3 and any("prune" in s for s in steps), steps


HOOKS = """
from torch import nn

def smoothed(outputs, targets):
    with open("loss_batches.txt", "a") as seen:  # which batches the loss saw: the dry run's, training's, validation's
        seen.write(f"{len(targets)}\\n")
    return nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)

def top2(outputs, targets):
    return (outputs.topk(2, dim=1).indices == targets.unsqueeze(1)).any(dim=1).float().mean().item()
"""


def test_a_custom_loss_and_metric_and_whole_head_pruning_go_through_the_loop(user_dir: Path, mlflow_store: str) -> None:
    (user_dir / "user_hooks.py").write_text(HOOKS)
    scenario = scenario_with_overrides(
        str(FIXTURES / "byo-quick.yaml"), {"ladder": {"pruning_attention": "heads"}}, user_dir, "heads"
    )
    dataset = ["--dataset", "examples.mnist1d_sequence:load", "--samples", "300"]
    hooks = ["--loss", "user_hooks:smoothed", "--metric", "user_hooks:top2"]
    code, out, _ = _cli(
        "run", "--scenario", str(scenario), *dataset, "--model", "tiny:transformer", *hooks, "--model-name", "byo-hooks"
    )
    assert code == 1, out  # the fixture's inference target is out of reach
    assert "quality metric: user_hooks:top2 (model.metric" in out and "| user_hooks:top2 |" in out, out
    data = load_cached(str(prepare("examples.mnist1d_sequence:load", user_dir / ".energy-loop" / "cache", samples=300)))
    seen = {int(n) for n in (user_dir / "loss_batches.txt").read_text().split()}
    assert {4, 64, len(data.y_val)} <= seen  # the dry run, training batches, early stopping's validation loss
    versions = MlflowClient(mlflow_store).search_model_versions("name='byo-hooks'")
    assert len(versions) == 3, out
    run_dir = next((user_dir / ".energy-loop" / "runs").iterdir())
    for version in versions:
        assert (
            version.tags["quality_metric"] == "user_hooks:top2" and version.tags["model.loss"] == "user_hooks:smoothed"
        )
        model, spec = models.load(run_dir / f"candidate-{version.tags['candidate']}")
        assert spec.hooks == {
            "loss": "user_hooks:smoothed",
            "metric": "user_hooks:top2",
        }  # recorded: a reload judges the same way
        with torch.no_grad():
            top2 = (
                (model(data.x_test).topk(2, dim=1).indices == data.y_test.unsqueeze(1)).any(dim=1).float().mean().item()
            )
        assert float(version.tags["accuracy"]) == pytest.approx(
            top2, abs=1e-5
        )  # the quality figure is the user's metric
    pruned = next(v for v in versions if "prune" in v.tags["compression_steps"])
    assert pruned.tags["compression_steps"].endswith("prune:0.5(heads)"), pruned.tags["compression_steps"]
    model, _ = models.load(run_dir / f"candidate-{pruned.tags['candidate']}")
    attention = [m for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    assert [(a.num_heads, a.head_dim) for a in attention] == [(1, 8)]  # 2 heads of 8 -> 1 whole head left
