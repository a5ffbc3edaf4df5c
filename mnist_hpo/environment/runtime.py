"""Chooses the Keras backend and device, which must happen before Keras is first imported."""

from __future__ import annotations

import logging
import os
import sys
from importlib.util import find_spec

from mnist_hpo.configuration.choices import BACKENDS, DEVICES
from mnist_hpo.configuration.schema import ConfigError
from mnist_hpo.configuration.values import one_of
from mnist_hpo.environment.quiet import chatter_to_log

# Whether the user asked for deterministic ops (``deterministic=true``); workers inherit it. TensorFlow's
# own switch cannot say: scikeras turns op determinism on whenever it builds a model and leaves it on.
DETERMINISTIC_ENV = "MNIST_HPO_DETERMINISTIC"
# Every environment variable this module and the workers set for the backend, device and GPU memory:
# local workers inherit them, and the Ray backend forwards exactly these to its actors.
BACKEND_ENV = (
    "KERAS_BACKEND",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "CUDA_VISIBLE_DEVICES",
    "JAX_PLATFORMS",
    DETERMINISTIC_ENV,
)

# What to install for each Keras backend (extras in pyproject.toml).
INSTALL_HINTS = {"tensorflow": "mnist-hpo", "jax": "mnist-hpo[jax]", "torch": "mnist-hpo[torch]"}


def require_backend(backend: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``backend`` cannot be imported here."""
    if find_spec(backend) is not None:
        return
    installed = [name for name in BACKENDS if find_spec(name) is not None]
    raise ConfigError(
        f'backend: {backend} is not installed in this environment (pip install "{INSTALL_HINTS[backend]}"); '
        f"installed: {', '.join(installed) or 'none'}"
    )


def configure_backend(backend: str, device: str) -> None:
    """Set the environment that Keras and its backends read at import time.

    Worker processes started later (joblib/loky) inherit it, so every fit agrees.
    """
    one_of(BACKENDS)("backend", backend)
    one_of(DEVICES)("device", device)
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        raise ConfigError(
            f"backend: Keras is already loaded with {loaded.backend.backend()!r} in this process; "
            f"start a new process for backend={backend}"
        )
    require_backend(backend)
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Take GPU memory as needed, never the whole card, so several fits can share one GPU.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["JAX_PLATFORMS"] = "cpu"
    # JAX logs at INFO each accelerator it looked for and did not find ("Unable to initialize backend
    # 'tpu'"); Hydra's job logging prints INFO, so every JAX run opened with that line.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def visible_gpus() -> int:
    """How many GPUs the active Keras backend can use."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def describe_device(device: str) -> str:
    """``gpu`` or ``cpu``; raise when ``device=gpu`` but no GPU is visible."""
    gpus = visible_gpus() if device != "cpu" else 0
    if device == "gpu" and gpus == 0:
        raise ConfigError("device: gpu was asked for but the Keras backend sees no GPU; use device=cpu or auto")
    return f"gpu x{gpus}" if gpus else "cpu"


def deterministic_asked() -> bool:
    """Whether this job asked for deterministic ops (set by :func:`seed_everything`, inherited by workers)."""
    return os.environ.get(DETERMINISTIC_ENV) == "1"


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with ``deterministic`` also force deterministic ops."""
    import keras

    os.environ[DETERMINISTIC_ENV] = "1" if deterministic else "0"
    with chatter_to_log():  # on any backend Keras seeds TensorFlow too where it is installed, importing it
        keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
