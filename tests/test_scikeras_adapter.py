"""scikeras' private members: still there and doing what the adapter relies on, and named nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
from scikeras.wrappers import KerasClassifier

from mnist_hpo.configuration.schema import ExecutionConfig, ModelConfig
from mnist_hpo.execution import scikeras_adapter
from mnist_hpo.execution.estimator import build_estimator

PACKAGE = Path(scikeras_adapter.__file__).parent
PRIVATE = [*scikeras_adapter.PRIVATE_METHODS, *scikeras_adapter.PRIVATE_ATTRIBUTES]


def test_the_private_members_the_adapter_overrides_and_reads_are_still_scikeras_own():
    scikeras_adapter.check_scikeras()  # each method there, taking only self
    x = np.zeros((20, 28, 28, 1), np.float32)
    y = np.arange(20) % 10
    estimator = build_estimator(ModelConfig(optimizer="adam", momentum=0.9), ExecutionConfig(model_cache_mb=0), 7)
    estimator.initialize(x, y)
    # The compile arguments scikeras derives (optimizer, loss, metrics): the estimator's start from them.
    arguments = KerasClassifier._get_compile_kwargs(estimator)
    assert isinstance(arguments["optimizer"], keras.optimizers.Adam) and arguments["loss"]
    assert estimator.compile_arguments().keys() >= arguments.keys()
    # The seed scikeras drew from random_state, and the fit's Keras callbacks it hands to Model.fit.
    assert estimator.drawn_seed == 7
    estimator._initialize_callbacks()
    callbacks = estimator._fit_callbacks
    assert isinstance(callbacks, list) and isinstance(callbacks[-1], keras.callbacks.TerminateOnNaN)
    assert isinstance(estimator.model_, keras.Model)  # built through _build_keras_model


def test_only_the_adapter_names_scikeras_private_members():
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, PRIVATE)) + r")\b")
    naming = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "scikeras_adapter.py"
    )
    assert naming == []
