"""The per-process cache of compiled Keras models: budget, least-recently-used eviction, ownership, reset."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest

from mnist_hpo.execution.model_cache import ModelCache
from mnist_hpo.model.cnn import build_cnn

MB = 2**20


class Owner:
    """Stands in for the estimator that trains a cached model (anything weak-referenceable)."""


def tiny_model() -> keras.Model:
    """The smallest CNN the project builds, compiled as the estimator compiles it.

    Seeded, as every fit is: scikeras leaves TensorFlow's op determinism on once an estimator has
    built a model in this process, and then unseeded random ops (the initializers) refuse to run.
    """
    keras.utils.set_random_seed(0)
    model = build_cnn(conv_filters=[1], dense_units=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def weights_of(model: keras.Model) -> list[np.ndarray]:
    """Copies of every weight and optimizer variable of ``model``."""
    variables = [*model.variables, *model.optimizer.variables]
    return [np.array(keras.ops.convert_to_numpy(variable.value)) for variable in variables]


@pytest.fixture(scope="module")
def entry_mb() -> float:
    """What one tiny model costs the cache, in MB."""
    cache = ModelCache()
    owner = Owner()
    cache.put("probe", tiny_model(), owner, budget_mb=1024)
    return cache.entries["probe"].nbytes / MB


def in_use(cache: ModelCache) -> float:
    """The cache's total, in MB."""
    return sum(entry.nbytes for entry in cache.entries.values()) / MB


def test_least_recently_used_models_go_first_within_the_budget(entry_mb):
    # Given a budget that fits two tiny models but not three
    budget = 2.5 * entry_mb
    cache = ModelCache()
    owners = [Owner() for _ in range(4)]
    cache.put("a", tiny_model(), owners[0], budget_mb=budget)
    cache.put("b", tiny_model(), owners[1], budget_mb=budget)
    assert list(cache.entries) == ["a", "b"]
    # When a third signature arrives
    cache.put("c", tiny_model(), owners[2], budget_mb=budget)
    # Then the oldest goes, and the total stays within the budget
    assert list(cache.entries) == ["b", "c"]
    assert in_use(cache) <= budget
    # And a take makes a model the most recently used, so the other one goes next
    del owners[1]
    gc.collect()
    assert cache.take("b", Owner()) is not None
    cache.put("d", tiny_model(), owners[-1], budget_mb=budget)
    assert list(cache.entries) == ["b", "d"]
    assert in_use(cache) <= budget


def test_a_model_is_handed_out_only_once_its_owner_is_gone(entry_mb):
    cache = ModelCache()
    model = tiny_model()
    owner = Owner()
    cache.put("a", model, owner, budget_mb=10 * entry_mb)
    # While the estimator that trains it is alive, nobody else gets the model
    assert cache.take("a", Owner()) is None
    # Once it is collected, the same model object is handed out, now owned by the taker
    del owner
    gc.collect()
    taker = Owner()
    assert cache.take("a", taker) is model
    assert cache.take("a", Owner()) is None
    del taker
    gc.collect()
    assert cache.take("a", Owner()) is model


def test_take_of_an_unknown_signature_is_none(entry_mb):
    cache = ModelCache()
    cache.put("a", tiny_model(), Owner(), budget_mb=10 * entry_mb)
    gc.collect()
    assert cache.take("b", Owner()) is None


def test_a_model_bigger_than_the_whole_budget_is_not_kept(entry_mb):
    cache = ModelCache()
    owner = Owner()
    cache.put("small", tiny_model(), owner, budget_mb=1.5 * entry_mb)
    # Given a model twice the size of the tiny one, against the same budget
    big = build_cnn(conv_filters=[2], dense_units=0)
    big.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cache.put("big", big, owner, budget_mb=1.5 * entry_mb)
    # Then it is not cached, and what was cached stays
    assert list(cache.entries) == ["small"]
    del owner
    gc.collect()
    assert cache.take("big", Owner()) is None


def test_take_resets_weights_and_optimizer_to_their_just_compiled_values(entry_mb):
    # Given a cached model that then trains, changing its weights and optimizer state
    cache = ModelCache()
    model = tiny_model()
    owner = Owner()
    cache.put("a", model, owner, budget_mb=10 * entry_mb)
    compiled = weights_of(model)
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, size=16)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    trained = weights_of(model)
    assert int(model.optimizer.iterations.numpy()) == 4
    assert not all(np.array_equal(before, after) for before, after in zip(compiled, trained, strict=True))
    # When its owner is gone and another fit takes it
    del owner
    gc.collect()
    taken = cache.take("a", Owner())
    # Then every weight and optimizer variable is back to its value right after compile
    assert taken is model
    assert int(taken.optimizer.iterations.numpy()) == 0
    for before, after in zip(compiled, weights_of(taken), strict=True):
        np.testing.assert_array_equal(before, after)
