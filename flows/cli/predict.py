"""`energy-loop predict`: batch-score a table or an image folder with a registered version, measuring its energy."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Any

from flows.cli.common import EXIT_BAD_INPUT, EXIT_NOT_PASSED


def add_parsers(sub: Any) -> None:
    score = sub.add_parser(
        "predict",
        help="batch-score a CSV/Parquet file or an image folder with a registered version, measuring its energy",
    )
    score.add_argument("model", help="NAME@ALIAS, NAME/VERSION, or NAME (its champion)")
    score.add_argument(
        "--input",
        required=True,
        help="a .csv or .parquet file with the model's input columns, or a folder of images for an image model",
    )
    score.add_argument("--output", required=True, help="where to write the predictions (.csv or .parquet)")
    score.add_argument(
        "--batch-size", type=int, help="rows per batch (default: the version's deployment.energy_optimal_batch_size)"
    )
    score.set_defaults(handler=predict, stopped="nothing written, nothing recorded on the version")


DEFAULT_PREDICT_BATCH = 1024


def predict(args: argparse.Namespace) -> int:
    """Score a table at the version's energy-optimal batch size; log the energy it measured to the version."""
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from registry import keys, mlflow_model
    from registry.store import client
    from tasks.meters.select import make_meter
    from tasks.serving import scorer as serving
    from thresholds.errors import InputError

    def bad(message: str) -> int:
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    source, target = Path(args.input), Path(args.output)
    if args.batch_size is not None and args.batch_size < 1:
        return bad(f"--batch-size = {args.batch_size}: expected an integer >= 1")
    images = source.is_dir()  # an image folder for an image model: decoded once the version's recorded size is known
    try:
        serving.check_output_path(target)
        frame = None if images else serving.read_table(source)
    except InputError as exc:
        return bad(str(exc))
    mc = client()
    name, ref = mlflow_model.parse_ref(args.model)
    try:
        version = mlflow_model.resolve_version(mc, name, ref)
    except LookupError as exc:
        return bad(str(exc))
    tags = dict(version.tags)
    recorded = tags.get(keys.DEPLOYMENT_ENERGY_OPTIMAL_BATCH_SIZE, "")
    batch_size = args.batch_size or (int(recorded) if recorded.isdigit() else DEFAULT_PREDICT_BATCH)
    pyfunc = mlflow_model.load_pyfunc(mc, name, str(version.version))
    scorer = pyfunc.unwrap_python_model().scorer
    try:
        if frame is None:
            rows = serving.images_to_score(source, scorer, batch_size)  # decoded chunk by chunk while scoring
        else:
            scorer.check(frame, where=f"input {source}")
            rows = serving.table_to_score(frame)
    except InputError as exc:
        return bad(str(exc))
    meter_name, power_w = serving.meter_setting(tags)
    meter = make_meter(meter_name, power_w)
    why = (
        "recorded energy-optimal"
        if args.batch_size is None and recorded.isdigit()
        else "given"
        if args.batch_size
        else "default"
    )
    print(
        f"scoring {rows.rows} rows with {name} version {version.version} at batch size {batch_size} ({why}), meter "
        f"{meter.source}",
        file=sys.stderr,
    )

    def progress(done: int) -> None:
        filled = 30 * done // rows.rows
        end = "\n" if done == rows.rows else ""
        print(
            f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done}/{rows.rows} rows", end=end, file=sys.stderr, flush=True
        )

    check = (
        None if frame is not None else functools.partial(scorer.check, where=f"input {source}")
    )  # a table was checked whole, above
    try:
        predictions, report = serving.score(pyfunc.predict, rows, batch_size, meter, progress, check)
    except MlflowException as exc:  # the signature refused a value (e.g. a fraction in an integer column)
        print(file=sys.stderr)
        return bad(f"input {source}: {str(exc).splitlines()[0][:300]}")
    except InputError as exc:  # an image that breaks mid-stream: named, and nothing is written
        print(file=sys.stderr)
        return bad(str(exc))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the progress line ends before the command's one line
        print(file=sys.stderr)
        raise
    finally:
        meter.close()
    if rows.files is not None:
        predictions.insert(0, serving.FILE_COLUMN, rows.files)
    try:
        serving.write_table(predictions, target)
    except OSError as exc:
        print(f"{args.prog}: FAILED: could not write {target}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NOT_PASSED
    details = {
        "rows": str(report.rows),
        "batch_size": str(report.batch_size),
        "energy_source": report.source,
        "energy_estimated": str(report.estimated).lower(),
        "duration_s": f"{report.duration_s:.4g}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mlflow_model.record_observed(mc, name, str(version.version), report.energy_j_per_1k, details)
    loop = tags.get(keys.INFERENCE_ENERGY_J_PER_1K, "not recorded")
    label = "estimated" if report.estimated else "measured"
    print(f"wrote {report.rows} predictions to {target} in {report.duration_s:.2f} s")
    print(
        f"energy: {report.energy_j_per_1k:.6g} J per 1k predictions ({label}, {report.source}); the loop measured "
        f"{loop} J per 1k"
    )
    return 0
