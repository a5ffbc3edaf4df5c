"""Maps the ``model`` config group to estimator parameters, and names what its builder takes: the one vocabulary."""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mnist_hpo.configuration.schema import ConfigError, ModelConfig

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
BUILDER_PREFIX = "model__"
# The package CNN's keyword arguments are the typed architecture fields. Named here, Keras-free, so
# the default builder's keys are checked before Keras loads (tests/test_builders.py holds them to
# build_cnn's signature).
CNN_ARGUMENTS = tuple(field for field, routed in ROUTED_NAMES.items() if routed.startswith(BUILDER_PREFIX))
DEFAULT_BUILDER: str = ModelConfig.builder  # the dataclass field's default: one definition
# scikeras fills these itself (``meta``: the data's shape and classes), so no config sets them.
SCIKERAS_ARGUMENTS = frozenset({"meta", "compile_kwargs", "params"})


def estimator_params(model: ModelConfig) -> dict[str, Any]:
    """The estimator parameters, under scikeras routed names, that ``model`` sets.

    Unset (None) architecture fields are left to the builder's defaults; ``builder_args`` become
    ``model__<name>``. The builder itself is the estimator's ``model`` (see ``load_builder``).
    """
    values = asdict(model) if isinstance(model, ModelConfig) else dict(model)
    values.pop("builder", None)
    builder_args = values.pop("builder_args", None) or {}
    params = {ROUTED_NAMES[field]: value for field, value in values.items() if value is not None}
    if "model__conv_filters" in params:
        params["model__conv_filters"] = list(params["model__conv_filters"])
    # A typed key wins over a builder_args entry of its name (preflight rejects that entry).
    return {f"{BUILDER_PREFIX}{name}": value for name, value in builder_args.items()} | params


def config_key(routed: str) -> str:
    """The config key that sets estimator parameter ``routed``: ``model.<field>`` or ``model.builder_args.<name>``."""
    return CONFIG_KEYS.get(routed) or f"model.builder_args.{routed.removeprefix(BUILDER_PREFIX)}"


@dataclass(frozen=True)
class BuilderSignature:
    """What a builder takes: the keyword arguments a config or a grid may give it as ``model__<name>``."""

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
