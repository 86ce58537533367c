"""torch vs ONNX Runtime inference energy, per model and batch size, measured in one run.

    pip install -e '.[onnx]'
    python benchmarks/onnx_runtime.py [--dataset mnist1d] [--samples 4000] [--batch-sizes 1 64 4096] [--window-s 1.0] [--repeats 5]

For the models of the paper table (the MLP 64-32, the same MLP pruned to 32-16, the 1-D CNN),
with fresh weights (energy and latency do not depend on the weights' values), each is exported to
ONNX (`tasks/onnx_runtime.py`), quantized to INT8 by onnxruntime, and logged with MLflow's onnx
flavour (experiment `onnx-runtime`). Then, at each batch size, torch fp32, onnxruntime fp32 and
onnxruntime INT8 are measured with the loop's own method (`measure_inference`: repeated windows
of at least --window-s, mean and standard error), in ABBA order (torch, ort, ort, torch) so that a
drift of the machine touches both alike. Prints a table, then one JSON object on the last line.
Energies are labelled with the meter's source; on a machine without RAPL they are estimates.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 4096])
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="windows per runtime and batch size (split in ABBA halves)")
    parser.add_argument("--meter", default="auto")
    args = parser.parse_args()
    if args.repeats < 2 or any(b < 1 for b in args.batch_sizes):
        print("onnx_runtime.py: error: --repeats >= 2 and batch sizes >= 1 expected", file=sys.stderr)
        return 2
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import torch

    from registry import core as tracking
    from registry import mlflow_model
    from tasks import data as data_mod
    from tasks import models, onnx_runtime
    from tasks.energy.select import make_meter
    from tasks.evaluate import measure_inference

    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    data = data_mod.load_cached(str(data_mod.prepare(args.dataset, work / "cache", samples=args.samples)))
    meter = make_meter(args.meter)
    specs = {
        "mlp 64-32": models.ModelSpec(in_features=data.n_features, out_features=data.out_features),
        "mlp 32-16 (pruned 50 %)": models.ModelSpec(in_features=data.n_features, out_features=data.out_features, hidden=[32, 16]),
        "cnn1d": models.ModelSpec(kind="cnn1d", in_features=data.n_features, out_features=data.out_features),
    }
    mc = tracking.client()
    experiment = mc.get_experiment_by_name("onnx-runtime")
    run = mc.create_run(experiment.experiment_id if experiment else mc.create_experiment("onnx-runtime"), run_name="onnx-runtime")
    rows: list[str] = []
    results: dict[str, dict[str, object]] = {}
    for label, spec in specs.items():
        torch.manual_seed(0)
        model_dir = models.save(models.build(spec), spec, work / label.split()[0] / str(len(results)))
        fp32_path = onnx_runtime.export(model_dir, work / f"{len(results)}.onnx")
        int8_path = onnx_runtime.quantize_int8(fp32_path, work / f"{len(results)}-int8.onnx")
        mlflow_model.log_onnx(mc, run.info.run_id, fp32_path, tags={"model": label, "precision": "fp32"})
        fp32_model, saved = models.load(model_dir)
        torch_model = models.to_precision(fp32_model, saved.precision)
        runtimes = {"torch": torch_model, "ort": onnx_runtime.OrtModule(fp32_path), "ort-int8": onnx_runtime.OrtModule(int8_path)}
        with torch.no_grad():
            gap = (runtimes["ort"](data.x_test[:64]) - torch_model(data.x_test[:64])).abs().max().item()
        for batch in args.batch_sizes:
            half = args.repeats // 2
            order = ["torch", "ort", "ort-int8", "ort-int8", "ort", "torch"]  # ABBA over three runtimes
            windows: dict[str, list[float]] = {name: [] for name in runtimes}
            latency: dict[str, list[float]] = {name: [] for name in runtimes}
            for name in order:
                report = measure_inference(
                    runtimes[name], data, meter, batch, args.window_s, label=f"{label} {name} b{batch}", repeats_min=half, repeats_max=half
                )
                windows[name].append(report.energy_j_per_1k)
                latency[name].append(report.latency_ms_per_batch)
            mean = {name: sum(v) / len(v) for name, v in windows.items()}
            spread = {name: (max(v) - min(v)) / 2 for name, v in windows.items()}
            entry = {
                "torch_j_per_1k": mean["torch"],
                "ort_j_per_1k": mean["ort"],
                "ort_int8_j_per_1k": mean["ort-int8"],
                "ort_vs_torch": mean["ort"] / mean["torch"] if mean["torch"] > 0 else math.nan,
                "ort_int8_vs_torch": mean["ort-int8"] / mean["torch"] if mean["torch"] > 0 else math.nan,
                "torch_ms_per_batch": sum(latency["torch"]) / 2,
                "ort_ms_per_batch": sum(latency["ort"]) / 2,
                "halves_spread_j_per_1k": spread,
                "max_abs_output_gap": gap,
            }
            results[f"{label} @ {batch}"] = entry
            rows.append(
                f"| {label} | {batch} | {mean['torch']:.4g} | {mean['ort']:.4g} | {mean['ort-int8']:.4g} | "
                f"{entry['ort_vs_torch']:.2f}x | {entry['ort_int8_vs_torch']:.2f}x | {entry['torch_ms_per_batch']:.3f} | {entry['ort_ms_per_batch']:.3f} |"
            )
    mc.set_terminated(run.info.run_id)
    meter.close()
    print(f"Energy source: {meter.source} ({'estimated' if meter.estimated else 'measured'}); J per 1k predictions, mean of two ABBA halves.")
    print("| model | batch | torch J/1k | ort J/1k | ort int8 J/1k | ort/torch | ort int8/torch | torch ms/batch | ort ms/batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(json.dumps({"energy_source": meter.source, "estimated": meter.estimated, "mlflow_run_id": run.info.run_id, "results": results}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(main())
