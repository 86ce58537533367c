"""Compression rungs' work: structured pruning (`prune`), distillation (`distill`), quantization-aware training
(`qat`), energy-aware architecture search (`search`) and export to ONNX Runtime (`onnx_runtime`)."""
