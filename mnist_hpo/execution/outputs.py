"""Trained members' outputs on the rows the search will score, so scoring reads them instead of predicting.

A fused group ends with every member's trained parameters in its compiled form: one forward pass of
the group over a split's rows costs about what one member's Keras ``predict`` does, and the search
would otherwise rebuild each member and predict it alone (docs/performance.md). The executor keeps
each stored member's outputs here under its fit key, with the rows they were computed on; the
estimator's :meth:`~mnist_hpo.execution.estimator.MnistCNNClassifier.probabilities` takes them when
its fit key and rows are equal (element for element), and predicts through Keras otherwise.

In this process only, bounded, each taken once: a fit restored elsewhere (a worker, a later run) or
scored on other rows predicts through its Keras model as always. The outputs are the same function
of the same weights as Keras computes, up to float rounding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

OUTPUTS_BUDGET_BYTES = 512 * 2**20  # bounds what a long search holds before the search reads it


class Outputs:
    """Members' outputs by fit key, each with the rows it was computed on; oldest dropped beyond the budget."""

    def __init__(self, budget_bytes: int = OUTPUTS_BUDGET_BYTES) -> None:
        self.budget = budget_bytes
        self.lock = threading.Lock()  # a background run puts while the search takes (execution/ahead.py)
        self.held: OrderedDict[str, list[tuple[np.ndarray, np.ndarray]]] = OrderedDict()  # key -> (rows, outputs)
        self.bytes = 0

    def put(self, key: str, rows: np.ndarray, outputs: np.ndarray) -> None:
        """Hold ``outputs`` of the fit ``key`` on ``rows`` (the array the search will pass, or an equal one)."""
        with self.lock:
            self.held.setdefault(key, []).append((rows, outputs))
            self.bytes += outputs.nbytes
            while self.bytes > self.budget and self.held:
                _, dropped = self.held.popitem(last=False)
                self.bytes -= sum(outputs.nbytes for _, outputs in dropped)

    def take(self, key: str, rows: np.ndarray) -> np.ndarray | None:
        """The outputs of fit ``key`` on rows equal to ``rows``, no longer held; None when there are none."""
        with self.lock:
            entries = self.held.get(key, [])
            for index, (held, outputs) in enumerate(entries):
                if held.shape == rows.shape and held.dtype == rows.dtype and np.array_equal(held, rows):
                    del entries[index]
                    if not entries:
                        del self.held[key]
                    self.bytes -= outputs.nbytes
                    return outputs
        return None

    def clear(self) -> None:
        """Forget everything held (a new search's executor starts here)."""
        with self.lock:
            self.held.clear()
            self.bytes = 0


OUTPUTS = Outputs()  # the process' own: the fused executor puts, the estimator takes
