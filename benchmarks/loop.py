"""Run the loop once on a scenario and print what it achieved, measured in this one run.

    python benchmarks/loop.py [--scenario dev-cpu] [--dataset mnist1d] [--samples N]

Prints a readable table, then one JSON object on the last line. Ratios compare the
candidate the loop ended on (the passing one, else the closest) with the baseline
measured in the same run, by the same meter.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="dev-cpu")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--model-name", default="benchmark-loop")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from flows.energy_loop import energy_loop
    from thresholds import scenario_path
    from thresholds.energy.policy import closest
    from thresholds.energy.schema import load_scenario

    path = scenario_path(args.scenario)
    started = time.perf_counter()
    outcome = energy_loop(scenario=str(path), dataset=args.dataset, samples=args.samples, model_name=args.model_name)
    wall_s = time.perf_counter() - started

    history = outcome.history
    baseline = history[0]
    final = history[outcome.chosen] if outcome.chosen is not None else closest(load_scenario(path), history)
    assert final is not None, "no candidate was trained"
    busy_s = sum(c.train_s + c.measure_s for c in history)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round(a / b, 4)

    figures = {
        "scenario": load_scenario(path).name,
        "dataset": args.dataset,
        "final_state": outcome.state,
        "final_candidate": "+".join(final.lineage) or final.step.label,
        "inference_energy_ratio": ratio(final.inference_energy_j_per_1k, baseline.inference_energy_j_per_1k),
        "train_energy_ratio": ratio(final.train_energy_j, baseline.train_energy_j),
        "latency_ratio": ratio(final.latency_ms_per_batch, baseline.latency_ms_per_batch),
        "accuracy_delta_pt": None if final.accuracy is None or baseline.accuracy is None else round((final.accuracy - baseline.accuracy) * 100, 2),
        "baseline_accuracy": baseline.accuracy,
        "final_accuracy": final.accuracy,
        "iterations": len(history),
        "wall_s": round(wall_s, 1),
        "overhead_share": round(1 - busy_s / wall_s, 3),
        "energy_source": final.energy_source,
        "energy_estimated": final.estimated,
    }
    logging.getLogger("prefect").setLevel(logging.WARNING)  # the ephemeral server's shutdown line must not follow the JSON
    print(outcome.table_md)
    print()
    print(f"{outcome.state}: {outcome.reason}")
    for key, value in figures.items():
        print(f"  {key:24s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
