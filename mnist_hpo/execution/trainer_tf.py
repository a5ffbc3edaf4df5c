"""The compiled trainer on TensorFlow: one ``tf.function(jit_compile=True)`` call per epoch over a ``tf.while_loop``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from mnist_hpo.environment.runtime import deterministic_asked
from mnist_hpo.execution.batches import BatchOrder
from mnist_hpo.execution.fused_model import FusedModel
from mnist_hpo.execution.trainer import MemberFit, Rows, Trainer


@contextmanager
def op_determinism(enabled: bool) -> Iterator[None]:
    """TensorFlow's op determinism set to ``enabled`` for the block, then as it was.

    scikeras enables it process-wide whenever it builds a model and leaves it on; XLA then refuses
    MaxPool's gradient. Only what the user asked for (``deterministic``) decides it here. The one
    reach into TensorFlow's non-public ``config`` module: the public API can set it but not read it.
    """
    before = tf_config.is_op_determinism_enabled()
    if enabled != before:
        (tf_config.enable_op_determinism if enabled else tf_config.disable_op_determinism)()
    try:
        yield
    finally:
        if enabled != before:
            (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()


class TensorFlowTrainer(Trainer):
    """The members' parameters live in Keras variables, reset to the initial values at every fold.

    TensorFlow optimizers update variables in place (``stateless_apply`` raises on this backend).
    """

    def __init__(
        self, fused: FusedModel, models: Sequence[keras.Model], sparse: Sequence[bool], micro: int | None = None
    ) -> None:
        super().__init__(fused, models, sparse, micro)
        self.trainable = [keras.Variable(value) for value in fused.trainable]
        self.non_trainable = [keras.Variable(value, trainable=False) for value in fused.non_trainable]
        self.optimizer = self.new_optimizer()
        self.optimizer.build(self.trainable)
        self.scales = self.rate_scales()
        self.initial_optimizer = [np.array(variable.numpy()) for variable in self.optimizer.variables]
        # XLA has no deterministic kernel for some gradients, and its random kernels draw other numbers
        # than TensorFlow's (which Keras' own fit uses on a CPU): deterministic=true, and models with
        # dropout, run the same loop as a TensorFlow graph instead, slower but still one call per epoch.
        self.deterministic = deterministic_asked()
        self.xla = not (self.deterministic or fused.draws_random)
        self.epoch = tf.function(self.epoch_fn, jit_compile=self.xla, autograph=False)
        self.evaluate = self.evaluation(self.xla)

    def reset(self) -> None:
        """Every member back at its initial weights, optimizer slots and step counter."""
        for variable, value in zip(self.trainable, self.fused.trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(self.non_trainable, self.fused.non_trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self.initial_optimizer, strict=True):
            variable.assign(value)

    def step(self, xb: Any, yb: Any, weight: Any, alive: Any, fraction: Any = 1.0) -> tuple[Any, ...]:
        """Every member's gradients on one (micro-)step; returns (them, alive after it, losses, correct counts).

        Each member's loss is its mean over the step's real rows; a micro-step's is weighted by ``fraction``,
        its share of its step's rows, so the micro-steps' gradients sum to the step's.
        """
        with tf.GradientTape() as tape:
            values = [variable.value for variable in self.trainable]
            tape.watch(values)
            probabilities, non_trainable, regularisation = self.fused.forward(
                values, [variable.value for variable in self.non_trainable], xb, True
            )
            losses, corrects = self.member_losses(probabilities, regularisation, yb, weight)
            total = tf.reduce_sum(tf.where(alive, losses, 0.0)) * fraction
        grads = tape.gradient(total, values)
        grads = [tf.zeros_like(value) if grad is None else grad for grad, value in zip(grads, values, strict=True)]
        for variable, value in zip(self.non_trainable, non_trainable, strict=True):
            variable.assign(value)
        return grads, tf.logical_and(alive, tf.math.is_finite(losses)), losses, corrects

    def update(self, grads: list[Any]) -> None:
        """One optimizer update of every member from ``grads``, each at its own learning rate."""
        values = [variable.value for variable in self.trainable]
        before = None if self.scales is None else [tf.identity(value) for value in values]  # read before the step
        self.optimizer.apply_gradients(zip(grads, self.trainable, strict=True))
        if before is not None:  # each member's own learning rate times the step taken at rate 1
            for variable, value, scale in zip(self.trainable, before, self.scales, strict=True):
                variable.assign(value + scale * (variable.value - value))

    def epoch_fn(self, alive: Any, x: Any, ys: Any, index: Any, weight: Any, fraction: Any, ends: Any) -> Any:
        """One epoch of every member: the loop of its (micro-)steps; returns (alive after it, loss and correct sums).

        Without micro-steps each iteration is a step; with them, gradients add up until the step's last
        micro-step (``ends``), which applies the update.
        """
        zeros = [tf.zeros_like(variable.value) for variable in self.trainable] if self.micro else []

        def body(step: Any, alive: Any, sums: Any, pending: Any) -> Any:
            rows = tf.gather(index, step)
            yb = [tf.gather(y, rows) for y in ys]
            grads, ok, losses, corrects = self.step(tf.gather(x, rows), yb, weight[step], alive, fraction[step])
            if self.micro:
                pending = [total + grad for total, grad in zip(pending, grads, strict=True)]

                def apply() -> list[Any]:
                    self.update(pending)
                    return list(zeros)

                pending = tf.cond(ends[step], apply, lambda: list(pending))
            else:
                self.update(grads)
            count = tf.reduce_sum(weight[step])
            sums = sums + tf.stack([tf.where(alive, losses, np.nan) * count, corrects], axis=1)
            return step + 1, ok, sums, pending

        _, alive, sums, _ = tf.while_loop(
            lambda step, *_: step < tf.shape(index)[0],
            body,
            (tf.constant(0), alive, tf.zeros((self.fused.members, 2), dtype=tf.float32), zeros),
        )
        return alive, sums

    def compile_evaluation(self) -> Any:
        return tf.function(self.evaluate_fn, jit_compile=self.xla, autograph=False)

    def fit(
        self, x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder, epochs: int, score: Rows = ()
    ) -> list[MemberFit]:
        """Train every member from its initial state; one compiled call per epoch."""
        targets = self.kind_targets(targets)
        self.reset()
        chunk = self.evaluation_rows(order, score)
        validation = [
            (tf.constant(xc), [tf.constant(y) for y in ycs], tf.constant(wc))
            for xc, ycs, wc in self.validation_chunks(x, targets, order, chunk)
        ]
        data = (tf.constant(x), [tf.constant(target) for target in targets])
        state = {"alive": tf.ones(self.fused.members, dtype=tf.bool)}
        nothing = np.zeros((self.fused.members, 2), np.float32)

        def epoch_call(epoch: int) -> tuple[Any, Any, Any]:
            steps = order.micro_layout(epoch, self.micro or order.batch_size)
            layout = (steps.indices, steps.weights, steps.fraction, steps.ends)
            with op_determinism(self.deterministic):
                state["alive"], sums = self.epoch(state["alive"], *data, *(tf.constant(part) for part in layout))
                totals = nothing
                if validation:
                    trainable = [variable.value for variable in self.trainable]
                    non_trainable = [variable.value for variable in self.non_trainable]
                    totals = self.validation_totals(trainable, non_trainable, validation)
            return state["alive"], sums, totals

        histories, failed = self.run_epochs(epoch_call, order, epochs)
        trainable = [variable.value for variable in self.trainable]
        non_trainable = [variable.value for variable in self.non_trainable]
        with op_determinism(self.deterministic):  # the values as the validation pass takes them: one trace
            outputs = self.outputs(trainable, non_trainable, score, self.blank_chunk(targets, chunk))
        weights = [[value.numpy() for value in values] for values in (trainable, non_trainable)]
        return self.results(self.fused.member_weights(*weights), histories, failed, outputs)
