"""Compiled Keras models kept per process, so fits of one architecture trace their step once.

Most of a small fit's time is Keras tracing its train, test and predict steps (about 0.7 s a
fit on this project's CPU), and a grid repeats each architecture once per fold and per value
of every fit-time parameter (batch size, epochs). A fit asks this cache for a model by
signature (everything that decides the built and compiled model). On a hit it gets the same
model object back, reset to the exact state it had after it was built and compiled: weights,
optimizer slots and step counter, and the dropout seed generators. Training then runs the
already traced functions and learns exactly what a freshly built model would have.

A model is handed out again only once the estimator that last trained it is gone (a weak
reference), so a fitted estimator that is still in use never has its model reset under it.
The cache holds at most ``budget_mb`` of model and snapshot memory, least recently used out first.
The estimator uses it on the TensorFlow backend only, where reuse is verified exact.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np


@dataclass
class Entry:
    """One cached model, the variables to reset and their values right after compile."""

    model: keras.Model
    variables: list[Any]
    initial: list[np.ndarray]
    owner: weakref.ref
    nbytes: int

    def free(self) -> bool:
        """Whether the estimator that last trained this model has been collected."""
        return self.owner() is None

    def reset(self) -> keras.Model:
        """Put the model back in its just-compiled state and return it."""
        for variable, value in zip(self.variables, self.initial, strict=True):
            variable.assign(value)
        return self.model


def state_variables(model: keras.Model) -> list[Any]:
    """Every variable a fit changes: weights, seed-generator states, optimizer slots."""
    model.optimizer.build(model.trainable_variables)
    seen: set[int] = set()
    variables = []
    for variable in [*model.variables, *model.optimizer.variables]:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


class ModelCache:
    """Compiled models by signature, within a memory budget."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()

    def take(self, signature: str, owner: object) -> keras.Model | None:
        """The cached model for ``signature``, reset and now owned by ``owner``; None if none is free."""
        entry = self.entries.get(signature)
        if entry is None or not entry.free():
            return None
        self.entries.move_to_end(signature)
        entry.owner = weakref.ref(owner)
        return entry.reset()

    def put(self, signature: str, model: keras.Model, owner: object, budget_mb: float) -> None:
        """Remember a freshly compiled ``model`` (call before it trains), evicting beyond the budget."""
        variables = state_variables(model)
        initial = [np.array(keras.ops.convert_to_numpy(variable.value)) for variable in variables]
        nbytes = 2 * sum(value.nbytes for value in initial)  # the live variables and the snapshot
        if nbytes > budget_mb * 2**20:
            return
        self.entries.pop(signature, None)
        self.entries[signature] = Entry(model, variables, initial, weakref.ref(owner), nbytes)
        while sum(entry.nbytes for entry in self.entries.values()) > budget_mb * 2**20:
            self.entries.popitem(last=False)


MODELS = ModelCache()
