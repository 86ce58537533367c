"""The pyfunc of every registered version, written as MLflow models-from-code.

MLflow copies this file into the model and runs it on load: nothing is unpickled. The weights
come from the model's `model` artifact (state dict + JSON specs) through `tasks.serving.scorer.Scorer`,
which reads them with `torch.load(weights_only=True)`; a version of the `ort` rung serves its
`model.onnx` with an onnxruntime session instead (`tasks.compression.onnx_runtime.predictor`). It needs this project
installed in the serving environment (`--env-manager local` from its virtualenv, or its image). Loading it sets the
process's torch threads to those the version was measured at (`measurement.inference_threads`, recorded in
`runtime.json`): a serving process runs one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


class EnergyLoopModel(PythonModel):
    """Raw table in (the training table's feature columns), class label + probabilities or a value out."""

    def load_context(self, context: PythonModelContext) -> None:
        from tasks.serving.scorer import Scorer

        self.scorer = Scorer(Path(context.artifacts["model"]))
        if self.scorer.runtime.threads:  # serve at the threads its energy was measured at (runtime.json)
            import torch

            torch.set_num_threads(self.scorer.runtime.threads)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        self.scorer.check(frame)
        return self.scorer.predict(frame)


mlflow.models.set_model(EnergyLoopModel())
