"""The compiled trainer: the fits of one group trained together, each epoch one compiled call.

Keras' own ``fit`` loop pays Python and dispatch per step, which bounds a small CNN at a few
thousand samples a second here; with the whole epoch inside one compiled call the same fit runs
several times faster, and members that share a fold's batches in that call multiply it
(docs/performance.md).

Each member is a compiled Keras model at its initial state, as the estimator built it; the group
runs as one :class:`~mnist_hpo.execution.fused_model.FusedModel`. Members share no parameter and no
op: each step computes every member's own loss (its weighted mean over the step's real rows, plus the
model's regularisation losses) and one optimizer of the members' settings steps them all, which is
each member's own update. A member whose loss turns non-finite is frozen (its parameters no longer
change) and reported failed; the others train on.

* TensorFlow: ``tf.function(jit_compile=True)`` over a ``tf.while_loop`` of steps
  (``optimizer.stateless_apply`` is JAX-only, so the optimizer updates Keras variables in place).
* JAX: ``jax.jit`` over a ``lax.scan`` of steps, ``optimizer.stateless_apply``.

A trainer is built once per group structure and reused for every fold of it: only the data and the
initial state change, so each fold after the first runs the already compiled epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from mnist_hpo.execution.batches import BatchOrder
from mnist_hpo.execution.fused_model import STACKED, FusedModel

VALIDATION_CHUNK = 1024  # validation rows per compiled evaluation step
BACKENDS = ("tensorflow", "jax")
OPTIMIZER_MIXERS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "gradient_accumulation_steps")


@dataclass(frozen=True)
class MemberFit:
    """One member's outcome: its weights in ``model.get_weights()`` order and per-epoch history.

    ``error`` names why it failed (its loss turned non-finite); then ``weights`` are not a result.
    """

    weights: list[np.ndarray]
    history: dict[str, list[float]]
    error: str | None = None


def per_sample_loss(model: keras.Model) -> Callable[[Any, Any], Any] | None:
    """The compiled loss of ``model`` as a per-sample function, or None when it cannot be read."""
    loss = model.loss
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # the documented per-sample hook of a Loss subclass
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    return loss if callable(loss) else None


def unfusable_reason(model: keras.Model) -> str | None:
    """Why ``model`` cannot train in the compiled trainer (None: it can), in a user's words."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        return f"the {backend} backend has no compiled trainer here"
    policies = [model.dtype_policy, *(layer.dtype_policy for layer in model.layers if hasattr(layer, "dtype_policy"))]
    if any(policy.name != "float32" for policy in policies):
        return "mixed precision trains through Keras' fit (its loss scaling)"
    if isinstance(model.loss, list | dict) or len(model.outputs) != 1:
        return "it has more than one output"
    if per_sample_loss(model) is None:
        return f"its loss {model.loss!r} is not a Keras loss"
    config = model.optimizer.get_config()
    if any(config.get(name) for name in OPTIMIZER_MIXERS):
        return "its optimizer clips, averages or accumulates gradients across parameters"
    return None


def correct_count(y_true: Any, y_pred: Any, weight: Any, sparse: bool) -> Any:
    """Weighted count of rows whose most probable class is the true one (Keras' accuracy)."""
    ops = keras.ops
    predicted = ops.argmax(y_pred, axis=-1)
    truth = ops.reshape(y_true, (-1,)) if sparse else ops.argmax(y_true, axis=-1)
    return ops.sum(ops.cast(ops.equal(predicted, ops.cast(truth, predicted.dtype)), "float32") * weight)


class Trainer:
    """Trains the members of one :class:`FusedModel` together, fold after fold, from their initial state."""

    def __init__(self, fused: FusedModel, models: Sequence[keras.Model], sparse: Sequence[bool]) -> None:
        """Args:
        fused: The members as one function of their parameters.
        models: The members' compiled Keras models (their losses and optimizer settings).
        sparse: Per member, whether its targets are class indices (else one-hot rows).
        """
        self.fused = fused
        self.sparse = list(sparse)
        self.losses = [per_sample_loss(model) for model in models]
        self.optimizer_class = type(models[0].optimizer)
        self.optimizer_config = models[0].optimizer.get_config()

    def new_optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh optimizer with the members' class and settings."""
        return self.optimizer_class.from_config(self.optimizer_config)

    def fit(self, x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder, epochs: int) -> list[MemberFit]:
        """Train every member from its initial state on ``x`` (each with its own ``targets``) in ``order``."""
        raise NotImplementedError

    def member_losses(self, probabilities: Any, regularisation: Any, targets: Any, weight: Any) -> tuple[Any, Any]:
        """Each member's weighted mean loss (plus its regularisation) and its weighted correct count."""
        rows = keras.ops.sum(weight)
        losses, corrects = [], []
        for member, y_pred in enumerate(probabilities):
            per_sample = self.losses[member](targets[member], y_pred)
            losses.append(keras.ops.sum(per_sample * weight) / rows + regularisation[member])
            corrects.append(correct_count(targets[member], y_pred, weight, self.sparse[member]))
        return keras.ops.stack(losses), keras.ops.stack(corrects)

    def member_mask(self, alive: Any, tensor: int, rank: int) -> Any:
        """``alive`` shaped to select, in trainable tensor ``tensor``, the slices of members still alive."""
        owner = self.fused.owners[tensor]
        if owner != STACKED:
            return alive[owner]
        return keras.ops.reshape(alive, (-1,) + (1,) * (rank - 1))

    @staticmethod
    def validation_chunks(x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder) -> tuple[Any, ...]:
        """The validation rows as fixed-size chunks with a weight per row (padding weighs 0)."""
        start = order.train_rows
        rows = order.rows - start
        chunk = min(VALIDATION_CHUNK, max(rows, 1))
        chunks = max(1, math.ceil(rows / chunk))
        padded = chunks * chunk
        index = np.zeros(padded, dtype=np.int32)
        index[:rows] = np.arange(start, order.rows)
        weight = np.zeros(padded, dtype=np.float32)
        weight[:rows] = 1.0
        xv = x[index].reshape(chunks, chunk, *x.shape[1:])
        yv = [target[index].reshape(chunks, chunk, *target.shape[1:]) for target in targets]
        return xv, yv, weight.reshape(chunks, chunk)

    def run_epochs(
        self, epoch_call: Callable[[int], tuple[Any, Any, Any]], order: BatchOrder, epochs: int
    ) -> tuple[list[dict[str, list[float]]], list[int | None]]:
        """Call the compiled epoch ``epochs`` times; each member's history and the epoch it failed at (or None)."""
        members = self.fused.members
        histories: list[dict[str, list[float]]] = [{} for _ in range(members)]
        failed: list[int | None] = [None] * members
        validation_rows = order.rows - order.train_rows
        for epoch in range(epochs):
            alive, sums, validation = (np.asarray(value) for value in epoch_call(epoch))
            for member in range(members):
                if failed[member] is not None:
                    continue
                metrics = {"loss": sums[member][0] / order.train_rows, "accuracy": sums[member][1] / order.train_rows}
                if validation_rows:
                    metrics["val_loss"] = validation[member][0] / validation_rows
                    metrics["val_accuracy"] = validation[member][1] / validation_rows
                for name, value in metrics.items():
                    histories[member].setdefault(name, []).append(float(value))
                if not alive[member] or not np.isfinite(sums[member][0]):
                    failed[member] = epoch
            if all(epoch is not None for epoch in failed):
                break
        return histories, failed

    @staticmethod
    def results(
        weights: list[list[np.ndarray]], histories: list[dict[str, list[float]]], failed: list[int | None]
    ) -> list[MemberFit]:
        """One :class:`MemberFit` per member."""
        return [
            MemberFit(
                weights[member],
                histories[member],
                None if epoch is None else f"training loss became non-finite at epoch {epoch + 1}",
            )
            for member, epoch in enumerate(failed)
        ]
