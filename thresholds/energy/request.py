"""`LoopRequest`: every option of one energy-loop run, checked field by field (see thresholds/request.py).

    request = LoopRequest(scenario="dev-cpu", dataset="digits", samples=2000)
    energy_loop(request)                                   # flows/energy_loop.py; a dict of the same keys works too

The checks here need neither the data nor the user's code (types, ranges, choices, the HxW format, the
width); those that do are in tasks/energy_loop/inputs.py and take the request.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thresholds.core import MeterName
from thresholds.errors import InputError
from thresholds.parallel import requested_width
from thresholds.request import Option

MIN_ROWS = 20  # the fewest rows (or images, or samples) a dataset may have: every split needs some
MAX_IMAGE_SIDE = 4096
IMAGE_SIZE = f"HxW in pixels, e.g. 32x32 (or 32), each from 1 to {MAX_IMAGE_SIDE}"
ImageCache = Literal["memory", "stream", "auto"]
IMAGE_CACHE_MODES: tuple[str, ...] = get_args(ImageCache)  # pre-cache an image folder, decode on the fly, or pick
TaskType = Literal["auto", "classification", "regression"]


def parse_size(value: str) -> tuple[int, int]:
    """`HxW` (or one number for a square) as (height, width); ValueError saying what was expected."""
    parts = value.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and 1 <= int(p) <= MAX_IMAGE_SIDE for p in parts):
        raise ValueError(IMAGE_SIZE)
    return int(parts[0]), int(parts[1])


class LoopRequest(BaseModel):
    """The options of one energy-loop run. Built once by each entry point and passed whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TITLE: ClassVar[str] = "energy loop"
    FLOW_NAME: ClassVar[str] = "energy-loop"  # the Prefect flow that takes it (`trigger --deployment FLOW/NAME`)

    scenario: Annotated[
        str,
        Field(description="thresholds YAML file, or a bundled name: dev-cpu, strict, impossible"),
        Option("--scenario"),
    ]
    dataset: Annotated[
        str,
        Field(
            description="mnist1d, digits, ..., a .csv/.parquet file, a folder of .parquet/.csv parts, a SQL source "
            "(postgresql://user@host/db?table=NAME or ?query=SELECT ..., see tasks/data/sources.py), an image folder "
            "(one subfolder per class, PNG/JPEG), or PKG.MODULE:FUNCTION returning the splits (see "
            "tasks/data/user_data.py)"
        ),
        Option("--dataset"),
    ]
    target: Annotated[str | None, Field(description="target column of a CSV/Parquet dataset"), Option("--target")] = (
        None
    )
    model_name: Annotated[
        str | None,
        Field(description="registered model name (default: energy-loop-<dataset>)"),
        Option("--model-name"),
    ] = None
    samples: Annotated[
        int | None,
        Field(ge=MIN_ROWS, description="number of samples to use (mnist1d generates this many; default 5000)"),
        Option("--samples", expected=f"an integer >= {MIN_ROWS}"),
    ] = None
    task_type: Annotated[TaskType, Field(description="task type of a file dataset"), Option("--task")] = "auto"
    meter: Annotated[
        MeterName | None, Field(description="energy meter (default: the scenario's)"), Option("--meter")
    ] = None
    work_root: Annotated[
        str,
        Field(description="folder for cached data and candidate models (default .energy-loop)"),
        Option("--work-dir"),
    ] = ".energy-loop"
    parallel: Annotated[
        int | Literal["auto"],
        Field(
            description="candidates of a rung trained at once on Dask workers: auto: only where the parallel "
            "calibration, real rungs of this workload through the loop's own task path, measured it saving both wall "
            "time and energy beyond the noise here; N to force N (1: serial, in process). Default: auto for `run`, "
            "1 for a deployment or a Python call"
        ),
        Option("--parallel", command_default="auto"),
    ] = 1
    dask_address: Annotated[
        str | None,
        Field(description="train on an existing Dask cluster at this address (e.g. tcp://host:8786) instead of a "
              "local one"),
        Option("--dask-address"),
    ] = None  # fmt: skip
    model_factory: Annotated[
        str | None,
        Field(
            description="your model: PKG.MODULE:FACTORY, called as FACTORY(input_shape=(...), n_outputs=K) (sets "
            "model.factory)"
        ),
        Option("--model"),
    ] = None
    image_size: Annotated[
        str | None,
        Field(description="HxW: resize every image of an image folder to this size (mixed sizes are refused "
              "without it)"),
        Option("--image-size"),
    ] = None  # fmt: skip
    image_cache: Annotated[
        ImageCache,
        Field(
            description="an image folder's decoded tensors: pre-cached in memory, or decoded on the fly by DataLoader "
            "workers (stream); auto (default): memory when the folder as float32 fits in a quarter of RAM"
        ),
        Option("--image-cache"),
    ] = "auto"
    model_loss: Annotated[
        str | None,
        Field(description="your loss: PKG.MODULE:FUNCTION, (outputs, targets) -> scalar tensor (sets model.loss)"),
        Option("--loss"),
    ] = None
    model_metric: Annotated[
        str | None,
        Field(
            description="your quality metric: PKG.MODULE:FUNCTION, (outputs, targets) -> float in [0, 1], higher is "
            "better (sets model.metric)"
        ),
        Option("--metric"),
    ] = None
    model_train_step: Annotated[
        str | None,
        Field(
            description="your training step: PKG.MODULE:FUNCTION, (model, batch as items) -> scalar loss tensor (sets "
            "model.train_step)"
        ),
        Option("--train-step"),
    ] = None

    serving_batch_sizes: Annotated[
        list[int] | None,
        Field(
            description="measure and judge inference at these batch sizes, e.g. 1,64 (sets "
            "measurement.serving_batch_sizes; a production breach passes the batch sizes serving observed)"
        ),
        Option("--serving-batch-sizes", expected="comma-separated batch sizes from 1 to 1000000, e.g. 1,64"),
    ] = None

    production_breach: Annotated[
        list[Literal["energy", "latency", "quality"]] | None,
        Field(
            description="the figures a production breach missed, when one started this run (set by the "
            "production-retrain automation; its versions carry them, so a second miss climbs to production.stricter)"
        ),
        Option("--production-breach", expected="comma-separated figures: energy, latency, quality"),
    ] = None

    @field_validator("production_breach", mode="before")
    @classmethod
    def _figures(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("serving_batch_sizes", mode="before")
    @classmethod
    def _batch_sizes(cls, value: object) -> object:
        if isinstance(value, str):  # the command line's and `trigger --param`'s form
            try:
                value = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError("comma-separated batch sizes from 1 to 1000000, e.g. 1,64") from None
        if isinstance(value, list) and not (value and all(type(v) is int and 1 <= v <= 1_000_000 for v in value)):
            raise ValueError("comma-separated batch sizes from 1 to 1000000, e.g. 1,64")
        return sorted(set(value)) if isinstance(value, list) else value

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: str | None) -> str | None:
        if value:
            parse_size(value)
        return value

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel(cls, value: object) -> object:
        try:
            width = requested_width(value)  # type: ignore[arg-type]  # any value: refused in one line
        except InputError as exc:
            raise ValueError(exc.expected) from None
        return "auto" if width is None else width

    @property
    def hooks(self) -> dict[str, str | None]:
        """`--loss`, `--metric`, `--train-step`: they override the scenario's model.loss, .metric, .train_step."""
        return {"loss": self.model_loss, "metric": self.model_metric, "train_step": self.model_train_step}
