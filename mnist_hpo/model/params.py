"""Names each hyperparameter once: ``model.<name>`` in the config, ``<name>`` on the estimator.

A field of the ``model`` config group (and each ``model.builder_args`` entry) is the estimator
parameter of the same name, so grids, Optuna spaces, MLflow params and printed tables say
``activation`` where the config says ``model.activation``. The builder's own arguments reach it as
scikeras passes a constructor's extra keywords to the builder, by name; the others are the
estimator's (:data:`TRAINING_ARGUMENTS`).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mnist_hpo.configuration.schema import ConfigError, ModelConfig

# Every hyperparameter the ``model`` group types: its config key is ``model.<name>``.
HYPERPARAMETERS: tuple[str, ...] = tuple(
    field.name for field in fields(ModelConfig) if field.name not in ("builder", "builder_args")
)
# The package CNN's keyword arguments. Named here, Keras-free, so the default builder's keys are
# checked before Keras loads (tests/test_builders.py holds them to build_cnn's signature).
CNN_ARGUMENTS = (
    "conv_filters", "kernel_size", "padding", "pool_size", "dense_units", "dropout_conv", "dropout_dense",
    "activation", "kernel_initializer", "precision",
)  # fmt: skip
# The hyperparameters the estimator applies itself (the optimizer, the loss, how it trains and
# predicts); the rest go to the builder.
TRAINING_ARGUMENTS = tuple(name for name in HYPERPARAMETERS if name not in CNN_ARGUMENTS)
# scikeras' constructor parameters and the estimator's execution keywords: with TRAINING_ARGUMENTS,
# the names the estimator owns, which scikeras never passes to a builder (tests/test_builders.py
# holds this to the constructors' signatures).
WRAPPER_ARGUMENTS = frozenset(
    {"model", "build_fn", "warm_start", "random_state", "optimizer", "loss", "metrics", "batch_size",
     "validation_batch_size", "verbose", "callbacks", "validation_split", "shuffle", "run_eagerly", "epochs",
     "class_weight", "fit_store", "fit_store_budget_mb", "model_cache_mb", "fusion", "search_token"}
)  # fmt: skip
ESTIMATOR_ARGUMENTS = WRAPPER_ARGUMENTS | frozenset(TRAINING_ARGUMENTS)
DEFAULT_BUILDER: str = ModelConfig.builder  # the dataclass field's default: one definition
# scikeras fills these itself (``meta``: the data's shape and classes), so no config sets them.
SCIKERAS_ARGUMENTS = frozenset({"meta", "compile_kwargs", "params"})


def estimator_params(model: ModelConfig) -> dict[str, Any]:
    """The estimator parameters ``model`` sets, each under its config field's (or builder argument's) name.

    Unset (None) architecture fields are left to the builder's defaults. The builder itself is the
    estimator's ``model`` (see ``load_builder``).
    """
    values = asdict(model) if isinstance(model, ModelConfig) else dict(model)
    values.pop("builder", None)
    builder_args = values.pop("builder_args", None) or {}
    params = {name: value for name, value in values.items() if value is not None}
    if "conv_filters" in params:
        params["conv_filters"] = list(params["conv_filters"])
    # A typed key wins over a builder_args entry of its name (preflight rejects that entry).
    return dict(builder_args) | params


def is_builder_argument(name: str) -> bool:
    """Whether estimator parameter ``name`` goes to the builder (every name the estimator does not own)."""
    return name not in ESTIMATOR_ARGUMENTS


def config_key(name: str) -> str:
    """The config key that sets estimator parameter ``name``: ``model.<name>`` or ``model.builder_args.<name>``."""
    return f"model.{name}" if name in HYPERPARAMETERS else f"model.builder_args.{name}"


def plain(value: Any) -> bool:
    """Whether ``value`` is data a config could hold (so it can stand in a parameter and a fit key)."""
    if isinstance(value, list | tuple):
        return all(plain(item) for item in value)
    return value is None or isinstance(value, str | int | float | bool)


def builder_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    """The builder's keyword arguments with plain defaults, as estimator parameters.

    Given to the estimator beside the config's values, so every argument of the builder is a
    parameter a grid can set (scikit-learn sets only parameters the estimator was built with) and
    MLflow records the value each fit used. Tuples become lists, as the config gives them.
    """
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        parameter.name: list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.default is not parameter.empty
        and plain(parameter.default)
        and parameter.name not in SCIKERAS_ARGUMENTS
        and is_builder_argument(parameter.name)
    }


@dataclass(frozen=True)
class BuilderSignature:
    """What a builder takes: the keyword arguments a config or a grid may give it, by name."""

    path: str
    arguments: tuple[str, ...]
    required: tuple[str, ...] = ()
    takes_any: bool = False  # a ``**kwargs`` builder: any name is accepted, building tells


def load_builder(path: str) -> Callable[..., Any]:
    """The function ``path`` names (a dotted path), imported through Hydra's ``instantiate``.

    A builder returns an uncompiled ``keras.Model``; scikeras passes it ``meta`` (the training
    data's ``X_shape_``, ``n_classes_``) when it takes that argument.
    """
    try:
        return instantiate({"_target_": path, "_partial_": True}).func
    except Exception as error:
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = " ".join(str(cause).split()) or type(cause).__name__
        raise ConfigError(
            f"model.builder: cannot load {path!r} ({reason}); give the dotted path of a function returning an "
            "uncompiled keras.Model, importable here (put its folder on PYTHONPATH)"
        ) from error


def builder_signature(path: str) -> BuilderSignature:
    """The keyword arguments of the builder ``path`` names (the package's CNN: without importing Keras)."""
    if path == DEFAULT_BUILDER:
        return BuilderSignature(path, CNN_ARGUMENTS)
    try:
        parameters = list(inspect.signature(load_builder(path)).parameters.values())
    except (TypeError, ValueError):  # a callable without an inspectable signature: building tells
        return BuilderSignature(path, (), takes_any=True)
    named = [
        parameter
        for parameter in parameters
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        and parameter.name not in SCIKERAS_ARGUMENTS
    ]
    return BuilderSignature(
        path,
        tuple(parameter.name for parameter in named),
        tuple(parameter.name for parameter in named if parameter.default is parameter.empty),
        any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters),
    )


def builder_identity(builder: Any) -> Any:
    """What stands for ``builder`` in a fit's key: itself, or for one outside this package, its name and source.

    The package's builders change with its version; a user's builder is edited between runs, and a
    fit of the edited one must train again, never be restored from the old one's weights. The whole
    module's source counts, since a builder calls its neighbours.
    """
    module = inspect.getmodule(builder)
    if module is None or module.__name__.split(".")[0] == "mnist_hpo":
        return builder
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):  # no source to read (a compiled module): its name must do
        return builder
    return f"{module.__name__}.{builder.__qualname__}@{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def builder_code(builder: Any) -> list[str]:
    """The code a saved model needs to import ``builder`` elsewhere: its top-level module or package.

    MLflow copies these into the model (``code_paths``) and puts them on ``sys.path`` when it loads
    the model, so a model of a user's network loads where that module is not installed. Ours, and
    anything installed (Keras' own applications, a user's installed package), is not copied: the
    model's requirements bring those.
    """
    module = inspect.getmodule(builder)
    if module is None:
        return []
    top = sys.modules.get(module.__name__.split(".")[0])
    if top is None or top.__name__ == "mnist_hpo":
        return []
    locations = [Path(p) for p in getattr(top, "__path__", [])]  # a package: its folder, a module: its file
    if not locations and getattr(top, "__file__", None):
        locations = [Path(top.__file__)]
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return [
        str(location)
        for location in locations
        if location.exists() and not installed.intersection(location.resolve().parents)
    ]
