"""The best estimator as an MLflow model: a pyfunc from code, with the fitted estimator and user code inside."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import infer_signature

from mnist_hpo.model.params import builder_code

# The logged model's pyfunc code (models-from-code: MLflow runs the file, so the wrapper is never
# pickled). Referred to by path, not imported: the file names its model to MLflow as it runs.
MODEL_CODE = Path(__file__).with_name("model_flavour.py")
# MLflow logs this on every scikit-learn model saved with (cloud)pickle. This project saves with
# cloudpickle knowingly (skops cannot save a scikeras estimator), so on each search it is noise.
PICKLE_NOTICE = re.compile(r"Saving scikit-learn models in the pickle or cloudpickle format")


@contextmanager
def pickle_notice_hidden() -> Iterator[None]:
    """Drop MLflow's pickle-format notice, that record only, while the block runs.

    It is a log record of the ``mlflow.sklearn`` logger, not a Python warning; every other record
    of that logger, and every warning, still shows.
    """
    logger = logging.getLogger("mlflow.sklearn")

    def keep(record: logging.LogRecord) -> bool:
        return not PICKLE_NOTICE.match(record.getMessage())

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def log_best_model(
    store_uri: str,
    run_id: str,
    estimator: Any,
    images: np.ndarray,
    pip_requirements: list[str],
    registered_model_name: str | None = None,
) -> str:
    """Log ``estimator`` as the model of run ``run_id``; return its URI.

    Its pyfunc ``predict`` gives digits, or class probabilities with the inference parameter
    ``output="probabilities"`` (model_flavour.py); the fitted estimator is an ``mlflow.sklearn``
    model inside it, the ``estimator`` artifact. A network built by a user's module carries that
    module along (``code_paths``), so the model loads where the module is not installed.

    MLflow's fluent API is the only way to log a model, and leaving its ``start_run`` marks the run
    FINISHED: call this last.
    """
    example = images[:5]
    # The params schema is what lets MLflow pass ``output`` through, in Python and when served.
    signature = infer_signature(example, estimator.predict(example), params={"output": "digits"})
    requirements = pip_requirements or None
    mlflow.set_tracking_uri(store_uri)
    with tempfile.TemporaryDirectory() as folder, pickle_notice_hidden():
        estimator_path = str(Path(folder) / "estimator")
        mlflow.sklearn.save_model(
            estimator,
            estimator_path,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
            pip_requirements=requirements,
        )
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={"estimator": estimator_path},
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                code_paths=builder_code(estimator.model) or None,
                registered_model_name=registered_model_name,
            )
    return info.model_uri
