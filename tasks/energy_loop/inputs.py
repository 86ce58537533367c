"""Every input of the energy loop checked before anything is measured, logged or registered.

One place for every entry that starts the loop: the CLI (before the flow starts, so an error is its
only line), `trigger` (what the client can check) and the flow's first task (deployment and scheduled
runs, and Python callers). A problem is one `InputError` line: the field, the value, what was expected.

    # reads no data
    settings = check_arguments(scenario, dataset, samples, image_size, parallel, model_factory, hooks, image_cache)
    prepared = prepare_checked(settings, dataset, cache_dir, target, samples, task_type, image_size, image_cache)
    check_overrides(params)  # `trigger`: what a client can check of a deployment run's parameters

Only thresholds/ at import: `trigger` runs in the CI job's client install, which has no training
stack (pyproject's `client` group); the data and model checks import it when they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.data.images import check_image_cache
from tasks.data.preprocess import MIN_ROWS
from thresholds import scenario_path
from thresholds.core import METER_NAMES
from thresholds.energy.schema import Scenario, load_scenario
from thresholds.errors import InputError
from thresholds.parallel import requested_width

if TYPE_CHECKING:
    from tasks.data.datasets import CachedData

TASK_TYPES = ("auto", "classification", "regression")


def parse_size(value: str) -> tuple[int, int]:
    """`HxW` (or one number for a square) as (height, width)."""
    parts = value.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= 4096 for p in parts):
        raise InputError("--image-size", value, "HxW in pixels, e.g. 32x32 (or 32), each from 1 to 4096")
    return int(parts[0]), int(parts[1])


def check_samples(samples: object) -> None:
    if samples is not None and (not isinstance(samples, int) or samples < MIN_ROWS):
        raise InputError("--samples", samples, f"an integer >= {MIN_ROWS}")


def check_arguments(
    scenario: str,
    dataset: str,
    samples: int | None = None,
    image_size: str | None = None,
    parallel: int | str = 1,
    model_factory: str | None = None,
    hooks: Mapping[str, str | None] | None = None,
    image_cache: str = "auto",
) -> Scenario:
    """The checks that read no data: the scenario (a bundled name or a file; `--model` and the hooks,
    {"loss"|"metric"|"train_step": PKG.MODULE:FUNCTION}, override its model section), the kind of dataset,
    the sample count, the image size and cache mode, and the width. Raises InputError."""
    from tasks.data.datasets import resolve_source

    settings = load_scenario(scenario_path(scenario)).with_model(factory=model_factory, **(hooks or {}))
    resolve_source(dataset)
    if image_size:
        parse_size(image_size)
    check_image_cache(image_cache)
    check_samples(samples)
    requested_width(parallel)
    return settings


@dataclass(frozen=True)
class Prepared:
    """The data as the flow will read it (cached at `data_path`) and what the user's model factory built."""

    data_path: str
    data: CachedData
    model: str  # "" for the scenario's own MLP


def prepare_checked(
    settings: Scenario,
    dataset: str,
    cache_dir: Path,
    target: str | None,
    samples: int | None,
    task_type: str,
    image_size: str | None,
    image_cache: str = "auto",
) -> Prepared:
    """Prepare the data once (the flow reads the cache), try the model factory on it, and the user's
    loss, metric and training step on 4 training samples.

    Raises InputError; any other failure reading the data becomes one naming the dataset (chained, for
    a traceback on request). An OSError writing the cache is not bad input and goes up as it is."""
    from tasks.data.datasets import load_cached, prepare
    from tasks.energy_loop.candidate import model_spec
    from tasks.models import factory as models
    from tasks.models import hooks
    from tasks.models.train import loss_targets
    from tasks.models.user_model import check_factory

    try:
        size = parse_size(image_size) if image_size else None
        cache = prepare(
            dataset,
            cache_dir,
            target,
            samples,
            task_type,  # type: ignore[arg-type]
            settings.training.seed,
            image_size=size,
            image_cache=image_cache,
        )
        data = load_cached(str(cache))
    except (InputError, OSError):
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise InputError(
            "dataset", dataset, f"data that can be prepared (preparing it raised {type(exc).__name__}: {first})"
        ) from exc
    model = ""
    if settings.model.factory:
        checked = check_factory(
            settings.model.factory, data.input_shape, data.out_features, settings.training.batch_size
        )
        model = (
            f"{checked.type_name}, {checked.params:,} parameters, input {data.input_shape} -> "
            f"{data.out_features} outputs"
        )
    if settings.model.hooks:
        hooks.check(
            settings.model.hooks,
            models.build(model_spec(settings, data)),
            data.batch("train", loss_targets(data.y_train, data.task), slice(0, 4)),
        )
    return Prepared(str(cache), data, model)


def check_overrides(params: Mapping[str, object]) -> None:
    """A deployment run's parameters, as far as a client can check them: every value whose meaning does
    not depend on the worker, and a scenario file this checkout has. The dataset, a scenario only the
    worker has and the user's modules are the worker's: its flow run's first task checks them. Raises InputError."""
    check_samples(params.get("samples"))
    if params.get("image_size") is not None:
        parse_size(str(params["image_size"]))
    if params.get("image_cache") is not None:
        check_image_cache(params["image_cache"])
    if params.get("meter") is not None and params["meter"] not in METER_NAMES:
        raise InputError("meter", params["meter"], f"one of {', '.join(METER_NAMES)}")
    if params.get("task_type") is not None and params["task_type"] not in TASK_TYPES:
        raise InputError("task_type", params["task_type"], f"one of {', '.join(TASK_TYPES)}")
    if params.get("scenario") is not None and scenario_path(str(params["scenario"])).is_file():
        load_scenario(scenario_path(str(params["scenario"])))
