"""What a search writes to MLflow, derived from the config and checked against the store's limits.

MLflow refuses an experiment name over 500 characters, a param or tag key over 250, a param value
over 6,000 and a tag value over 8,000, and a registered model name with ``/`` or ``:``. Names the
user chose stop before anything runs, in one line naming the key; long values are cut to fit,
marked so, with the whole text in the search run's ``config.yaml``. The limits come from
``mlflow.utils.validation``, which is not a public module: they are read here alone, so a rename
fails at import, loudly.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_EXPERIMENT_NAME_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)

from mnist_hpo.configuration.schema import Config, ConfigError
from mnist_hpo.model.params import estimator_params

CUT = " [... cut to fit MLflow; the whole value is in config.yaml]"
MODEL_NAME_FORBIDDEN = ("/", ":")


def fitted(text: str, limit: int) -> str:
    """``text``, or its start and a mark that says it was cut, in ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def param_value(text: str) -> str:
    """A param value MLflow accepts."""
    return fitted(text, MAX_PARAM_VAL_LENGTH)


def tag_value(text: str) -> str:
    """A tag value MLflow accepts."""
    return fitted(text, MAX_TAG_VAL_LENGTH)


def config_params(cfg: Config) -> dict[str, Any]:
    """The config as the search run's MLflow params: model values under their estimator names, the rest dotted."""
    groups = {name: value for name, value in asdict(cfg).items() if name != "model"}
    flat = pd.json_normalize(groups, sep=".").iloc[0].to_dict()
    return estimator_params(cfg.model) | flat


def check_tracking_limits(cfg: Config) -> None:
    """Stop, naming the key, on any name the store would refuse part-way through the search.

    Derived from what the search writes: the experiment, the search run's params (the config),
    each candidate run's params (the grid's or the study's axes) and the registered model.
    """
    experiment = cfg.tracking.experiment
    if len(experiment) > MAX_EXPERIMENT_NAME_LENGTH:
        raise ConfigError(
            f"tracking.experiment: the name has {len(experiment)} characters; MLflow takes at most "
            f"{MAX_EXPERIMENT_NAME_LENGTH}"
        )
    axes = {f"study.coarse.{key}": key for key in cfg.study.coarse} | {f"grid.{key}": key for key in cfg.grid}
    names = {key: key for key in config_params(cfg)} | axes
    for where, name in names.items():
        if len(name) > MAX_ENTITY_KEY_LENGTH:
            raise ConfigError(
                f"{where}: a parameter name of {len(name)} characters; MLflow takes parameter names of at most "
                f"{MAX_ENTITY_KEY_LENGTH}"
            )
    model_name = cfg.tracking.registered_model_name
    if model_name is not None and (not model_name.strip() or any(c in model_name for c in MODEL_NAME_FORBIDDEN)):
        raise ConfigError(
            f"tracking.registered_model_name: {model_name!r}; MLflow model names are non-empty and contain "
            "no '/' or ':'"
        )
