"""A saved model as a scorer: raw table in, predictions out (`scorer`), and the MLflow pyfunc that wraps it
(`pyfunc_model`, stored in every version as models-from-code).

`Scorer` is re-exported because versions logged before this package existed import it as `tasks.serving.Scorer`."""

from tasks.serving.scorer import Scorer

__all__ = ["Scorer"]
