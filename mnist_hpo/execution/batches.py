"""The project's batch order: which rows a fit validates on, and which rows each of its steps trains on.

Fused and unfused fits read the same definition, so a fit trained alone (Keras ``fit``, one epoch at
a time with ``shuffle=False``) and the same fit trained as one member of a fused group see the same
batches in the same order: the two are the same computation up to float rounding.

* Validation rows are the last ``validation_split`` of the fit's rows, as Keras' own
  ``validation_split`` takes them (``floor(n * (1 - split))`` rows train).
* Each epoch trains on a permutation of the training rows seeded by the estimator's
  ``random_state``, the fit's data digest (so each fold has its own order) and the epoch.
* Steps take ``batch_size`` consecutive rows of that permutation; the last step takes the rest.

A compiled trainer may run a step as several micro-steps of ``micro`` rows (a divisor of the batch
size) whose gradients it sums before the one update (:meth:`BatchOrder.micro_layout`): the step's
loss is still the mean over its rows, so the update is the same up to float rounding, and fits of
several batch sizes then share one compiled program (execution/fused.py says when that pays).

Inference cuts rows alike for every compiled prediction (:func:`in_chunks`): fixed-size chunks, the
last padded with zero rows, so one input shape serves every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


def in_chunks(predict: Callable[[np.ndarray], Any], x: np.ndarray, rows: int, fixed: bool = False) -> np.ndarray:
    """``predict`` over ``x``, ``rows`` rows a call, outputs joined on the rows axis.

    Rows are independent in inference, so the zero rows padding the last chunk change no output;
    only that chunk is copied. ``fixed``: every call gets exactly ``rows`` rows, however few ``x``
    has (a compiled program of one input shape); else a call takes at most ``len(x)``.
    """
    chunk = rows if fixed else min(rows, len(x))
    if chunk == 0:
        return np.asarray(predict(x))
    parts = []
    for at in range(0, max(len(x), 1), chunk):
        block = x[at : at + chunk]
        count = len(block)
        if count < chunk:
            block = np.concatenate([block, np.zeros((chunk - count, *x.shape[1:]), x.dtype)])
        parts.append(np.asarray(predict(block))[:count])
    return np.concatenate(parts)


@dataclass(frozen=True)
class BatchOrder:
    """Everything that fixes a fit's batches: its rows, its seed, the batch size and epochs."""

    rows: int
    validation_split: float
    batch_size: int
    seed: tuple[int, int]

    @classmethod
    def of(
        cls, rows: int, validation_split: float, batch_size: int, random_state: int | None, digest: str
    ) -> BatchOrder:
        """The batch order of a fit on ``rows`` rows whose data digest is ``digest`` (fit_keys.digest_arrays)."""
        return cls(
            rows, float(validation_split or 0.0), int(batch_size), (int(random_state or 0), int(digest[:15], 16))
        )

    @property
    def train_rows(self) -> int:
        """How many leading rows train; the rest validate (Keras' ``validation_split`` rule)."""
        if not self.validation_split:
            return self.rows
        return math.floor(self.rows * (1.0 - self.validation_split))

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch: the last one takes the remainder."""
        return math.ceil(self.train_rows / self.batch_size)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` (from 0) visits the training rows."""
        return np.random.default_rng([*self.seed, epoch]).permutation(self.train_rows)

    def micro_layout(self, epoch: int, micro: int) -> MicroSteps:
        """Epoch ``epoch`` as micro-steps of ``micro`` rows (``micro`` divides the batch size).

        Each step's rows in order, cut into micro-steps; a step of ``r`` rows takes ``ceil(r / micro)``
        of them, so no micro-step is empty. With ``micro == batch_size`` each micro-step is a step; a short
        last step is padded: a padded slot points at row 0 and weighs 0, so each step's loss is the
        weighted mean over its real rows, as Keras computes the loss of a short last batch.
        """
        if micro <= 0 or self.batch_size % micro:
            raise ValueError(f"micro-steps of {micro} rows do not divide batches of {self.batch_size}")
        order = self.permutation(epoch)
        starts = np.arange(0, len(order), self.batch_size)
        step_rows = np.minimum(self.batch_size, len(order) - starts)  # rows of each step
        per_step = -(-step_rows // micro)  # micro-steps of each step
        total = int(per_step.sum())
        indices = np.zeros(total * micro, dtype=np.int32)
        indices[: len(order)] = order  # steps are consecutive and only the last one is short
        weights = np.zeros(total * micro, dtype=np.float32)
        weights[: len(order)] = 1.0
        ends = np.zeros(total, dtype=bool)
        ends[np.cumsum(per_step) - 1] = True
        fraction = weights.reshape(total, micro).sum(axis=1) / np.repeat(step_rows, per_step)
        return MicroSteps(
            indices.reshape(total, micro), weights.reshape(total, micro), fraction.astype(np.float32), ends
        )


@dataclass(frozen=True)
class MicroSteps:
    """An epoch's micro-steps: rows, row weights (padding 0), each one's share of its step, and step ends."""

    indices: np.ndarray  # [micro-steps, micro] row indices
    weights: np.ndarray  # [micro-steps, micro]
    fraction: np.ndarray  # [micro-steps] its real rows over its step's rows: the weight of its mean loss
    ends: np.ndarray  # [micro-steps] bool: the step's last micro-step, after which the update is applied
