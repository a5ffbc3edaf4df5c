"""Preflight derives successive halving's schedule as scikit-learn will run it, before anything trains.

Each case runs scikit-learn's own halving search (a fast real estimator, real data shapes) and holds
the preflight's derivation to what the fitted search reports: resources and candidates per iteration.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - registers halving
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from mnist_hpo.checks.preflight import halving_schedule
from mnist_hpo.configuration.schema import SearchConfig

ROWS, CLASSES = 600, 10
X = np.random.default_rng(0).normal(size=(ROWS, 4))
Y = np.tile(np.arange(CLASSES), ROWS // CLASSES)

CASES = {
    "exhaust, 12 candidates, factor 3": (dict(min_resources="exhaust", factor=3), 12),
    "100 images, factor 2": (dict(min_resources=100, factor=2), 12),
    "smallest rule met by exhaust on 40 candidates": (dict(min_resources="exhaust", factor=3), 40),
    "three candidates, factor 4": (dict(min_resources=70, factor=4), 3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_image_schedule_is_scikit_learns(case):
    settings, candidates = CASES[case]
    search = replace(SearchConfig(), strategy="halving", cv=3, **settings)
    grid = {"n_neighbors": list(range(1, candidates + 1))}
    fitted = HalvingGridSearchCV(
        KNeighborsClassifier(),
        grid,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        factor=search.factor,
        min_resources=search.min_resources,
        random_state=0,
    ).fit(X, Y)
    schedule = halving_schedule(search, ROWS, CLASSES, candidates, epochs=1)
    assert schedule.resources == fitted.n_resources_
    assert schedule.candidates == fitted.n_candidates_


@pytest.mark.parametrize("min_resources", ["exhaust", 2])
def test_an_epoch_schedule_and_a_random_search_with_exhausted_candidates_are_scikit_learns(min_resources):
    search = replace(SearchConfig(), strategy="halving", resource="epochs", min_resources=min_resources, cv=3)
    epochs = 27
    fitted = HalvingRandomSearchCV(
        SGDClassifier(tol=None, random_state=0),
        {"alpha": loguniform(1e-5, 1e-1)},
        n_candidates=10 if min_resources == "exhaust" else "exhaust",
        resource="max_iter",  # the estimator's epochs
        max_resources=epochs,
        min_resources=min_resources,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        factor=search.factor,
        random_state=0,
    ).fit(X, Y)
    schedule = halving_schedule(search, ROWS, CLASSES, 10 if min_resources == "exhaust" else None, epochs)
    assert schedule.resources == fitted.n_resources_
    assert schedule.candidates == fitted.n_candidates_
