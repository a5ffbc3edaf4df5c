"""The logged model's Python code: digits by default, class probabilities when asked (MLflow models-from-code).

MLflow runs this file whenever it loads the model (``set_model`` below names the model), so the
wrapper is code in the model folder, never a pickle; the fitted estimator travels beside it as the
``estimator`` artifact, an ``mlflow.sklearn`` model saved with cloudpickle (skops cannot save a
scikeras estimator). model_log.py logs it and sets the same names: the artifact ``estimator``
and the ``output`` inference parameter.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel, PythonModelContext

ESTIMATOR_ARTIFACT = "estimator"
OUTPUTS = ("digits", "probabilities")


class DigitClassifier(PythonModel):
    """The best estimator behind MLflow's pyfunc interface.

    ``predict(images)`` returns digits (the estimator's labels, int64, N);
    ``predict(images, params={"output": "probabilities"})`` returns class probabilities (float32,
    N x classes, columns in the order of the estimator's ``classes_``: 0-9 for MNIST). A served
    model answers the same to ``{"inputs": ..., "params": {"output": "probabilities"}}``.
    """

    def load_context(self, context: PythonModelContext) -> None:
        """Load the fitted estimator once, when MLflow loads the model."""
        self.estimator = mlflow.sklearn.load_model(context.artifacts[ESTIMATOR_ARTIFACT])

    def predict(
        self, context: PythonModelContext, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Digits, or class probabilities with ``params={"output": "probabilities"}``."""
        output = (params or {}).get("output", OUTPUTS[0])
        if output == "digits":
            return np.asarray(self.estimator.predict(model_input))
        if output == "probabilities":
            return np.asarray(self.estimator.predict_proba(model_input))
        # MLflow's own error type: the scoring server answers it as a client error, not a crash.
        raise MlflowException.invalid_parameter_value(
            f"params.output: unknown value {output!r}; valid: {', '.join(OUTPUTS)}"
        )


set_model(DigitClassifier())
