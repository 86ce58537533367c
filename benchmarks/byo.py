"""Bring your own model and data: run the loop on each example of `examples/`, in one process.

    python benchmarks/byo.py [--scenario byo-cpu] [--examples resnet,transformer,resnet18] [--samples N]
                             [--max-epochs N] [--min-window-s S] [--repeats-max N]

The examples, as a user would run them:
  resnet       examples.resnet_digits:make     on sklearn's digits written as a 32x32 PNG folder
                                               (examples/make_digits_images.py)
  transformer  examples.transformer_seq:make   on mnist1d as 40-step sequences (examples/mnist1d_sequence.py:load)
  resnet18     examples.vision_resnet18:make   on the same PNG folder; where torchvision is installed
                                               (`pip install -e '.[vision]'`; tasks/models/vision_compat.py)

For each: the baseline and the model the loop ended on (the passing one, else the optimised candidate closest to
passing), measured in the same run by the same meter. A table, then ONE JSON line:
`{"models": {NAME: {"final_state", "inference_energy_ratio", "train_energy_ratio", "accuracy_delta_pt", "params_ratio",
"macs_ratio"}}}`.
`--samples` shrinks every dataset (images per folder, mnist1d signals); `--max-epochs`, `--min-window-s` and
`--repeats-max` override the scenario for a quick smoke run, and the header says so. Figures from a busy
machine are not results: run it alone on the machine.
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

EXAMPLES = {
    "resnet": ("examples.resnet_digits:make", "digits_png"),
    "transformer": ("examples.transformer_seq:make", "examples.mnist1d_sequence:load"),
    "resnet18": ("examples.vision_resnet18:make", "digits_png"),
}
# Issue 14's goal per example (inference energy vs the baseline): the loop stops at the first candidate that
# passes, so each example's loop targets its own goal (the scenario's other targets stay as they are).
GOALS = {"resnet": 0.35, "transformer": 0.6, "resnet18": 0.35}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def run_example(name: str, scenario: str, folder: Path, samples: int | None) -> dict[str, Any]:
    """Prepare and check like the CLI does (errors before the flow), run the loop, read the outcome."""
    from flows.energy_loop import energy_loop
    from tasks.energy_loop.inputs import check_request, prepare_checked
    from tasks.meters.contention import max_other_share
    from thresholds.energy.policy import closest, relative_cost
    from thresholds.energy.request import LoopRequest

    factory, dataset = EXAMPLES[name]
    if dataset == "digits_png":
        dataset = str(folder / "digits_png")
        if not Path(dataset).is_dir():
            from examples.make_digits_images import write

            write(Path(dataset), size=32)
    request = LoopRequest(
        scenario=scenario,
        dataset=dataset,
        samples=samples,
        model_name=f"byo-{name}",
        work_root=str(folder / "work"),
        model_factory=factory,
    )
    settings = check_request(request)
    prepare_checked(settings, request)
    outcome = energy_loop(request)
    history = outcome.history
    baseline = history[0]
    # Not passed: the optimised candidate closest to passing (the baseline's own ratios, all 1, would say nothing).
    final = history[outcome.chosen] if outcome.chosen is not None else closest(settings, history, optimised_only=True)
    row: dict[str, Any] = {
        "final_state": outcome.state,
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
        "params_ratio": None if final is None else _ratio(final.params, baseline.params),
        "macs_ratio": None if final is None else _ratio(final.macs, baseline.macs),
        "baseline_accuracy": baseline.accuracy,
        "iterations": len(history),
        "max_other_cpu_share": max_other_share(c.tags for c in history),  # above the scenario's limit: not a result
        "reason": outcome.reason,
    }
    if final is not None and final.accuracy is not None and baseline.accuracy is not None:
        row["accuracy_delta_pt"] = round((final.accuracy - baseline.accuracy) * 100, 2)
    return row


def _cell(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenario", default="byo-cpu", help="default byo-cpu: the issue's goals, inference judged at batch 256"
    )
    parser.add_argument(
        "--examples", default=",".join(EXAMPLES), help=f"comma-separated subset of {', '.join(EXAMPLES)}"
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="images per folder / mnist1d signals to use (default: all / 5000)"
    )
    parser.add_argument("--max-epochs", type=int, help="smoke run: override training.max_epochs (and fine_tune_epochs)")
    parser.add_argument("--min-window-s", type=float, help="smoke run: override measurement.min_window_s")
    parser.add_argument("--repeats-max", type=int, help="smoke run: override measurement.repeats_min/repeats_max")
    args = parser.parse_args()
    from tasks.models import vision_compat
    from thresholds import scenario_with_overrides

    names = [n.strip() for n in args.examples.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        print(f"byo: error: --examples = {unknown[0]!r}: expected some of {', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    why = vision_compat.unavailable() if "resnet18" in names else None
    if why:
        print(f"byo: resnet18 skipped: {why}", file=sys.stderr)
        names.remove("resnet18")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.chdir(
        Path(__file__).resolve().parent.parent
    )  # `examples.*` import from the repository root, as from a user's working directory
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
    # The loops talk to one local Prefect server started as `energy-loop run` starts it, not Prefect's temporary
    # server (which went away under a 25-minute ResNet-18 loop here, "Connection refused" at its closing stage).
    with tempfile.TemporaryDirectory(prefix="byo-") as tmp, api_settings(LoopServices().ready()):
        folder = Path(tmp)
        for name in names:
            goal: dict[str, dict[str, Any]] = {"targets": {"max_inference_energy_vs_baseline": GOALS[name]}}
            scenario = str(scenario_with_overrides(args.scenario, {**overrides, **goal}, folder, suffix=name))
            started = time.perf_counter()
            try:
                results[name] = run_example(name, scenario, folder, args.samples)
            except Exception as exc:  # one example failing must not hide the others' results
                first = str(exc).splitlines()[0] if str(exc) else ""
                results[name] = {"final_state": "ERROR", "reason": f"{type(exc).__name__}: {first}"[:300]}
            results[name]["wall_s"] = round(time.perf_counter() - started, 1)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # no Prefect line may follow the JSON

    print()
    goals = ", ".join(f"{n} {GOALS[n]}x" for n in names)
    print(
        f"Scenario {args.scenario}, inference target per example ({goals})"
        + (f", smoke overrides {json.dumps(overrides)}" if overrides else "")
        + ". Ratios: final model / baseline, same run."
    )
    print()
    print(
        "| example | model | state | inference x | training x | accuracy delta | params x | MACs x | "
        "iterations | reason |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        delta = _cell(r.get("accuracy_delta_pt"), "+.2f") + (" pt" if r.get("accuracy_delta_pt") is not None else "")
        ratios = " | ".join(_cell(r.get(k), ".3f") for k in ("inference_energy_ratio", "train_energy_ratio"))
        shrink = " | ".join(_cell(r.get(k), ".3f") for k in ("params_ratio", "macs_ratio"))
        print(
            f"| {name} | {EXAMPLES[name][0]} | {r['final_state']} | {ratios} | {delta} | {shrink} | "
            f"{_cell(r.get('iterations'))} | {r['reason'][:160]} |"
        )
    keys = (
        "final_state",
        "inference_energy_ratio",
        "train_energy_ratio",
        "train_energy_ratio_priced",
        "accuracy_delta_pt",
        "params_ratio",
        "macs_ratio",
    )
    print()
    emit({"models": {name: {k: r.get(k) for k in keys} for name, r in results.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
