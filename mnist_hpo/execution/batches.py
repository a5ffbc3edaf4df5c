"""The project's batch order: which rows a fit validates on, and which rows each of its steps trains on.

Fused and unfused fits read the same definition, so a fit trained alone (Keras ``fit``, one epoch at
a time with ``shuffle=False``) and the same fit trained as one member of a fused group see the same
batches in the same order: the two are the same computation up to float rounding.

* Validation rows are the last ``validation_split`` of the fit's rows, as Keras' own
  ``validation_split`` takes them (``floor(n * (1 - split))`` rows train).
* Each epoch trains on a permutation of the training rows seeded by the estimator's
  ``random_state``, the fit's data digest (so each fold has its own order) and the epoch.
* Steps take ``batch_size`` consecutive rows of that permutation; the last step takes the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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

    def steps_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch`` as ``steps x batch_size`` row indices and weights; the last step's padding weighs 0.

        A padded slot points at row 0 and counts for nothing: each step's loss is the weighted mean over
        its real rows, as Keras computes the loss of a short last batch.
        """
        order = self.permutation(epoch)
        padded = self.steps * self.batch_size
        indices = np.zeros(padded, dtype=np.int32)
        indices[: len(order)] = order
        weights = np.zeros(padded, dtype=np.float32)
        weights[: len(order)] = 1.0
        return indices.reshape(self.steps, self.batch_size), weights.reshape(self.steps, self.batch_size)
