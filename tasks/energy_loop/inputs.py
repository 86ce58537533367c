"""The checks of an energy-loop request that need more than its fields: the scenario, the data, the user's code.

The request itself (types, ranges, choices, formats) is checked where it is built
(`thresholds/energy/request.py`); what follows takes it, in the same place for every entry that starts
the loop: the CLI (before the flow starts, so an error is its only line), `trigger` (what the client can
check) and the flow's first task (deployment and scheduled runs, and Python callers). A problem is one
`InputError` line: the field, the value, what was expected.

    settings = check_request(request)            # the scenario with the request's model overrides; reads no data
    prepared = prepare_checked(settings, request)  # the data prepared once (the flow reads the cache), the model tried
    check_on_client(request, given)             # `trigger`: a scenario file this checkout has

Only thresholds/ at import: `trigger` runs in the CI job's client install, which has no training
stack (pyproject's `client` group); the data and model checks import it when they run.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thresholds import scenario_path
from thresholds.energy.request import LoopRequest, parse_size
from thresholds.energy.schema import Scenario, load_scenario
from thresholds.errors import InputError

if TYPE_CHECKING:
    from tasks.data.datasets import CachedData


def cache_dir(request: LoopRequest) -> Path:
    """Where the prepared data is cached: the CLI prepares it there, the flow reads it from there."""
    return Path(request.work_root) / "cache"


def check_request(request: LoopRequest) -> Scenario:
    """The checks that read no data: the scenario (a bundled name or a file; `--model` and the hooks override its
    model section) and the kind of dataset. Raises InputError."""
    from tasks.data.datasets import resolve_source

    settings = load_scenario(scenario_path(request.scenario)).with_model(factory=request.model_factory, **request.hooks)
    if request.serving_batch_sizes is not None:
        settings = settings.with_section("measurement", serving_batch_sizes=request.serving_batch_sizes)
    resolve_source(request.dataset)
    return settings


@dataclass(frozen=True)
class Prepared:
    """The data as the flow will read it (cached at `data_path`) and what the user's model factory built."""

    data_path: str
    data: CachedData
    model: str  # "" for the scenario's own MLP


def prepare_checked(settings: Scenario, request: LoopRequest) -> Prepared:
    """Prepare the data once (the flow reads the cache), try the model factory on it, and the user's
    loss, metric and training step on 4 training samples.

    Raises InputError; any other failure reading the data becomes one naming the dataset (chained, for
    a traceback on request). An OSError writing the cache is not bad input and goes up as it is."""
    from tasks.data.datasets import ImageOptions, load_cached, prepare
    from tasks.data.sources import masked
    from tasks.energy_loop.candidate import model_spec
    from tasks.models import factory as models
    from tasks.models import hooks
    from tasks.models.train import loss_targets
    from tasks.models.user_model import check_factory

    try:
        cache = prepare(
            request.dataset,
            cache_dir(request),
            request.target,
            request.samples,
            request.task_type,
            settings.training.seed,
            folder=ImageOptions(parse_size(request.image_size) if request.image_size else None, request.image_cache),
        )
        data = load_cached(str(cache))
    except (InputError, OSError):
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise InputError(
            "dataset",
            masked(request.dataset),
            f"data that can be prepared (preparing it raised {type(exc).__name__}: {first})",
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


def check_on_client(request: LoopRequest, given: Collection[str]) -> None:
    """What a client can check of a deployment run's request beyond its fields: a scenario it was given that
    this checkout has. The dataset, a scenario only the worker has and the user's modules are the worker's:
    its flow run's first task checks them. Raises InputError."""
    if "scenario" in given and scenario_path(request.scenario).is_file():
        load_scenario(scenario_path(request.scenario))
