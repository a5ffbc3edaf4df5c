"""Checks a composed config before anything trains, raising one-line ``ConfigError``s."""

from __future__ import annotations

import importlib.util
from typing import Any

from sklearn.metrics import get_scorer_names

from mnist_hpo.configuration import choices
from mnist_hpo.configuration.schema import (
    Config,
    ConfigError,
    DataConfig,
    ExecutionConfig,
    ModelConfig,
    SearchConfig,
    StudyConfig,
)
from mnist_hpo.configuration.values import Check, number, one_of
from mnist_hpo.model.params import HYPERPARAMETERS, estimator_params, is_builder_argument
from mnist_hpo.search.selection import REFIT_RULES
from mnist_hpo.search.space import bounding_values, build_space, is_distribution


def filters(key: str, value: Any) -> None:
    """A check that conv filters are a non-empty list of positive integers."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: {value!r} must be a non-empty list of filter counts, e.g. [32, 64]")
    for item in value:
        number(1, integer=True)(key, item)


def jit_compile(key: str, value: Any) -> None:
    """A check for Keras' ``jit_compile``: true, false or auto."""
    if value not in (True, False, "auto"):
        raise ConfigError(f"{key}: {value!r} must be true, false or auto")


RULES: dict[str, Check] = {
    "conv_filters": filters,
    "kernel_size": number(1, integer=True),
    "padding": one_of(choices.PADDINGS),
    "pool_size": number(0, integer=True),
    "dense_units": number(0, integer=True),
    "dropout_conv": number(0, 1),
    "dropout_dense": number(0, 1),
    "activation": one_of(choices.ACTIVATIONS),
    "kernel_initializer": one_of(choices.INITIALIZERS),
    "precision": one_of(choices.PRECISIONS),
    "optimizer": one_of(choices.OPTIMIZERS),
    "learning_rate": number(0, closed_low=False),
    "momentum": number(0, 1),
    "loss": one_of(choices.LOSSES),
    "epochs": number(1, integer=True),
    "batch_size": number(1, integer=True),
    "predict_batch_size": number(1, integer=True),
    "validation_split": number(0, 1),
    "steps_per_execution": number(1, integer=True),
    "jit_compile": jit_compile,
}


def validate_model(model: ModelConfig) -> None:
    """Check every typed ``model.*`` value; a builder's own arguments (``model.builder_args``) are preflight's."""
    for name, value in estimator_params(model).items():
        if name in HYPERPARAMETERS:
            RULES[name](f"model.{name}", value)


def validate_grid(grid: dict[str, Any], allow_distributions: bool, where: str = "grid") -> None:
    """Check the grid is non-empty, names estimator parameters and lists valid values."""
    if not grid:
        raise ConfigError(f"{where}: the search space is empty; give at least one parameter with values")
    # Other names are the builder's keyword arguments: preflight checks them against its signature.
    unknown = [key for key in grid if key not in RULES and not is_builder_argument(key)]
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: not a hyperparameter (it says how a fit runs, not what it learns); "
            f"valid: {', '.join(RULES)} and the builder's arguments"
        )
    for key, values in bounding_values(build_space(grid, allow_distributions=allow_distributions)).items():
        for value in values if key in RULES else ():
            RULES[key](f"{where}.{key}", value)


def validate_study(study: StudyConfig) -> None:
    """Check the ``study`` group: coarse grids of one hyperparameter each, and what stage 2 keeps."""
    validate_grid(study.coarse, allow_distributions=False, where="study.coarse")
    number(1, integer=True)("study.top_k", study.top_k)
    number(1, len(study.coarse) + 1, integer=True)("study.top_m", study.top_m)
    if study.stage1_train_size is not None:
        number(10, integer=True)("study.stage1_train_size", study.stage1_train_size)


# The packages Optuna's samplers need beyond Optuna itself, and how to get them.
SAMPLER_PACKAGES = {"gp": ("torch", "pip install 'mnist-hpo[torch]'"), "cmaes": ("cmaes", "pip install cmaes")}
NUMERIC = ("uniform", "loguniform", "randint")


def validate_sampler(search: SearchConfig, grid: dict[str, Any]) -> None:
    """Check that ``search.sampler`` can take the grid's space and that its packages are installed.

    CMA-ES samples numeric axes jointly and needs two of them: Optuna would draw a list's values,
    or a lone numeric axis, at random instead, which is not what the user asked for.
    """
    if search.sampler == "cmaes":
        lists = [key for key, value in grid.items() if not (is_distribution(value) and value.get("dist") in NUMERIC)]
        if lists:
            raise ConfigError(
                f"grid.{lists[0]}: search.sampler=cmaes samples numeric distributions only "
                f"({', '.join(NUMERIC)}); use search.sampler=tpe, gp or random for lists"
            )
        if len(grid) < 2:
            raise ConfigError(
                f"search.sampler: cmaes needs two or more numeric axes, the grid has {len(grid)}; use tpe, gp or random"
            )
    package = SAMPLER_PACKAGES.get(search.sampler)
    if package is not None and importlib.util.find_spec(package[0]) is None:
        raise ConfigError(
            f"search.sampler: {search.sampler} needs the {package[0]} package, which is not installed: "
            f"{package[1]}, or use search.sampler=tpe"
        )


def validate_search(search: SearchConfig) -> None:
    """Check the ``search`` group (scorer names from scikit-learn's own registry)."""
    one_of(choices.STRATEGIES)("search.strategy", search.strategy)
    one_of(sorted(get_scorer_names()))("search.scoring", search.scoring)
    number(2, integer=True)("search.cv", search.cv)
    number(1, integer=True)("search.cv_repeats", search.cv_repeats)
    number(0, 1, closed_low=False)("search.alpha", search.alpha)
    number(0)("search.rope", search.rope)
    if search.refit not in (True, False, *REFIT_RULES):
        raise ConfigError(f"search.refit: unknown value {search.refit!r}; valid: true, false, {', '.join(REFIT_RULES)}")
    if search.error_score not in ("nan", "raise") and not isinstance(search.error_score, (int, float)):
        raise ConfigError(f"search.error_score: {search.error_score!r} must be nan, raise or a number")
    number(1, integer=True)("search.n_iter", search.n_iter)
    one_of(choices.SAMPLERS)("search.sampler", search.sampler)
    number(1, integer=True)("search.trials_per_batch", search.trials_per_batch)
    one_of(choices.HALVING_RESOURCES)("search.resource", search.resource)
    number(2, integer=True)("search.factor", search.factor)
    for key in ("min_resources", "n_candidates"):
        value = getattr(search, key)
        if value != "exhaust" and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"search.{key}: {value!r} must be exhaust or a positive integer")


# Settings of loky's local worker processes, which Ray's actors do not have.
LOKY_WORKER_KEYS = ("worker_threads", "worker_max_growth_mb", "gpu_memory_fraction")


def validate_execution(execution: ExecutionConfig) -> None:
    """Check the ``execution`` group."""
    n_jobs = execution.n_jobs
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"execution.n_jobs: {n_jobs!r} must be a non-zero integer (-1 = all cores)")
    one_of(choices.FIT_BACKENDS)("execution.backend", execution.backend)
    if execution.worker_threads is not None:
        number(1, integer=True)("execution.worker_threads", execution.worker_threads)
    if execution.worker_max_growth_mb is not None:
        number(1, integer=True)("execution.worker_max_growth_mb", execution.worker_max_growth_mb)
    number(0, integer=True)("execution.model_cache_mb", execution.model_cache_mb)
    if execution.gpu_memory_fraction is not None:
        number(0, 1.0001, closed_low=False)("execution.gpu_memory_fraction", execution.gpu_memory_fraction)
    number(0, closed_low=False)("execution.ray.placement_timeout_s", execution.ray.placement_timeout_s)
    if execution.backend == "ray":  # Ray starts, sizes and restarts its own actors
        for key in LOKY_WORKER_KEYS:
            value = getattr(execution, key)
            if value is not None:
                raise ConfigError(
                    f"execution.{key}: {value} applies to loky's worker processes, not to execution.backend=ray; "
                    "size Ray's actors with execution.ray.ray_remote_args, e.g. {num_cpus: 2, num_gpus: 0.5}"
                )
    number(1, integer=True)("execution.fit_store_budget_mb", execution.fit_store_budget_mb)
    number(1, integer=True)("execution.fused_group_mb", execution.fused_group_mb)


def validate_data(data: DataConfig) -> None:
    """Check the ``data`` group (file contents are checked when loaded, still before training)."""
    if data.source == "path":  # once a choice of its own; data.path alone says it
        raise ConfigError("data.source: path is not a source; set data.path to an MNIST .npz or IDX folder alone")
    one_of(choices.DATA_SOURCES)("data.source", data.source)
    for key in ("train_size", "test_size"):
        value = getattr(data, key)
        if value is not None:
            number(10, integer=True)(f"data.{key}", value)


def validate_config(cfg: Config) -> None:
    """Check the whole config; raise :class:`ConfigError` on the first bad value."""
    one_of(choices.BACKENDS)("backend", cfg.backend)
    one_of(choices.DEVICES)("device", cfg.device)
    number(0, 2**32, integer=True)("seed", cfg.seed)  # NumPy seeds are unsigned 32-bit
    if cfg.tracking.enabled and not cfg.tracking.experiment.strip():
        raise ConfigError(
            "tracking.experiment: the experiment name is empty; name one, e.g. tracking.experiment=mnist-hpo"
        )
    validate_model(cfg.model)
    validate_data(cfg.data)
    validate_search(cfg.search)
    validate_execution(cfg.execution)
    if cfg.study.enabled:
        validate_study(cfg.study)
        if cfg.search.strategy in ("halving", "optuna"):
            raise ConfigError(
                f"search.strategy: {cfg.search.strategy} cannot run a study's stage 1, which compares every value "
                "of each hyperparameter on the same folds; use grid or random"
            )
        return
    validate_grid(cfg.grid, allow_distributions=cfg.search.strategy != "grid")
    if cfg.search.strategy == "optuna":
        validate_sampler(cfg.search, cfg.grid)
    if cfg.search.strategy == "halving" and cfg.search.resource in cfg.grid:
        raise ConfigError(f"grid.{cfg.search.resource}: it is the halving resource, so it cannot be a grid axis")
