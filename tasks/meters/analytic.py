"""Analytic target-device estimate: counted operations x energy per operation.

Energy per operation at 45 nm, 0.9 V, from Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014 (the table the paper cites), with the 32-bit DRAM and SRAM access
figures of Han et al. (2016) derived from it. It lets a user on a laptop target an edge device;
it is always an estimate and names its table.

Per sample, each fully connected layer costs `in x out` multiply-accumulates at the model's
precision (one multiply and one add each) and reads/writes its activations from on-chip SRAM;
weights are read from DRAM once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

TABLE = "horowitz-isscc2014-45nm"

# picojoules per operation
MULT_PJ = {"fp32": 3.7, "fp16": 1.1, "bf16": 1.1, "int8": 0.2}
ADD_PJ = {"fp32": 0.9, "fp16": 0.4, "bf16": 0.4, "int8": 0.03}
BITS = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8}
DRAM_PJ_PER_32BIT = 640.0
SRAM_PJ_PER_32BIT = 5.0


@dataclass(frozen=True)
class AnalyticEstimate:
    energy_j_per_1k: float
    compute_j_per_1k: float
    memory_j_per_1k: float
    table: str = TABLE


def layer_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every fully connected layer, in order."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def inference_energy(model: nn.Module, precision: str, batch_size: int) -> AnalyticEstimate:
    """Estimated joules per 1,000 samples for an MLP at `precision` and `batch_size`."""
    if precision not in MULT_PJ:
        raise ValueError(f"precision = {precision!r}: expected one of {', '.join(MULT_PJ)}")
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size!r}: expected an integer >= 1")
    shapes = layer_shapes(model)
    word = BITS[precision] / 32
    macs = sum(i * o for i, o in shapes)
    params = sum(i * o + o for i, o in shapes)
    activations = sum(i + o for i, o in shapes)  # read inputs, write outputs
    compute_pj = macs * (MULT_PJ[precision] + ADD_PJ[precision])
    sram_pj = activations * SRAM_PJ_PER_32BIT * word
    dram_pj_per_batch = params * DRAM_PJ_PER_32BIT * word
    per_1k = 1000.0
    compute_j = compute_pj * per_1k * 1e-12
    memory_j = (sram_pj * per_1k + dram_pj_per_batch * per_1k / batch_size) * 1e-12
    return AnalyticEstimate(energy_j_per_1k=compute_j + memory_j, compute_j_per_1k=compute_j, memory_j_per_1k=memory_j)
