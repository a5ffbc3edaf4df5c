"""Sends a search's (candidate, fold) fits to a Ray cluster through Ray's own joblib backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib

from mnist_hpo.config import ConfigError, RayConfig

# What Ray's workers must inherit to build the same Keras as this process.
FORWARDED_ENV = (
    "KERAS_BACKEND",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "CUDA_VISIBLE_DEVICES",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
)

# Ray's joblib backend runs fits on a pool of actors, which by default die for good with their node
# and fail the search. Restarted instead, wherever Ray finds room, they run the lost fit again. Task
# retries are unbounded because Ray spends them while it is still deciding that a node is dead
# (seconds of "actor unavailable"); the restarts bound a fit that keeps killing its worker.
FAULT_TOLERANCE: dict[str, Any] = {"max_restarts": 5, "max_task_retries": -1}


def remote_args(config: RayConfig) -> dict[str, Any]:
    """The options of every Ray actor that runs fits: :data:`FAULT_TOLERANCE`, overridden by ``ray_remote_args``."""
    return FAULT_TOLERANCE | dict(config.ray_remote_args)


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local one when it is empty."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("execution.backend: ray needs Ray; pip install -e '.[ray]'") from error
    if ray.is_initialized():
        return
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    try:
        ray.init(address=address or None, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False)
    except ConnectionError as error:
        raise ConfigError(f"execution.ray.address: cannot reach a Ray cluster at {address!r} ({error})") from error


@contextmanager
def ray_workers(config: RayConfig) -> Iterator[None]:
    """Run joblib work (the search's fits) on Ray actors made with :func:`remote_args`."""
    connect(config.address)
    from ray.util.joblib import register_ray

    register_ray()
    with joblib.parallel_config(backend="ray", ray_remote_args=remote_args(config)):
        yield
