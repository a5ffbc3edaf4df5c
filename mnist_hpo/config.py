"""The typed configuration schema that Hydra validates every composed config against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# A multirun's jobs find their MLflow sweep run here (set by mnist_hpo.tracking.sweep).
SWEEP_RUN_ENV = "MNIST_HPO_SWEEP_RUN_ID"


class ConfigError(ValueError):
    """A bad configuration value, reported to the user as one line before any training."""


@dataclass
class ModelConfig:
    """The CNN and how it is trained; every field maps to one estimator parameter."""

    conv_filters: list[int] = field(default_factory=lambda: [16])
    kernel_size: int = 3
    padding: str = "same"
    pool_size: int = 2
    dense_units: int = 64
    dropout_conv: float = 0.0
    dropout_dense: float = 0.0
    activation: str = "relu"
    kernel_initializer: str = "glorot_uniform"
    precision: str = "float32"
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
    """Where MNIST comes from and how much of it a run uses."""

    source: str = "embedded"
    path: str | None = None
    train_size: int | None = None
    test_size: int | None = None


@dataclass
class RayConfig:
    """Where ``search.backend=ray`` sends fits, and what each fit asks of the cluster."""

    address: str | None = None
    ray_remote_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchConfig:
    """The scikit-learn search strategy, its folds and scoring."""

    strategy: str = "grid"
    cv: int = 3
    scoring: str = "accuracy"
    n_jobs: int = 1
    refit: bool = True
    error_score: Any = "nan"
    return_train_score: bool = True
    n_iter: int = 10
    resource: str = "n_samples"
    factor: int = 3
    min_resources: Any = "exhaust"
    n_candidates: Any = "exhaust"
    progress: bool = True
    backend: str = "loky"
    worker_threads: int | None = None
    worker_max_growth_mb: int = 300
    model_cache_mb: int = 256
    gpu_memory_fraction: float | None = None
    ray: RayConfig = field(default_factory=RayConfig)
    resume: bool = True
    journal_dir: str | None = None


@dataclass
class TrackingConfig:
    """MLflow settings; paths resolve against the launch directory."""

    enabled: bool = True
    uri: str | None = None
    store_dir: str = "mlruns"
    experiment: str = "mnist-hpo"
    log_model: bool = True
    registered_model_name: str | None = None


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    seed: int = 42
    deterministic: bool = False
    backend: str = "tensorflow"
    device: str = "auto"


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can name it first in its defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)
