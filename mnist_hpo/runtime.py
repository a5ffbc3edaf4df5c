"""Chooses the Keras backend and device, which must happen before Keras is first imported."""

from __future__ import annotations

import os
import sys

from mnist_hpo.config import ConfigError


def configure_backend(backend: str, device: str) -> None:
    """Set the environment that Keras and its backends read at import time.

    Worker processes started later (joblib/loky) inherit it, so every fit agrees.
    """
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        raise ConfigError(
            f"backend: Keras is already loaded with {loaded.backend.backend()!r} in this process; "
            f"start a new process for backend={backend}"
        )
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Take GPU memory as needed, never the whole card, so several fits can share one GPU.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["JAX_PLATFORMS"] = "cpu"


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


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and the backend; with ``deterministic`` also force deterministic ops."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
