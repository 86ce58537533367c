"""A user's loss, metric and training step: resolved and tried before any training, used where the loop
would use its own, recorded with the model, and refused in one line when they raise or return the wrong thing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tasks.common.errors import RungNotApplicable
from tasks.compression.distill import distillation_loss
from tasks.data.datasets import CachedData, load_cached, prepare
from tasks.models import factory as models
from tasks.models import hooks
from tasks.models.evaluate import quality, quality_tag, resolve_quality_metric
from tasks.models.train import TrainConfig, fit, loss_targets
from tests.conftest import ROOT
from thresholds.energy.schema import parse_scenario
from thresholds.errors import InputError

HERE = "tests.tasks.models.test_hooks"


def double_ce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 2 * nn.functional.cross_entropy(outputs, targets)


def double_ce_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, targets = batch
    assert x.dtype == torch.float32 and targets.dtype == torch.int64 and len(x) == len(targets)  # the documented batch
    return 2 * nn.functional.cross_entropy(model(x), targets)


def top2(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.topk(2, dim=1).indices == targets.unsqueeze(1)).any(dim=1).float().mean().item()


def raises(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    raise ValueError("labels must be one-hot\n(a second line)")


def out_of_range(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return 1.5


def per_sample(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def detached(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.tensor(nn.functional.cross_entropy(outputs, targets).item())


def step_returns_outputs(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return model(batch[0])


def weighted_digits(samples: int | None = None, seed: int = 0) -> dict[str, object]:
    """sklearn's digits as a dataset function whose items are mappings with two extras: a weight of 2 for
    every sample, and each sample's pixel sum (what lets a training step check that its rows line up)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16, dtype=torch.float32)

    def split(rows: slice) -> dict[str, torch.Tensor]:
        return {
            "x": x[rows],
            "y": torch.tensor(y[rows]),
            "weight": torch.full((len(x[rows]),), 2.0),
            "pixel_sum": x[rows].sum(1),
        }

    return {
        "train": split(slice(0, 1200)),
        "val": split(slice(1200, 1500)),
        "test": split(slice(1500, None)),
        "task": "classification",
    }


def weighted_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    assert list(batch) == ["x", "y", "weight", "pixel_sum"] and torch.allclose(
        batch["pixel_sum"], batch["x"].sum(1)
    )  # the dataset's form, rows aligned
    with open(SEEN, "a") as seen:
        seen.write(f"{len(batch['y'])}\n")
    return (nn.functional.cross_entropy(model(batch["x"]), batch["y"], reduction="none") * batch["weight"]).mean()


SEEN = Path("weighted_batches.txt")  # relative: the tests that use it run in a temporary directory


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> CachedData:
    return load_cached(str(prepare("digits", Path(tmp_path_factory.mktemp("cache")))))


def mlp(data: CachedData) -> nn.Module:
    torch.manual_seed(0)
    return models.build(models.ModelSpec(in_features=data.n_features, out_features=data.out_features))


def tiny_batch(data: CachedData) -> tuple[torch.Tensor, torch.Tensor]:
    return data.x_train[:4], loss_targets(data.y_train[:4], data.task)  # a table's batch: always (x, targets)


def check(digits: CachedData, **names: str) -> hooks.Hooks:
    return hooks.check(names, mlp(digits), tiny_batch(digits))  # type: ignore[arg-type]


def test_good_hooks_pass_the_dry_run(digits: CachedData) -> None:
    checked = check(digits, loss=f"{HERE}:double_ce", metric=f"{HERE}:top2", train_step=f"{HERE}:double_ce_step")
    assert set(checked.names) == {"loss", "metric", "train_step"}


@pytest.mark.parametrize(
    ("hook", "value", "expected"),
    [
        (
            "loss",
            "no_such_pkg.losses:focal",
            "model.loss = 'no_such_pkg.losses:focal': expected an importable module (ModuleNotFoundError",
        ),
        (
            "metric",
            f"{HERE}:no_such_metric",
            f"model.metric = '{HERE}:no_such_metric': expected a callable named 'no_such_metric'",
        ),
        (
            "loss",
            f"{HERE}:raises",
            "expected a function (outputs, targets) -> scalar loss tensor (it raised ValueError: labels "
            "must be one-hot)",
        ),
        ("metric", f"{HERE}:raises", "(it raised ValueError: labels must be one-hot)"),
        (
            "metric",
            f"{HERE}:out_of_range",
            "expected a function (outputs, targets) -> float in [0, 1], higher is better (it returned 1.5)",
        ),
        ("metric", f"{HERE}:per_sample", "(it returned a torch.float32 tensor of shape (4,))"),
        ("loss", f"{HERE}:per_sample", "scalar loss tensor (it returned a torch.float32 tensor of shape (4,))"),
        ("loss", f"{HERE}:detached", "(its result has no gradient: was it computed with .item(), .detach() or numpy?)"),
        (
            "train_step",
            f"{HERE}:step_returns_outputs",
            "model.train_step = 'tests.tasks.models.test_hooks:step_returns_outputs': "
            "expected a function (model, batch)",
        ),
    ],
)
def test_a_bad_hook_is_one_line_naming_the_field_the_value_and_what_was_expected(
    digits: CachedData, hook: str, value: str, expected: str
) -> None:
    with pytest.raises(InputError) as err:
        check(digits, **{hook: value})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"model.{hook} = {value!r}: expected ") and expected in message, (
        message
    )


def test_the_loss_and_the_training_step_replace_the_task_loss_in_training_and_validation(digits: CachedData) -> None:
    cfg = TrainConfig(max_epochs=3, patience=3, batch_size=128)
    plain = fit(mlp(digits), digits, cfg)
    # Adam is invariant to the loss's scale, so twice the loss trains (nearly) the same weights: every recorded loss
    # doubles.
    for names in ({"loss": f"{HERE}:double_ce"}, {"train_step": f"{HERE}:double_ce_step"}):
        doubled = fit(mlp(digits), digits, cfg, hooks=hooks.resolve(names))  # type: ignore[arg-type]
        assert doubled.train_losses == pytest.approx([2 * v for v in plain.train_losses], rel=1e-3), names
        assert doubled.val_losses == pytest.approx([2 * v for v in plain.val_losses], rel=1e-3), names


def test_the_training_step_gets_every_batch_in_the_dataset_form_with_its_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    weighted = load_cached(str(prepare(f"{HERE}:weighted_digits", tmp_path / "cache")))
    names = {"train_step": f"{HERE}:weighted_step"}
    hooks.check(names, mlp(weighted), weighted.batch("train", weighted.y_train, slice(0, 4)))  # type: ignore[arg-type]  # the dry run's tiny batch
    cfg = TrainConfig(max_epochs=3, patience=3, batch_size=128)
    plain = fit(mlp(weighted), weighted, cfg)
    doubled = fit(mlp(weighted), weighted, cfg, hooks=hooks.resolve(names))  # type: ignore[arg-type]
    # Weights of 2 double every loss, in training and on the validation split, as in the test above: the extra reached
    # the step.
    assert doubled.train_losses == pytest.approx([2 * v for v in plain.train_losses], rel=1e-3)
    assert doubled.val_losses == pytest.approx([2 * v for v in plain.val_losses], rel=1e-3)
    seen = [int(n) for n in SEEN.read_text().split()]
    assert seen[0] == 4 and {128, 1200 % 128, 300} <= set(
        seen
    )  # the dry run, training batches (and the last, short one), validation


def test_the_example_weighted_step_trains_on_its_weighted_mnist1d(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    data = load_cached(str(prepare("examples.weighted_mnist1d:load", tmp_path / "cache", samples=400)))
    batch = data.batch("train", data.y_train)
    assert isinstance(batch, tuple)  # the example's items are (x, y, weight)
    _, targets, weight = batch
    rare = targets >= 5
    assert (
        0 < rare.sum() < (~rare).sum() and weight[rare].min() > weight[~rare].max()
    )  # fewer rare digits, each weighing more
    names = {"train_step": "examples.weighted_mnist1d:weighted_step"}
    report = fit(
        mlp(data),
        data,
        TrainConfig(max_epochs=2, batch_size=64),
        hooks=hooks.check(names, mlp(data), data.batch("train", targets, slice(0, 4))),
    )  # type: ignore[arg-type]
    assert report.epochs_run == 2 and all(math.isfinite(v) for v in report.val_losses)


def test_early_stopping_watches_the_metric_only_when_it_monitors_accuracy(digits: CachedData) -> None:
    broken = hooks.resolve({"metric": f"{HERE}:out_of_range"})
    fit(
        mlp(digits), digits, TrainConfig(max_epochs=1, batch_size=128), hooks=broken
    )  # monitor: loss, the metric is not computed
    with pytest.raises(InputError, match="it returned 1.5"):
        fit(mlp(digits), digits, TrainConfig(max_epochs=1, batch_size=128, monitor="accuracy"), hooks=broken)


def test_soft_labels_cannot_replace_a_training_step(digits: CachedData) -> None:
    step = hooks.resolve({"train_step": f"{HERE}:double_ce_step"})
    with pytest.raises(RungNotApplicable, match="model.train_step"):
        fit(mlp(digits), digits, TrainConfig(max_epochs=1), batch_loss=lambda out, idx: out.sum(), hooks=step)


def test_distillation_uses_the_loss_as_its_hard_label_term() -> None:
    teacher_out, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    out, idx = torch.randn(4, 3), torch.arange(4)
    constant = distillation_loss(teacher_out, y, "classification", 4.0, alpha=0.0, hard=lambda o, t: torch.tensor(7.0))
    assert constant(out, idx).item() == 7.0
    blended = distillation_loss(teacher_out, y, "classification", 4.0, alpha=0.0, hard=double_ce)
    assert blended(out, idx).item() == pytest.approx(2 * nn.functional.cross_entropy(out, y[:4]).item())


def test_the_metric_is_the_quality_figure_and_names_it(digits: CachedData) -> None:
    trained = mlp(digits)
    fit(trained, digits, TrainConfig(max_epochs=2, batch_size=128))
    metric, why = resolve_quality_metric("auto", digits, f"{HERE}:top2")
    assert metric == f"{HERE}:top2" and "model.metric" in why and quality_tag(metric, digits) == metric
    q = quality(trained, digits, metric=metric)
    with torch.no_grad():
        assert q.accuracy == pytest.approx(top2(trained(digits.x_test), digits.y_test))
    assert q.accuracy != quality(trained, digits).accuracy and q.accuracy_bound95 is None


def test_the_hooks_are_recorded_with_the_model_and_absent_when_unset(digits: CachedData, tmp_path: Path) -> None:
    spec = models.ModelSpec(in_features=digits.n_features, out_features=digits.out_features)
    models.save(models.build(spec), spec, tmp_path / "plain")
    assert "hooks" not in json.loads((tmp_path / "plain" / "spec.json").read_text())  # unchanged when unset
    with_hooks = spec.model_copy(update={"hooks": {"metric": f"{HERE}:top2", "loss": f"{HERE}:double_ce"}})
    pruned_like = with_hooks.model_copy(update={"hidden": [32, 16]})  # derived specs keep them
    _, reloaded = models.load(models.save(models.build(pruned_like), pruned_like, tmp_path / "hooked"))
    assert reloaded.hooks == {"metric": f"{HERE}:top2", "loss": f"{HERE}:double_ce"}


def test_the_scenario_and_the_command_line_set_the_hooks() -> None:
    scenario = parse_scenario({"name": "s", "model": {"loss": f"{HERE}:double_ce"}})
    assert scenario.model.hooks == {"loss": f"{HERE}:double_ce"}
    overridden = scenario.with_model(metric=f"{HERE}:top2", train_step=None)
    assert overridden.model.hooks == {"loss": f"{HERE}:double_ce", "metric": f"{HERE}:top2"}
    with pytest.raises(
        InputError,
        match=r"^model.train_step = 'not-a-function': expected a module path, a colon and a callable's name "
        r"\(PKG.MODULE:FUNCTION",
    ):
        scenario.with_model(train_step="not-a-function")
