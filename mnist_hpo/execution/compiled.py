"""Chooses the compiled trainer of the active Keras backend for a group of members."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mnist_hpo.execution.fused_model import fused_model
from mnist_hpo.execution.trainer import Trainer


def build_trainer(
    models: Sequence[keras.Model], sparse: Sequence[bool], wide: bool = True, micro: int | None = None
) -> Trainer:
    """The compiled trainer of the active Keras backend for ``models``, in their fastest exact form.

    ``micro``: rows per micro-step, for a trainer that serves several batch sizes (:class:`Trainer`).
    """
    fused = fused_model(models, wide)
    backend = keras.backend.backend()
    if backend == "jax":
        from mnist_hpo.execution.trainer_jax import JaxTrainer

        return JaxTrainer(fused, models, sparse, micro)
    if backend == "tensorflow":
        from mnist_hpo.execution.trainer_tf import TensorFlowTrainer

        return TensorFlowTrainer(fused, models, sparse, micro)
    raise ValueError(f"no compiled trainer for the {backend} backend")
