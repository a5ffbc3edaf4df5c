"""Maps the ``model`` config group to estimator parameters: the project's one vocabulary."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mnist_hpo.config import ModelConfig

# ``model.<field>`` in config is estimator parameter ``<routed name>`` in grids, in the
# estimator and in MLflow, so a value keeps one name end to end.
ROUTED_NAMES: dict[str, str] = {
    "conv_filters": "model__conv_filters",
    "kernel_size": "model__kernel_size",
    "padding": "model__padding",
    "pool_size": "model__pool_size",
    "dense_units": "model__dense_units",
    "dropout_conv": "model__dropout_conv",
    "dropout_dense": "model__dropout_dense",
    "activation": "model__activation",
    "kernel_initializer": "model__kernel_initializer",
    "precision": "model__precision",
    "optimizer": "optimizer",
    "learning_rate": "optimizer__learning_rate",
    "momentum": "optimizer__momentum",
    "loss": "loss",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "predict_batch_size": "predict__batch_size",
    "validation_split": "validation_split",
    "steps_per_execution": "compile__steps_per_execution",
    "jit_compile": "compile__jit_compile",
}
CONFIG_KEYS: dict[str, str] = {routed: f"model.{field}" for field, routed in ROUTED_NAMES.items()}


def estimator_params(model: ModelConfig) -> dict[str, Any]:
    """The estimator parameters, under scikeras routed names, that ``model`` describes."""
    values = asdict(model) if isinstance(model, ModelConfig) else dict(model)
    params = {ROUTED_NAMES[field]: value for field, value in values.items()}
    params["model__conv_filters"] = list(params["model__conv_filters"])
    return params
