"""What every fit will meet, derived from the config and the data before any fit trains.

Folds per class (StratifiedKFold needs every class in every fold); the builder's keyword arguments
against every builder argument the config and the grid give it; and every architecture a search can
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
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import ParameterGrid

from mnist_hpo.configuration.schema import Config, ConfigError, ExecutionConfig, SearchConfig
from mnist_hpo.data.loading import stratified_subset
from mnist_hpo.execution.fit_keys import describe
from mnist_hpo.model.params import (
    DEFAULT_BUILDER,
    ESTIMATOR_ARGUMENTS,
    HYPERPARAMETERS,
    TRAINING_ARGUMENTS,
    BuilderSignature,
    builder_signature,
    config_key,
    estimator_params,
    is_builder_argument,
)
from mnist_hpo.search.space import bounding_values, build_space
from mnist_hpo.search.strategies import has_distributions

ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
ARCHITECTURE = ("conv_filters", "kernel_size", "padding", "pool_size")


def check_folds(cv: int, y: np.ndarray, images_key: str) -> None:
    """Every class must have at least ``cv`` images, or a stratified fold would miss it."""
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < cv:
        raise ConfigError(
            f"search.cv: {cv} folds need at least {cv} images of every class; class {classes[smallest]} has "
            f"{counts[smallest]} of the {len(y)} training images; lower search.cv or raise {images_key}"
        )


@dataclass(frozen=True)
class HalvingSchedule:
    """Successive halving's plan, as scikit-learn derives it: resources and candidates per iteration."""

    resources: list[int]
    candidates: list[int]
    max_resources: int


def halving_schedule(
    search: SearchConfig, n_samples: int, n_classes: int, n_candidates: int | None, epochs: int
) -> HalvingSchedule:
    """The iterations of ``HalvingGridSearchCV``/``HalvingRandomSearchCV`` on this data, before it runs.

    The rules scikit-learn documents (``tests/test_preflight.py`` holds them to its fitted
    ``n_resources_`` and ``n_candidates_``): ``smallest`` is 2 x splits x classes images (1 epoch),
    ``exhaust`` the most that lets the last needed iteration still fit, ``max_resources`` all
    training images (``model.epochs``), each iteration ``factor`` times the resources of the last
    for a ``factor``-th of its candidates. ``n_candidates`` is None for a random search's
    ``search.n_candidates=exhaust`` (as many as the resources allow). Raises :class:`ConfigError`
    naming the key on settings the data cannot satisfy.
    """
    splits = search.cv * search.cv_repeats
    images = search.resource == "n_samples"
    smallest = 2 * splits * n_classes if images else 1
    largest = n_samples if images else epochs
    unit = "training images" if images else "epochs"
    exhaust = search.min_resources == "exhaust"
    if exhaust and n_candidates is None:
        raise ConfigError(
            "search.n_candidates: exhaust counts candidates from search.min_resources, which is exhaust too; "
            "set one of them to a number"
        )
    first = smallest if exhaust else int(search.min_resources)
    if first > largest:
        if exhaust:
            raise ConfigError(
                f"search.min_resources: exhaust starts at {first} {unit} (2 x {splits} splits x {n_classes} "
                f"classes), more than the {largest} there are; raise data.train_size or lower search.cv"
            )
        limit = f"the {largest} {unit} there are" if images else f"model.epochs={epochs}"
        raise ConfigError(
            f"search.min_resources: {first} {unit} at the first iteration, more than {limit}; "
            f"the largest value allowed is {largest}"
        )
    count = n_candidates if n_candidates is not None else largest // first
    required = 1 + math.floor(math.log(count, search.factor)) if count > 0 else 1
    if exhaust:
        first = max(first, largest // search.factor ** (required - 1))
    possible = 1 + math.floor(math.log(largest // first, search.factor))
    resources, candidates, left = [], [], count
    for iteration in range(min(possible, required)):
        resources.append(min(int(search.factor**iteration * first), largest))
        candidates.append(left)
        left = math.ceil(left / search.factor)
    return HalvingSchedule(resources, candidates, largest)


def check_halving(cfg: Config, y: np.ndarray, n_candidates: int | None) -> None:
    """Halving's first iteration on this data: resources it can have, fits with rows to train and score.

    With ``resource=n_samples`` scikit-learn keeps ``resources / n_samples`` of each split's training
    and test rows (unstratified); a fit must keep at least one image per class to train on after its
    validation split, and one to score.
    """
    search = cfg.search
    n_classes = len(np.unique(y))
    schedule = halving_schedule(search, len(y), n_classes, n_candidates, cfg.model.epochs)
    if search.resource != "n_samples" or not schedule.resources:
        return
    test_rows = math.floor(len(y) / search.cv)
    train_rows = len(y) - math.ceil(len(y) / search.cv)

    def kept(resources: int) -> tuple[int, int]:
        fraction = resources / len(y)
        fit_rows = int(fraction * train_rows)
        return math.floor(fit_rows * (1.0 - cfg.model.validation_split)), int(fraction * test_rows)

    trains, tests = kept(schedule.resources[0])
    if trains < n_classes or tests < 1:
        enough = (r for r in range(schedule.resources[0], len(y) + 1) if kept(r)[0] >= n_classes and kept(r)[1])
        least = next(enough, None)
        allowed = f"the smallest value allowed is {least}" if least else "raise data.train_size"
        raise ConfigError(
            f"search.min_resources: {schedule.resources[0]} of the {len(y)} training images leave a first-iteration "
            f"fit {trains} images to train on and {tests} to score, for {n_classes} classes; {allowed}"
        )


def check_arguments(cfg: Config, grids: list[tuple[str, dict[str, Any]]]) -> BuilderSignature:
    """Every builder argument the config or a search space sets must be one the builder takes.

    A name the estimator keeps for itself (``loss``, ``epochs``, ``learning_rate``, ...) never
    reaches a builder, so a builder argument of such a name is refused too.

    Args:
        cfg: The run's config; ``model.builder`` names the builder.
        grids: Each search space with the config key it comes from (``grid``, ``study.coarse``).

    Returns:
        The builder's signature.
    """
    signature = builder_signature(cfg.model.builder)
    owned = [name for name in signature.arguments if name in ESTIMATOR_ARGUMENTS]
    if owned:
        raise ConfigError(
            f"model.builder: {signature.path} takes {owned[0]!r}, a name the estimator keeps for itself (so scikeras "
            "never passes it to a builder); rename that argument (compile_kwargs gives a builder the compile settings)"
        )
    for name in cfg.model.builder_args:
        if name in HYPERPARAMETERS:
            raise ConfigError(
                f"model.builder_args.{name}: set model.{name} instead (a typed key, checked against its choices)"
            )
        if name in ESTIMATOR_ARGUMENTS:
            raise ConfigError(f"model.builder_args.{name}: {name!r} is the estimator's own parameter, not a builder's")
    given = {name: value for name, value in estimator_params(cfg.model).items() if is_builder_argument(name)}
    for name, value in given.items():
        check_argument(signature, name, f"{config_key(name)}: {value!r} is not an argument of the builder")
    for where, grid in grids:
        axes = [key for key in grid if is_builder_argument(key)]
        for key in axes:
            check_argument(signature, key, f"{where}.{key}: not an estimator parameter", TRAINING_ARGUMENTS)
            if signature.takes_any and key not in given:  # its parameters are the names the config gives
                raise ConfigError(
                    f"{where}.{key}: {signature.path} takes **kwargs, so the estimator has only the arguments the "
                    f"config names; set model.builder_args.{key}=VALUE too"
                )
        for name in signature.required:
            if name not in {*given, *axes}:
                raise ConfigError(
                    f"model.builder_args.{name}: {signature.path} needs it (it has no default); set "
                    f"model.builder_args.{name}=VALUE or make {name} a grid axis"
                )
    return signature


def check_argument(signature: BuilderSignature, name: str, problem: str, also: tuple[str, ...] = ()) -> None:
    """Raise ``problem`` with the builder's real arguments (and ``also``) unless the builder takes ``name``."""
    if signature.takes_any or name in signature.arguments:
        return
    owner = f"the keyword arguments of {signature.path}" + (", then the estimator's own" if also else "")
    raise ConfigError(f"{problem}; valid: {', '.join([*signature.arguments, *also])} ({owner})")


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
    from mnist_hpo.model.cnn import build_cnn

    parameters = inspect.signature(build_cnn).parameters
    return {name: parameters[name].default for name in ARCHITECTURE}


def check_feature_maps(base: dict[str, Any], grid: dict[str, Any], shape: tuple[int, ...], where: str) -> None:
    """Every architecture the grid can combine must keep a feature map of at least 1 x 1 pixel."""
    base = cnn_defaults(base) | base
    listed = bounding_values(build_space(grid, allow_distributions=True))
    axes = [name for name in ARCHITECTURE if name in listed]
    size = min(shape[:2])  # the shorter side vanishes first
    for values in itertools.product(*(listed[name] for name in axes)):
        params = base | dict(zip(axes, values, strict=True))
        arguments = {name: params[name] for name in ARCHITECTURE}
        if feature_map(size, **arguments) is None:
            key = f"{where}.kernel_size" if "kernel_size" in axes else config_key("kernel_size")
            raise ConfigError(
                f"{key}: kernel {params['kernel_size']} with padding {params['padding']}, pooling "
                f"{params['pool_size']} and {len(params['conv_filters'])} conv block(s) leaves no "
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
    """Build each distinct architecture the grids' builder arguments combine once, on the data's shape and classes.

    Args:
        cfg: The run's config (its ``model`` group is the base every candidate starts from).
        grids: Each search space with the config key it comes from (``grid``, ``study.coarse``).
        x: The training images: their shape is what every fit's model meets.
        y: The training labels: their classes are what every fit's model must output.
    """
    from mnist_hpo.execution.estimator import (
        build_estimator,  # Keras loads here: only building tells what a builder does
    )

    estimator = build_estimator(cfg.model, ExecutionConfig(model_cache_mb=0), cfg.seed)
    classes = np.unique(y)
    probe = np.zeros((len(classes), *x.shape[1:]), dtype=x.dtype)  # one blank image per class, as a fit's meta
    images = f"{' x '.join(str(side) for side in x.shape[1:])} images of {len(classes)} classes"
    built: set[str] = set()
    failures: list[tuple[str, dict[str, Any], str]] = []
    for where, grid in grids:
        listed = bounding_values(build_space(grid, allow_distributions=True))
        axes = [name for name in listed if is_builder_argument(name)]
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
    if cfg.search.strategy == "halving" and not cfg.study.enabled:
        space = build_space(dict(cfg.grid), allow_distributions=True)
        if has_distributions(space):  # HalvingRandomSearchCV
            count = cfg.search.n_candidates if cfg.search.n_candidates != "exhaust" else None
        else:
            count = len(ParameterGrid(space))
        check_halving(cfg, y_train, count)
