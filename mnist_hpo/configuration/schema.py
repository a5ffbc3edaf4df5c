"""The typed configuration: Hydra validates the composed config against it, and only it travels below ``__main__``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

# A multirun's jobs find their MLflow sweep run here (set by mnist_hpo.tracking.sweep).
SWEEP_RUN_ENV = "MNIST_HPO_SWEEP_RUN_ID"


class ConfigError(ValueError):
    """A bad configuration value, reported to the user as one line before any training."""


# The tracking store's folder (SQLite database, artifacts, fit store, Optuna studies) unless tracking.store_dir says.
STORE_DIR = "mlruns"


@dataclass
class ModelConfig:
    """The network and how it is trained; every field set maps to one estimator parameter.

    ``builder`` is the dotted path of a function returning an uncompiled ``keras.Model``. The
    architecture fields (``conv_filters`` to ``precision``) are keyword arguments of the package's
    CNN, checked against the package's choices; they reach any builder that takes them and are None
    (the builder's own default) where unset. ``builder_args`` holds a builder's other keyword
    arguments. Each is the estimator parameter of its own name (``activation``, ``learning_rate``),
    so grids, Optuna spaces and MLflow say what the config says (model/params.py).
    """

    builder: str = "mnist_hpo.model.cnn.build_cnn"
    builder_args: dict[str, Any] = field(default_factory=dict)
    conv_filters: list[int] | None = None
    kernel_size: int | None = None
    padding: str | None = None
    pool_size: int | None = None
    dense_units: int | None = None
    dropout_conv: float | None = None
    dropout_dense: float | None = None
    activation: str | None = None
    kernel_initializer: str | None = None
    precision: str | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    loss: str = "categorical_crossentropy"
    epochs: int = 3
    batch_size: int = 32
    predict_batch_size: int = 1024
    validation_split: float = 0.0
    steps_per_execution: int = 1
    jit_compile: Any = "auto"


@dataclass
class DataConfig:
    """Where the images come from (MNIST or any data set in its formats) and how much of it a run uses."""

    source: str = "embedded"
    path: str | None = None
    train_size: int | None = None
    test_size: int | None = None


@dataclass
class RayConfig:
    """Where ``execution.backend=ray`` sends fits, and what each fit asks of the cluster."""

    address: str | None = None
    ray_remote_args: dict[str, Any] = field(default_factory=dict)
    placement_timeout_s: float = 120.0  # how long the cluster may lack room for a search's worker


@dataclass
class SearchConfig:
    """What is searched and how candidates are judged: strategy, folds, scoring, refit."""

    strategy: str = "grid"
    cv: int = 3
    cv_repeats: int = 1
    scoring: str = "accuracy"
    refit: Any = True
    alpha: float = 0.05
    rope: float = 0.005
    error_score: Any = "nan"
    return_train_score: bool = True
    n_iter: int = 10
    sampler: str = "tpe"
    # Optuna trials asked, trained (one fused group per split) and told together. Not sized from the
    # execution group: a batch decides which trials TPE asks for, and execution decides no result.
    trials_per_batch: int = 8
    resource: str = "n_samples"
    factor: int = 3
    min_resources: Any = "exhaust"
    n_candidates: Any = "exhaust"


@dataclass
class ExecutionConfig:
    """How and where fits run, never what they find: no field here is part of a result's identity."""

    n_jobs: int = 1
    backend: str = "loky"
    ray: RayConfig = field(default_factory=RayConfig)
    worker_threads: int | None = None
    worker_max_growth_mb: int | None = None  # None: DEFAULT_WORKER_GROWTH_MB on loky
    model_cache_mb: int = 256
    gpu_memory_fraction: float | None = None
    progress: bool = True
    resume: bool = True
    fit_store: bool = True
    fit_store_dir: str | None = None
    fit_store_budget_mb: int = 2048
    fusion: bool = True
    fused_group_mb: int = 1024


@dataclass
class TrackingConfig:
    """MLflow settings; paths resolve against the launch directory."""

    enabled: bool = True
    uri: str | None = None
    store_dir: str = STORE_DIR
    experiment: str = "mnist-hpo"
    log_model: bool = True
    registered_model_name: str | None = None
    ui_url: str | None = None  # the MLflow UI the printed links open; None: the tracking server's, else the local UI


@dataclass
class StudyConfig:
    """A coarse-to-fine study: one coarse grid per hyperparameter, then a fine grid over the best."""

    enabled: bool = False
    coarse: dict[str, Any] = field(default_factory=dict)
    stage1_train_size: int | None = None
    top_m: int = 2
    top_k: int = 2


@dataclass
class Config:
    """The whole run: one field per config group plus run-wide settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    grid: dict[str, Any] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    seed: int = 42
    deterministic: bool = False
    backend: str = "tensorflow"
    device: str = "auto"


# Groups that never decide a result: left out of every result identity (resume, fit keys).
RESULT_NEUTRAL_GROUPS = ("execution", "tracking")
EXECUTION_KEYS = tuple(item.name for item in fields(ExecutionConfig))


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can name it first in its defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def typed(cfg: DictConfig) -> Config:
    """The composed config as the typed ``Config`` dataclasses: the one conversion, at the edge."""
    return OmegaConf.to_object(cfg)


def config_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as it is recorded with each search."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


# Keys that are gone, and what took their place.
REPLACED_KEYS = {
    "search.journal_dir": "execution.fit_store_dir (finished fits are kept in the fit store)",
    "execution.journal_dir": "execution.fit_store_dir (finished fits are kept in the fit store)",
}


def moved_key(override: str) -> str | None:
    """The one-line error for a command-line override of a key that moved to ``execution`` or was replaced."""
    key = override.lstrip("+~").split("=", 1)[0]
    value = override.split("=", 1)[1] if "=" in override else "..."
    if key in REPLACED_KEYS:
        return f"{key}: replaced by {REPLACED_KEYS[key]}"
    group, _, name = key.partition(".")
    if group == "search" and name.split(".")[0] in EXECUTION_KEYS:
        return f"{key}: moved to execution.{name} (how fits run, not what is searched); use execution.{name}={value}"
    return None
