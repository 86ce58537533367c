"""The work of both pipelines, in layers (each imports only those above it in this list; tests/test_imports.py):

- `meters/`       energy meters behind one interface (CodeCarbon, NVML, RAPL, fixed power, null, analytic), statistics,
                  paired ABBA windows, attribution on a shared machine
- `common/`       what both loops share: errors, plugins, progress lines, the loop skeleton (Prefect)
- `data/`         datasets, table preprocessing, image folders, a user's dataset function
- `models/`       model factories, a user's model and hooks, training, evaluation, the fused form
- `compression/`  pruning, distillation, quantization-aware training, architecture search, ONNX Runtime
- `serving/`      a saved model as a scorer, and the MLflow pyfunc around it
- `energy_loop/`  the energy loop: inputs, calibration, candidates and their producers, scale-out, report, stages
- `cooling/`      the cooling agent's loop: environments, DQN, controllers, stages

The two loops never import each other."""
