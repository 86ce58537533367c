"""Run one scenario (default `dev-cpu`) on a panel of public tables the project was not tuned on.

    pip install -e '.[panel]'     # palmerpenguins and vega_datasets: tables shipped inside the packages
    python benchmarks/panel.py [--scenario dev-cpu] [--tables iris,penguins,...] [--samples N]

Tables, all offline: sklearn's bundled iris, wine, breast_cancer, digits and diabetes (regression),
mnist1d (generated), and three real tables written to CSV exactly as a user would hand them over:
`penguins` (palmerpenguins: missing numbers and sex, text species/island), `cars` (vega_datasets:
missing mpg and horsepower, text name/origin/year) and `seattle_weather` (vega_datasets: text
dates, imbalanced weather classes, judged by balanced accuracy under `quality_metric: auto`).

One row per table: final state, inference and training energy ratios of the model the loop ended
on (the passing one, else the optimised candidate closest to passing) to the baseline, the quality change, iterations
and the reason. The last line is one JSON object:
`{"datasets": {...}, "passed": N, "tried": M, "unreachable": K}`, where "unreachable" counts loops
that ended by showing no rung left could reach a target (reason "unreachable: <target>: ...").

`--max-epochs`, `--min-window-s` and `--repeats-max` override the scenario for a quick smoke run;
the header says so. Figures from a busy machine are not results: run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)

SKLEARN = ("iris", "wine", "breast_cancer", "digits", "diabetes")
TABLES = (*SKLEARN, "mnist1d", "penguins", "cars", "seattle_weather")
UNREACHABLE = "unreachable: "


def _package_table(name: str, folder: Path) -> tuple[str, str]:
    """(CSV path, target) for a table shipped inside a pip package, written as a user would receive it."""
    path = folder / f"{name}.csv"
    if name == "penguins":
        from palmerpenguins import load_penguins

        load_penguins().to_csv(path, index=False)
        return str(path), "species"
    from vega_datasets import local_data

    if name == "cars":
        local_data.cars().to_csv(path, index=False)
        return str(path), "Origin"
    local_data.seattle_weather().to_csv(path, index=False)
    return str(path), "weather"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def run_table(table: str, scenario: str, folder: Path, samples: int | None) -> dict[str, Any]:
    """Prepare the table like the CLI does (data errors before the flow), run the loop, read the outcome."""
    from flows.energy_loop import energy_loop
    from tasks.energy_loop.inputs import check_request, prepare_checked
    from tasks.meters.contention import max_other_share
    from tasks.models.evaluate import quality_tag, resolve_quality_metric
    from thresholds.energy.policy import closest, relative_cost
    from thresholds.energy.request import LoopRequest
    from thresholds.errors import InputError

    dataset, target = (
        _package_table(table, folder) if table in ("penguins", "cars", "seattle_weather") else (table, None)
    )
    size = samples if table == "mnist1d" else None
    work = folder / "work"
    request = LoopRequest(
        scenario=scenario,
        dataset=dataset,
        target=target,
        samples=size,
        model_name=f"panel-{table}",
        work_root=str(work),
    )
    try:
        settings = check_request(request)
        data = prepare_checked(settings, request).data
    except InputError as exc:
        return {"state": "DATA_ERROR", "reason": str(exc)}
    metric, _ = resolve_quality_metric(settings.targets.quality_metric, data)
    outcome = energy_loop(request)
    history = outcome.history
    baseline = history[0]
    # Not passed: the optimised candidate closest to passing (the baseline's own ratios, all 1, would say nothing).
    final = history[outcome.chosen] if outcome.chosen is not None else closest(settings, history, optimised_only=True)
    unreachable = (
        outcome.reason[len(UNREACHABLE) :].split(":", 1)[0] if outcome.reason.startswith(UNREACHABLE) else None
    )
    row: dict[str, Any] = {
        "state": outcome.state,
        "rows": len(data.y_train) + len(data.y_val) + len(data.y_test),
        "task": data.task,
        "quality_metric": quality_tag(metric, data),
        "final_candidate": None if final is None else "+".join(final.lineage) or final.step.label,
        "inference_energy_ratio": None
        if final is None
        else _ratio(relative_cost(final, baseline), 1.0),  # paired where measured so: what the gate judged
        "train_energy_ratio": None
        if final is None
        else _ratio(final.train_energy_j, baseline.train_energy_j),  # as measured
        "train_energy_ratio_priced": None
        if final is None
        else final.train_ratio_vs_baseline,  # priced by work: what the gate judged
        "accuracy_delta_pt": None,
        "rmse_change_pct": None,
        "iterations": len(history),
        "max_other_cpu_share": max_other_share(c.tags for c in history),  # above the scenario's limit: not a result
        "unreachable": unreachable,
        "reason": outcome.reason,
        "data_notes": list(data.notes),
    }
    if final is not None and final.accuracy is not None and baseline.accuracy is not None:
        row["accuracy_delta_pt"] = round((final.accuracy - baseline.accuracy) * 100, 2)
    if final is not None and final.rmse is not None and baseline.rmse:
        row["rmse_change_pct"] = round((final.rmse / baseline.rmse - 1) * 100, 2)
    return row


def _cell(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="dev-cpu")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {', '.join(TABLES)}")
    parser.add_argument("--samples", type=int, default=None, help="mnist1d samples to generate (default 5000)")
    parser.add_argument("--max-epochs", type=int, help="smoke run: override training.max_epochs (and fine_tune_epochs)")
    parser.add_argument("--min-window-s", type=float, help="smoke run: override measurement.min_window_s")
    parser.add_argument("--repeats-max", type=int, help="smoke run: override measurement.repeats_min/repeats_max")
    args = parser.parse_args()
    from thresholds import scenario_with_overrides

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        print(f"panel: error: --tables = {unknown[0]!r}: expected some of {', '.join(TABLES)}", file=sys.stderr)
        return 2
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    overrides: dict[str, dict[str, Any]] = {}
    if args.max_epochs:
        overrides["training"] = {
            "max_epochs": args.max_epochs,
            "fine_tune_epochs": args.max_epochs,
            "patience": min(5, args.max_epochs),
        }
    if args.min_window_s:
        overrides.setdefault("measurement", {})["min_window_s"] = args.min_window_s
    if args.repeats_max:
        overrides.setdefault("measurement", {}).update(
            {"repeats_min": min(3, args.repeats_max), "repeats_max": args.repeats_max}
        )

    from flows.prefect_api import LoopServices, api_settings

    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="panel-") as tmp,
        api_settings(LoopServices().ready()),
    ):  # as `energy-loop run` starts it
        folder = Path(tmp)
        scenario = str(scenario_with_overrides(args.scenario, overrides, folder))
        for table in tables:
            started = time.perf_counter()
            try:
                results[table] = run_table(table, scenario, folder, args.samples)
            except Exception as exc:  # one table failing must not hide the others' results
                first = str(exc).splitlines()[0] if str(exc) else ""
                results[table] = {"state": "ERROR", "reason": f"{type(exc).__name__}: {first}"[:300]}
            results[table]["wall_s"] = round(time.perf_counter() - started, 1)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # no Prefect line may follow the JSON

    print()
    print(
        f"Scenario {args.scenario}"
        + (f", smoke overrides {json.dumps(overrides)}" if overrides else "")
        + ". Energy ratios: final model / baseline, same run."
    )
    print()
    print("| table | rows | metric | state | inference x | training x | quality delta | iterations | reason |")
    print("|---|---|---|---|---|---|---|---|---|")
    for table, r in results.items():
        delta = (
            f"{r['accuracy_delta_pt']:+.2f} pt"
            if r.get("accuracy_delta_pt") is not None
            else _cell(r.get("rmse_change_pct"), "+.2f") + (" % rmse" if r.get("rmse_change_pct") is not None else "")
        )
        print(
            f"| {table} | {_cell(r.get('rows'))} | {r.get('quality_metric', '-')} | {r['state']} | "
            f"{_cell(r.get('inference_energy_ratio'), '.3f')} | {_cell(r.get('train_energy_ratio'), '.3f')} | "
            f"{delta} | {_cell(r.get('iterations'))} | {r['reason'][:160]} |"
        )
    summary = {
        "datasets": results,
        "passed": sum(r["state"] == "PASSED" for r in results.values()),
        "tried": len(results),
        "unreachable": sum(r.get("unreachable") is not None for r in results.values()),
    }
    print()
    emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
