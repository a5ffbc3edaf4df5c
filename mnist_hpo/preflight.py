"""What every fit will meet, derived from the config and the data before any fit trains.

Folds per class (StratifiedKFold needs every class in every fold); the builder's keyword arguments
against every ``model__*`` key the config and the grid give it; and every architecture a search can
build. For the package's CNN that is arithmetic on feature-map sizes, Keras-free (a kernel or
pooling window larger than the map it meets fails inside Keras, once per fit, after the search has
started). Any other builder is opaque, so each distinct architecture is built once on the data's
image shape and classes.
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
from typing import Any

import numpy as np

from mnist_hpo.config import Config, ConfigError, ExecutionConfig
from mnist_hpo.data import stratified_subset
from mnist_hpo.execution.fit_keys import describe
from mnist_hpo.params import (
    BUILDER_PREFIX,
    CNN_ARGUMENTS,
    CONFIG_KEYS,
    DEFAULT_BUILDER,
    BuilderSignature,
    builder_signature,
    config_key,
    estimator_params,
)
from mnist_hpo.space import bounding_values, build_space

ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
ARCHITECTURE = ("model__conv_filters", "model__kernel_size", "model__padding", "model__pool_size")


def check_folds(cv: int, y: np.ndarray, images_key: str) -> None:
    """Every class must have at least ``cv`` images, or a stratified fold would miss it."""
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < cv:
        raise ConfigError(
            f"search.cv: {cv} folds need at least {cv} images of every class; class {classes[smallest]} has "
            f"{counts[smallest]} of the {len(y)} training images; lower search.cv or raise {images_key}"
        )


def check_arguments(cfg: Config, grids: list[tuple[str, dict[str, Any]]]) -> BuilderSignature:
    """Every ``model__*`` key the config or a search space sets must be an argument of the builder.

    Args:
        cfg: The run's config; ``model.builder`` names the builder.
        grids: Each search space with the config key it comes from (``grid``, ``study.coarse``).

    Returns:
        The builder's signature.
    """
    signature = builder_signature(cfg.model.builder)
    for name in cfg.model.builder_args:
        if name in CNN_ARGUMENTS:
            raise ConfigError(
                f"model.builder_args.{name}: set model.{name} instead (a typed key, checked against its choices)"
            )
    params = estimator_params(cfg.model)
    given = {routed: params[routed] for routed in params if routed.startswith(BUILDER_PREFIX)}
    for routed, value in given.items():
        check_argument(signature, routed, f"{config_key(routed)}: {value!r} is not an argument of the builder")
    for where, grid in grids:
        axes = [key for key in grid if key.startswith(BUILDER_PREFIX)]
        for key in axes:
            check_argument(signature, key, f"{where}.{key}: not an estimator parameter")
        for name in signature.required:
            if f"{BUILDER_PREFIX}{name}" not in {*given, *axes}:
                raise ConfigError(
                    f"model.builder_args.{name}: {signature.path} needs it (it has no default); set "
                    f"model.builder_args.{name}=VALUE or make {BUILDER_PREFIX}{name} a grid axis"
                )
    return signature


def check_argument(signature: BuilderSignature, routed: str, problem: str) -> None:
    """Raise ``problem`` with the builder's real arguments unless it takes ``routed`` (``model__<name>``)."""
    if signature.takes_any or routed.removeprefix(BUILDER_PREFIX) in signature.arguments:
        return
    valid = ", ".join(f"{BUILDER_PREFIX}{name}" for name in signature.arguments)
    raise ConfigError(f"{problem}; valid: {valid} (the keyword arguments of {signature.path})")


def feature_map(size: int, conv_filters: list[int], kernel_size: int, padding: str, pool_size: int) -> int | None:
    """The side of the last feature map ``build_cnn`` makes from ``size`` x ``size`` images; None if one vanishes."""
    for _ in conv_filters:
        size = size if padding == "same" else size - kernel_size + 1
        if size < 1:
            return None
        if pool_size:
            size = math.ceil(size / pool_size) if padding == "same" else (size - pool_size) // pool_size + 1
            if size < 1:
                return None
    return size


def cnn_defaults(base: dict[str, Any]) -> dict[str, Any]:
    """``build_cnn``'s own defaults for architecture fields the config leaves unset (imports Keras, so only then)."""
    if all(name in base for name in ARCHITECTURE):
        return {}
    from mnist_hpo.model import build_cnn

    parameters = inspect.signature(build_cnn).parameters
    return {name: parameters[name.removeprefix(BUILDER_PREFIX)].default for name in ARCHITECTURE}


def check_feature_maps(base: dict[str, Any], grid: dict[str, Any], shape: tuple[int, ...], where: str) -> None:
    """Every architecture the grid can combine must keep a feature map of at least 1 x 1 pixel."""
    base = cnn_defaults(base) | base
    listed = bounding_values(build_space(grid, allow_distributions=True))
    axes = [name for name in ARCHITECTURE if name in listed]
    size = min(shape[:2])  # the shorter side vanishes first
    for values in itertools.product(*(listed[name] for name in axes)):
        params = base | dict(zip(axes, values, strict=True))
        arguments = {name.removeprefix(BUILDER_PREFIX): params[name] for name in ARCHITECTURE}
        if feature_map(size, **arguments) is None:
            key = f"{where}.model__kernel_size" if "model__kernel_size" in axes else CONFIG_KEYS["model__kernel_size"]
            raise ConfigError(
                f"{key}: kernel {params['model__kernel_size']} with padding {params['model__padding']}, pooling "
                f"{params['model__pool_size']} and {len(params['model__conv_filters'])} conv block(s) leaves no "
                f"pixel of the {shape[0]} x {shape[1]} images; use a smaller kernel, padding=same or fewer blocks"
            )


def one_line(error: BaseException) -> str:
    """The original error behind ``error`` on one line: Keras wraps a layer's error in a page about the call."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = " ".join(ANSI_CODES.sub("", str(error)).split())
    return f"{type(error).__name__}: {text[:300]}"


def build_problem(estimator: Any, params: dict[str, Any], probe: np.ndarray, classes: np.ndarray) -> str | None:
    """What goes wrong building (and calling) the model ``params`` describe on the data; None if nothing."""
    from sklearn.base import clone

    try:
        twin = clone(estimator).set_params(**params).initialize(probe, classes)
        outputs = tuple(twin.model_(probe[:1], training=False).shape)
    except Exception as error:
        return one_line(error)
    if outputs != (1, len(classes)):
        return (
            f"it outputs {outputs[1:]} per image, the data has {len(classes)} classes; size the last layer "
            "from meta['n_classes_']"
        )
    return None


def check_architectures(cfg: Config, grids: list[tuple[str, dict[str, Any]]], x: np.ndarray, y: np.ndarray) -> None:
    """Build each distinct architecture the grids' ``model__*`` values combine once, on the data's shape and classes.

    Args:
        cfg: The run's config (its ``model`` group is the base every candidate starts from).
        grids: Each search space with the config key it comes from (``grid``, ``study.coarse``).
        x: The training images: their shape is what every fit's model meets.
        y: The training labels: their classes are what every fit's model must output.
    """
    from mnist_hpo.estimator import build_estimator  # Keras loads here: only building tells what a builder does

    estimator = build_estimator(cfg.model, ExecutionConfig(model_cache_mb=0), cfg.seed)
    classes = np.unique(y)
    probe = np.zeros((len(classes), *x.shape[1:]), dtype=x.dtype)  # one blank image per class, as a fit's meta
    images = f"{' x '.join(str(side) for side in x.shape[1:])} images of {len(classes)} classes"
    built: set[str] = set()
    failures: list[tuple[str, dict[str, Any], str]] = []
    for where, grid in grids:
        listed = bounding_values(build_space(grid, allow_distributions=True))
        axes = [name for name in listed if name.startswith(BUILDER_PREFIX)]
        for values in itertools.product(*(listed[name] for name in axes)):
            chosen = dict(zip(axes, values, strict=True))
            if describe(chosen) not in built:
                built.add(describe(chosen))
                problem = build_problem(estimator, chosen, probe, classes)
                failures += [(where, chosen, problem)] if problem is not None else []
    if not failures:
        return
    where, chosen, problem = failures[0]
    # Every architecture failing is the builder (or the config's own values) failing, not a grid value.
    if len(failures) == len(built) or not chosen:
        raise ConfigError(f"model.builder: {cfg.model.builder} fails on {images}: {problem}")
    (first, value), *others = chosen.items()
    context = f" (with {', '.join(f'{name}={other!r}' for name, other in others)})" if others else ""
    raise ConfigError(f"{where}.{first}: {value!r}{context} fails on {images}: {problem}")


def preflight(cfg: Config, x_train: np.ndarray, y_train: np.ndarray) -> None:
    """Check what the search, or each stage of the study, will meet on this data."""
    if cfg.study.enabled:
        _, y_stage1 = stratified_subset(
            y_train, y_train, cfg.study.stage1_train_size, cfg.seed, "study.stage1_train_size"
        )
        check_folds(cfg.search.cv, y_stage1, "study.stage1_train_size")
        # Stage 1 searches each hyperparameter alone, every other at the config's value.
        grids = [("study.coarse", {name: list(values)}) for name, values in cfg.study.coarse.items()]
    else:
        grids = [("grid", dict(cfg.grid))]
    signature = check_arguments(cfg, grids)
    if signature.path == DEFAULT_BUILDER:
        for where, grid in grids:
            check_feature_maps(estimator_params(cfg.model), grid, x_train.shape[1:], where)
    else:
        check_architectures(cfg, grids, x_train, y_train)
    check_folds(cfg.search.cv, y_train, "data.train_size")
