"""The compiled trainer: the fits of one group trained together, each epoch one compiled call.

Keras' own ``fit`` loop pays Python and dispatch per step, which bounds a small CNN at a few
thousand samples a second here; with the whole epoch inside one compiled call the same fit runs
several times faster, and members that share a fold's batches in that call multiply it
(docs/performance.md).

Each member is a compiled Keras model at its initial state, as the estimator built it; the group
runs as one :class:`~mnist_hpo.execution.fused_model.FusedModel`. Members share no parameter and no
op: each step computes every member's own loss (its weighted mean over the step's real rows, plus the
model's regularisation losses) and one optimizer of the members' settings steps them all, which is
each member's own update. A member whose loss turns non-finite is reported failed and is not stored;
its own parameters may go on to turn non-finite, which no op reads into another member's values,
so the others train on exactly as without it (tests/test_fused.py).

* TensorFlow: ``tf.function(jit_compile=True)`` over a ``tf.while_loop`` of steps
  (``optimizer.stateless_apply`` is JAX-only, so the optimizer updates Keras variables in place).
* JAX: ``jax.jit`` over a ``lax.scan`` of steps, ``optimizer.stateless_apply``.

A trainer is built once per group structure and reused for every fold of it: only the data and the
initial state change, so each fold after the first runs the already compiled epoch. The evaluation
program (one chunk's forward pass: the validation losses and the members' outputs the search scores)
is compiled apart from the epoch, once per structure of members (not per batch size): it is a third of
an epoch program's compile time on XLA CPU, which groups of other batch sizes then save.
"""

from __future__ import annotations

import copy
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from mnist_hpo.execution.batches import BatchOrder, in_chunks
from mnist_hpo.execution.fused_model import FusedModel

Rows = Sequence[np.ndarray]  # arrays of input rows, each scored by every member
VALIDATION_CHUNK = 1024  # most rows per call of the compiled evaluation (validation or outputs)
EVALUATION_ROWS_MIN = 256  # fewer rows a call cost more a row (docs/performance.md), unless that is all there is
BACKENDS = ("tensorflow", "jax")
OPTIMIZER_MIXERS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "gradient_accumulation_steps")
# Optimizers whose update is the learning rate times a function of the gradients and the slots alone
# (their slots hold no learning rate but through that product: SGD's momentum is linear in it too).
# Members of such an optimizer may differ in learning rate: one optimizer steps them all at rate 1 and
# each member's step is scaled by its own rate (Trainer.rates).
LINEAR_IN_LEARNING_RATE = (
    keras.optimizers.Adam,
    keras.optimizers.AdamW,
    keras.optimizers.Adamax,
    keras.optimizers.Nadam,
    keras.optimizers.RMSprop,
    keras.optimizers.SGD,
    keras.optimizers.Adagrad,
    keras.optimizers.Lion,
)
# Compiled evaluation programs by structure (Trainer.evaluation): the latest few, as TensorFlow keeps
# every traced function's graph for the process' life.
EVALUATIONS: OrderedDict[Hashable, Callable[..., Any]] = OrderedDict()
EVALUATIONS_KEPT = 4
# A trainer's members' values, which a cached evaluation program must not keep alive (Trainer.stateless).
STATE_ATTRIBUTES = ("trainable", "non_trainable", "optimizer", "initial_optimizer", "epoch", "evaluate")


@dataclass(frozen=True)
class MemberFit:
    """One member's outcome: its weights in ``model.get_weights()`` order and per-epoch history.

    ``error`` names why it failed (its loss turned non-finite); then ``weights`` are not a result.
    """

    weights: list[np.ndarray]
    history: dict[str, list[float]]
    error: str | None = None
    outputs: tuple[np.ndarray, ...] = ()  # its outputs ``[rows, classes]`` on each of fit's ``score`` arrays


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


def member_rates(models: Sequence[keras.Model]) -> tuple[dict[str, Any], np.ndarray | None]:
    """The optimizer settings the group steps with, and each member's learning rate when they differ.

    Members must share every optimizer setting; their learning rates may differ where the optimizer
    is linear in it (:data:`LINEAR_IN_LEARNING_RATE`): the group then steps at rate 1 and the trainer
    scales each member's step by its own rate, which is its own update up to float rounding.
    """
    configs = [model.optimizer.get_config() for model in models]
    rates = [config["learning_rate"] for config in configs]
    if all(rate == rates[0] for rate in rates):
        return configs[0], None
    others = [
        {name: value for name, value in config.items() if name not in ("name", "learning_rate")} for config in configs
    ]
    numbers = all(isinstance(rate, int | float) for rate in rates)
    if not numbers or type(models[0].optimizer) not in LINEAR_IN_LEARNING_RATE or others.count(others[0]) < len(others):
        raise ValueError(
            "members of one group must share their optimizer; only a linear one's learning rate may differ"
        )
    return configs[0] | {"learning_rate": 1.0}, np.asarray(rates, np.float32)


@functools.cache
def learning_rate_mixes(optimizer: Any) -> bool:
    """Whether members of ``optimizer`` (a Keras optimizer name) may differ in learning rate in one group."""
    return isinstance(optimizer, str) and type(keras.optimizers.get(optimizer)) in LINEAR_IN_LEARNING_RATE


def loss_identity(model: keras.Model) -> str:
    """What decides ``model``'s per-sample loss: members with the same identity share one loss computation."""
    loss = model.loss
    if isinstance(loss, keras.losses.Loss):
        return f"{type(loss).__module__}.{type(loss).__qualname__}:{sorted(loss.get_config().items())!r}"
    function = keras.losses.get(loss) if isinstance(loss, str) else loss
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', repr(function))}"


@dataclass(frozen=True)
class LossKind:
    """Members that share a per-sample loss and a target encoding: one loss computation over all of them."""

    loss: Callable[[Any, Any], Any]
    sparse: bool  # targets are class indices (else one-hot rows)
    members: tuple[int, ...]
    identity: str = ""  # loss_identity of the members' loss


def loss_kinds(models: Sequence[keras.Model], sparse: Sequence[bool]) -> list[LossKind]:
    """The members grouped by loss and target encoding, in order of first appearance."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for member, (model, indexed) in enumerate(zip(models, sparse, strict=True)):
        groups.setdefault((loss_identity(model), bool(indexed)), []).append(member)
    return [
        LossKind(per_sample_loss(models[members[0]]), indexed, tuple(members), identity)
        for (identity, indexed), members in groups.items()
    ]


class Trainer:
    """Trains the members of one :class:`FusedModel` together, fold after fold, from their initial state."""

    def __init__(
        self, fused: FusedModel, models: Sequence[keras.Model], sparse: Sequence[bool], micro: int | None = None
    ) -> None:
        """Args:
        fused: The members as one function of their parameters.
        models: The members' compiled Keras models (their losses and optimizer settings).
        sparse: Per member, whether its targets are class indices (else one-hot rows).
        micro: Rows per micro-step when steps are run as micro-steps whose gradients add up
            (batches.BatchOrder.micro_layout): one compiled program then serves every batch size it
            divides. None: each iteration is a whole step, and the program serves one batch size.
        """
        self.fused = fused
        self.micro = micro
        self.kinds = loss_kinds(models, sparse)
        self.all_members = tuple(range(len(models)))
        self.optimizer_class = type(models[0].optimizer)
        self.optimizer_config, self.rates = member_rates(models)

    def rate_scales(self) -> list[np.ndarray] | None:
        """Per trainable tensor, its members' learning rates shaped to scale its step; None when all share one."""
        return None if self.rates is None else self.fused.member_scales(self.rates)

    def new_optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh optimizer with the members' class and settings."""
        return self.optimizer_class.from_config(self.optimizer_config)

    def fit(
        self, x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder, epochs: int, score: Rows = ()
    ) -> list[MemberFit]:
        """Train every member from its initial state on ``x`` (each with its own ``targets``) in ``order``.

        ``score``: arrays of rows each trained member's outputs are wanted on (``MemberFit.outputs``).
        """
        raise NotImplementedError

    def outputs(
        self, trainable: Any, non_trainable: Any, score: Sequence[np.ndarray], blank: tuple[Any, Any]
    ) -> list[list[np.ndarray]]:
        """Per member, its outputs on each array of ``score``, through the evaluation program.

        ``blank``: the chunk's targets and weights (:meth:`blank_chunk`): the program's losses on them are
        not used, its outputs are what each member's Keras ``predict`` returns.
        """
        if not score:
            return [[] for _ in range(self.fused.members)]
        targets, weights = blank
        rows = len(weights)

        def chunk(block: np.ndarray) -> Any:
            return self.evaluate(trainable, non_trainable, block, targets, weights)[1]

        per_array = [in_chunks(chunk, x, rows, fixed=True) for x in score]
        return [[np.ascontiguousarray(array[:, member]) for array in per_array] for member in range(self.fused.members)]

    def validation_totals(self, trainable: Any, non_trainable: Any, chunks: Sequence[tuple[Any, Any, Any]]) -> Any:
        """Each member's summed validation loss and correct count, ``[members, 2]``, over ``chunks``."""
        totals = np.zeros((self.fused.members, 2))
        for xc, ycs, wc in chunks:
            totals += np.asarray(self.evaluate(trainable, non_trainable, xc, ycs, wc)[0])
        return totals

    def evaluation(self, *options: Hashable) -> Callable[..., Any]:
        """The compiled evaluation program (:meth:`evaluate_fn`), shared by trainers of equal structure.

        ``options`` are the backend's compile settings. The program is a function of the parameters it
        is given, so a trainer of another batch size but the same members reuses its compile.
        """
        structure = self.fused.structure()
        if structure is None:
            return self.compile_evaluation()
        kinds = tuple((kind.identity, kind.sparse, kind.members) for kind in self.kinds)
        key = (keras.backend.backend(), options, structure, kinds)
        compiled = EVALUATIONS.pop(key, None) or self.stateless().compile_evaluation()
        EVALUATIONS[key] = compiled
        while len(EVALUATIONS) > EVALUATIONS_KEPT:
            EVALUATIONS.popitem(last=False)
        return compiled

    def stateless(self) -> Trainer:
        """This trainer without its members' values (variables, optimizer, initial weights).

        What a cached compiled program keeps alive: it takes the values as arguments, and a wide
        group's values can be hundreds of MB.
        """
        shell = copy.copy(self)
        shell.fused = copy.copy(self.fused)
        shell.fused.trainable, shell.fused.non_trainable = [], []
        for name in STATE_ATTRIBUTES:
            shell.__dict__.pop(name, None)
        return shell

    def compile_evaluation(self) -> Callable[..., Any]:
        """:meth:`evaluate_fn` compiled by the backend."""
        raise NotImplementedError

    def evaluate_fn(self, trainable: Any, non_trainable: Any, xc: Any, ycs: Any, wc: Any) -> tuple[Any, Any]:
        """One chunk's forward pass: each member's summed loss and correct count ``[members, 2]``, and every
        member's outputs ``[rows, members, classes]``, what its Keras ``predict`` returns.

        One program serves the validation pass and the outputs the search scores, so a group structure
        pays one compile for both (docs/performance.md).
        """
        outputs, _, regularisation = self.fused.forward(trainable, non_trainable, xc, False)
        losses, corrects = self.member_losses(outputs, regularisation, ycs, wc)
        totals = keras.ops.stack([losses * keras.ops.sum(wc), corrects], axis=1)
        if self.fused.wide:  # the head's softmax, as member_losses applies it
            return totals, keras.activations.softmax(outputs, axis=-1)
        return totals, keras.ops.stack(outputs, axis=1)

    def kind_targets(self, targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One target array per loss kind from the per-member ``targets`` (members of a kind share them)."""
        shared = []
        for kind in self.kinds:
            first = targets[kind.members[0]]
            if any(not np.array_equal(targets[member], first) for member in kind.members[1:]):
                raise ValueError("members that share a loss must share their targets (one split, one class set)")
            shared.append(first)
        return shared

    def member_losses(self, outputs: Any, regularisation: Any, targets: Any, weight: Any) -> tuple[Any, Any]:
        """Each member's weighted mean loss (plus its regularisation) and its weighted correct count.

        ``outputs`` are the fused model's (:meth:`FusedModel.forward`); ``targets`` hold one array per loss
        kind. A wide model's kind runs its loss once over its members' slice of the logits, through
        Keras' softmax, so a Keras loss sees what it sees in Keras' own fit (on TensorFlow it takes
        cross-entropy from the logits); a Keras loss reduces the last axis only, so no member's loss
        mixes with another's.
        """
        ops = keras.ops
        rows = ops.sum(weight)
        column = ops.expand_dims(weight, 1)
        losses, corrects = [], []
        for kind, y_true in zip(self.kinds, targets, strict=True):
            if self.fused.wide:
                logits = outputs if kind.members == self.all_members else ops.take(outputs, kind.members, 1)
                predictions = [keras.activations.softmax(logits, axis=-1)]  # [rows, kind members, classes]
            else:
                predictions = [outputs[member] for member in kind.members]  # each [rows, classes]
            truth = ops.reshape(y_true, (-1,)) if kind.sparse else ops.argmax(y_true, axis=-1)
            per_sample, hits = [], []
            for y_pred in predictions:
                stacked = len(y_pred.shape) == 3
                if kind.sparse:
                    expected = ops.broadcast_to(ops.expand_dims(truth, 1), ops.shape(y_pred)[:2]) if stacked else truth
                else:
                    expected = ops.broadcast_to(ops.expand_dims(y_true, 1), ops.shape(y_pred)) if stacked else y_true
                values = kind.loss(expected, y_pred)
                predicted = ops.argmax(y_pred, axis=-1)
                hit = ops.equal(predicted, ops.cast(ops.expand_dims(truth, 1) if stacked else truth, predicted.dtype))
                per_sample.append(values if stacked else ops.expand_dims(values, 1))
                hits.append(ops.cast(hit if stacked else ops.expand_dims(hit, 1), "float32"))
            per_sample = ops.concatenate(per_sample, axis=1) if len(per_sample) > 1 else per_sample[0]
            hits = ops.concatenate(hits, axis=1) if len(hits) > 1 else hits[0]
            losses.append(ops.sum(per_sample * column, axis=0) / rows)
            corrects.append(ops.sum(hits * column, axis=0))
        if len(self.kinds) == 1:
            return losses[0] + regularisation, corrects[0]
        back = np.argsort(np.concatenate([kind.members for kind in self.kinds]))  # kind order -> member order
        loss = ops.take(ops.concatenate(losses), back, 0)
        return loss + regularisation, ops.take(ops.concatenate(corrects), back, 0)

    @staticmethod
    def evaluation_rows(order: BatchOrder, score: Rows) -> int:
        """Rows per call of the evaluation program: the validation's rows, at least :data:`EVALUATION_ROWS_MIN`
        (or the largest scored array, if smaller), at most :data:`VALIDATION_CHUNK`.

        The validation pass and the outputs take the same size, so the program compiles once; the floor
        keeps a small validation set from cutting the scored rows into many small calls.
        """
        validation = order.rows - order.train_rows
        largest = max((len(x) for x in score), default=0)
        return max(1, min(VALIDATION_CHUNK, max(validation, min(EVALUATION_ROWS_MIN, largest))))

    @staticmethod
    def validation_chunks(
        x: np.ndarray, targets: Sequence[np.ndarray], order: BatchOrder, chunk: int
    ) -> list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
        """The validation rows as ``chunk``-row chunks with a weight per row (padding weighs 0)."""
        start = order.train_rows
        rows = order.rows - start
        chunks = math.ceil(rows / chunk)
        index = np.zeros(chunks * chunk, dtype=np.int32)
        index[:rows] = np.arange(start, order.rows)
        weight = np.zeros(chunks * chunk, dtype=np.float32)
        weight[:rows] = 1.0
        return [
            (x[part], [target[part] for target in targets], weight[at : at + chunk])
            for at in range(0, chunks * chunk, chunk)
            for part in [index[at : at + chunk]]
        ]

    @staticmethod
    def blank_chunk(targets: Sequence[np.ndarray], chunk: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Targets and weights of ``chunk`` rows for an evaluation call that only wants the outputs."""
        blank = [np.zeros((chunk, *target.shape[1:]), target.dtype) for target in targets]
        return blank, np.ones(chunk, np.float32)

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
        weights: list[list[np.ndarray]],
        histories: list[dict[str, list[float]]],
        failed: list[int | None],
        outputs: list[list[np.ndarray]],
    ) -> list[MemberFit]:
        """One :class:`MemberFit` per member (a failed one without outputs)."""
        return [
            MemberFit(
                weights[member],
                histories[member],
                None if epoch is None else f"training loss became non-finite at epoch {epoch + 1}",
                tuple(outputs[member]) if epoch is None else (),
            )
            for member, epoch in enumerate(failed)
        ]
