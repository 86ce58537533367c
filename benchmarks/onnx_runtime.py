"""torch vs ONNX Runtime inference energy, for every model of the paper table, at each batch size, paired.

    pip install -e '.[onnx]'
    python benchmarks/onnx_runtime.py [--datasets mnist1d digits] [--samples 4000] [--batch-sizes 1 64 4096]
                                      [--window-s 1.0] [--pairs 4] [--optimized-hidden 32 16] [--meter auto]

The models of the paper table (benchmarks/paper_table.py), on each of its datasets: the baseline
MLP 64-32, the optimised MLP (the loop's pruned model: --optimized-hidden, 32-16 by default) and the
1-D CNN, with fresh weights (energy and latency do not depend on the weights' values). Each is
exported to ONNX (`tasks/compression/onnx_runtime.py`), quantized to INT8 by onnxruntime, and logged with
MLflow's onnx flavour (experiment `onnx-runtime`). Then, at each batch size, onnxruntime fp32 and
onnxruntime INT8 are each measured against torch fp32 with the loop's paired method
(`measure_inference_paired`: ABBA windows of at least --window-s, the geometric mean of the
per-pair ratios and its 95 % interval). Prints a table, then one JSON object on the last line.
Energies are labelled with the meter's source; on a machine without RAPL they are estimates.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.results import emit  # noqa: E402  (the repository root is on the path now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist1d", "digits"])
    parser.add_argument("--samples", type=int, default=4000, help="mnist1d samples (digits is its bundled size)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 4096])
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument(
        "--pairs", type=int, default=4, help="ABBA pairs per runtime and batch size (whole blocks of two)"
    )
    parser.add_argument(
        "--optimized-hidden",
        type=int,
        nargs="+",
        default=[32, 16],
        help="hidden widths of the paper table's optimised MLP",
    )
    parser.add_argument("--meter", default="auto")
    args = parser.parse_args()
    if (
        args.pairs < 2
        or args.window_s <= 0
        or any(b < 1 for b in args.batch_sizes)
        or any(w < 1 for w in args.optimized_hidden)
    ):
        print(
            "onnx_runtime.py: error: --pairs >= 2, --window-s > 0, batch sizes and widths >= 1 expected",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import torch

    from registry import mlflow_model
    from tasks.compression import onnx_runtime
    from tasks.data import datasets as data_mod
    from tasks.meters.select import make_meter
    from tasks.models import factory as models
    from tasks.models.evaluate import Repeats, Window, measure_inference_paired

    missing = onnx_runtime.unavailable()
    if missing:
        print(f"onnx_runtime.py: error: {missing}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    meter = make_meter(args.meter)
    rows: list[str] = []
    results: dict[str, dict[str, object]] = {}
    graphs: dict[str, Path] = {}
    for dataset in args.datasets:
        samples = args.samples if dataset == "mnist1d" else None
        data = data_mod.load_cached(str(data_mod.prepare(dataset, work / "cache", samples=samples)))
        common = {"in_features": data.n_features, "out_features": data.out_features}
        optimized = "-".join(str(w) for w in args.optimized_hidden)
        specs = {
            "mlp 64-32 (baseline)": models.ModelSpec(**common),
            f"mlp {optimized} (optimised)": models.ModelSpec(**common, hidden=list(args.optimized_hidden)),
            "cnn1d": models.ModelSpec(kind="cnn1d", **common),
        }
        for label, spec in specs.items():
            key = f"{dataset} {label}"
            folder = work / f"m{len(graphs) // 2}"
            torch.manual_seed(0)
            model_dir = models.save(models.build(spec), spec, folder)
            fp32_path = onnx_runtime.export(model_dir, folder / "fp32.onnx")
            int8_path = onnx_runtime.quantize_int8(fp32_path, folder / "int8.onnx")
            graphs[f"{key} fp32"], graphs[f"{key} int8"] = fp32_path, int8_path
            fp32_model, saved = models.load(model_dir)
            torch_model = models.to_precision(fp32_model, saved.precision)
            runtimes = {"ort": onnx_runtime.OrtModule(fp32_path), "ort-int8": onnx_runtime.OrtModule(int8_path)}
            with torch.no_grad():
                gap = (runtimes["ort"](data.x_test[:64]) - torch_model(data.x_test[:64])).abs().max().item()
            for batch in args.batch_sizes:
                entry: dict[str, object] = {"max_abs_output_gap": gap}
                for name, served in runtimes.items():
                    mine, theirs, paired = measure_inference_paired(
                        served,
                        torch_model,
                        data,
                        meter,
                        batch,
                        Window(args.window_s),
                        Repeats(args.pairs, args.pairs),
                        label=f"{key} {name} b{batch}",
                    )
                    low, high = paired.ci95
                    prefix = name.replace("-", "_")
                    entry.update(
                        {
                            f"torch_j_per_1k_vs_{prefix}": theirs.energy_j_per_1k,
                            f"{prefix}_j_per_1k": mine.energy_j_per_1k,
                            f"{prefix}_vs_torch": paired.ratio,
                            f"{prefix}_vs_torch_ci95": [low, high],
                            f"{prefix}_pairs": paired.n,
                            f"{prefix}_ms_per_batch": mine.latency_ms_per_batch,
                            f"torch_ms_per_batch_vs_{prefix}": theirs.latency_ms_per_batch,
                        }
                    )
                results[f"{key} @ {batch}"] = entry
                rows.append(row(dataset, label, batch, entry))
    meter.close()
    run_id = mlflow_model.log_onnx_benchmark(
        "onnx-runtime",
        {"datasets": ",".join(args.datasets), "batch_sizes": ",".join(map(str, args.batch_sizes))},
        graphs,
    )
    source = f"{meter.source} ({'estimated' if meter.estimated else 'measured'})"
    print(f"Energy source: {source}; J per 1k predictions; ratios: paired ABBA windows vs torch fp32, [95 % CI].")
    print(
        "| dataset | model | batch | torch J/1k | ort J/1k | ort int8 J/1k | ort/torch | ort int8/torch | "
        "torch ms/batch | ort ms/batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    emit({"energy_source": meter.source, "estimated": meter.estimated, "mlflow_run_id": run_id, "results": results})
    return 0


def row(dataset: str, label: str, batch: int, e: dict[str, object]) -> str:
    """One table row of a model at a batch size."""

    def ratio(name: str) -> str:
        ci = e[f"{name}_vs_torch_ci95"]
        low, high = ci if isinstance(ci, list) else (float("nan"), float("nan"))
        return f"{e[f'{name}_vs_torch']:.2f}x [{low:.2f}, {high:.2f}]"

    energies = f"{e['torch_j_per_1k_vs_ort']:.4g} | {e['ort_j_per_1k']:.4g} | {e['ort_int8_j_per_1k']:.4g}"
    latencies = f"{e['torch_ms_per_batch_vs_ort']:.3f} | {e['ort_ms_per_batch']:.3f}"
    return f"| {dataset} | {label} | {batch} | {energies} | {ratio('ort')} | {ratio('ort_int8')} | {latencies} |"


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(main())
