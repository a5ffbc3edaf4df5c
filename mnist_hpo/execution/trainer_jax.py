"""The compiled trainer on JAX: one ``jax.jit`` call per epoch, its steps a ``lax.scan``, Keras' stateless optimizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np

from mnist_hpo.execution.batches import BatchOrder
from mnist_hpo.execution.fused_model import FusedModel
from mnist_hpo.execution.trainer import MemberFit, Rows, Trainer


class JaxTrainer(Trainer):
    """The state is explicit (trainable, non-trainable, optimizer values), so every fold reuses the compiled epoch."""

    def __init__(
        self, fused: FusedModel, models: Sequence[keras.Model], sparse: Sequence[bool], micro: int | None = None
    ) -> None:
        super().__init__(fused, models, sparse, micro)
        variables = [keras.Variable(value) for value in fused.trainable]
        self.optimizer = self.new_optimizer()
        self.optimizer.build(variables)
        self.initial_optimizer = [variable.value for variable in self.optimizer.variables]
        self.epoch = jax.jit(self.epoch_fn)
        self.evaluate = self.evaluation()

    def epoch_fn(self, state: Any, alive: Any, x: Any, ys: Any, steps: Any) -> Any:
        """One epoch of every member: the scan of its (micro-)steps; returns (state, alive, loss and correct sums).

        With micro-steps, gradients add up until the step's last micro-step, which applies the update.
        """

        def total(trainable: Any, non_trainable: Any, xb: Any, yb: Any, weight: Any, alive: Any, share: Any) -> Any:
            probabilities, non_trainable, regularisation = self.fused.forward(trainable, non_trainable, xb, True)
            losses, corrects = self.member_losses(probabilities, regularisation, yb, weight)
            return jnp.sum(jnp.where(alive, losses, 0.0)) * share, (losses, corrects, non_trainable)

        scales = self.rate_scales()

        def update(trainable: Any, optimizer: Any, grads: Any) -> tuple[Any, Any]:
            stepped, optimizer = self.optimizer.stateless_apply(optimizer, grads, trainable)
            if scales is not None:  # each member's own learning rate times the step taken at rate 1
                stepped = [
                    old + scale * (new - old) for old, new, scale in zip(trainable, stepped, scales, strict=True)
                ]
            return stepped, optimizer

        def step(carry: Any, batch: Any) -> Any:
            (trainable, non_trainable, optimizer, pending), alive, sums = carry
            index, weight, share, end = batch
            xb = jnp.take(x, index, axis=0)
            yb = [jnp.take(y, index, axis=0) for y in ys]
            grads, (losses, corrects, non_trainable_next) = jax.grad(total, has_aux=True)(
                trainable, non_trainable, xb, yb, weight, alive, share
            )
            if self.micro:
                pending = [before + grad for before, grad in zip(pending, grads, strict=True)]
                trainable, optimizer, pending = jax.lax.cond(
                    end,
                    lambda t, o, p: (*update(t, o, p), [jnp.zeros_like(g) for g in p]),
                    lambda t, o, p: (t, o, p),
                    trainable,
                    optimizer,
                    pending,
                )
            else:
                trainable, optimizer = update(trainable, optimizer, grads)
            ok = alive & jnp.isfinite(losses)
            non_trainable = non_trainable_next  # dropout seed states: they decide no other member's numbers
            rows = jnp.sum(weight)
            sums = sums + jnp.stack([jnp.where(alive, losses, jnp.nan) * rows, corrects], axis=1)
            return ((trainable, non_trainable, optimizer, pending), ok, sums), None

        trainable, non_trainable, optimizer = state
        pending = [jnp.zeros_like(value) for value in trainable] if self.micro else []
        sums = jnp.zeros((self.fused.members, 2), dtype="float32")
        ((trainable, non_trainable, optimizer, _), alive, sums), _ = jax.lax.scan(
            step, ((trainable, non_trainable, optimizer, pending), alive, sums), steps
        )
        return (trainable, non_trainable, optimizer), alive, sums

    def compile_evaluation(self) -> Any:
        return jax.jit(self.evaluate_fn)

    def fit(
        self, x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder, epochs: int, score: Rows = ()
    ) -> list[MemberFit]:
        """Train every member from its initial state; one compiled call per epoch."""
        targets = self.kind_targets(targets)
        chunk = self.evaluation_rows(order, score)
        validation = [
            (jnp.asarray(xc), [jnp.asarray(y) for y in ycs], jnp.asarray(wc))
            for xc, ycs, wc in self.validation_chunks(x, targets, order, chunk)
        ]
        x_device = jnp.asarray(x)
        ys = [jnp.asarray(target) for target in targets]
        carry = {
            "state": (
                [jnp.asarray(value) for value in self.fused.trainable],
                [jnp.asarray(value) for value in self.fused.non_trainable],
                list(self.initial_optimizer),
            ),
            "alive": jnp.ones(self.fused.members, dtype=bool),
        }

        nothing = np.zeros((self.fused.members, 2), np.float32)

        def epoch_call(epoch: int) -> tuple[Any, Any, Any]:
            layout = order.micro_layout(epoch, self.micro or order.batch_size)
            steps = tuple(jnp.asarray(part) for part in (layout.indices, layout.weights, layout.fraction, layout.ends))
            carry["state"], carry["alive"], sums = self.epoch(carry["state"], carry["alive"], x_device, ys, steps)
            totals = nothing
            if validation:
                trainable, non_trainable, _ = carry["state"]
                totals = self.validation_totals(trainable, non_trainable, validation)
            return carry["alive"], sums, totals

        histories, failed = self.run_epochs(epoch_call, order, epochs)
        trainable, non_trainable, _ = carry["state"]
        weights = self.fused.member_weights([np.asarray(t) for t in trainable], [np.asarray(n) for n in non_trainable])
        outputs = self.outputs(trainable, non_trainable, score, self.blank_chunk(targets, chunk))
        return self.results(weights, histories, failed, outputs)
