"""Builds the search ``search.strategy`` names over the estimator: grid, random, successive halving or Optuna."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - registers halving
from sklearn.model_selection import (
    GridSearchCV,
    HalvingGridSearchCV,
    HalvingRandomSearchCV,
    ParameterGrid,
    ParameterSampler,
    RandomizedSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
)

from mnist_hpo.configuration.schema import SearchConfig
from mnist_hpo.search.bayesian import OptunaSearchCV, StudyStorage

# The searches this module builds, named from scikit-learn's public classes (their common base,
# BaseSearchCV, lives in a private module) and the project's Optuna search.
SearchCV = GridSearchCV | RandomizedSearchCV | HalvingGridSearchCV | HalvingRandomSearchCV | OptunaSearchCV


def error_score(value: Any) -> float | str:
    """``search.error_score`` as sklearn takes it: NaN, ``"raise"`` or a number."""
    if value == "raise":
        return "raise"
    return np.nan if value in ("nan", None) else float(value)


def build_cv(config: SearchConfig, seed: int) -> StratifiedKFold | RepeatedStratifiedKFold:
    """Stratified, shuffled, seeded folds; ``search.cv_repeats`` > 1 repeats them with fresh shuffles.

    The first repeat of RepeatedStratifiedKFold draws exactly the unrepeated folds (same seed), so
    repeating a search restores its first repeat's fits from the fit store and trains only the rest.
    """
    if config.cv_repeats > 1:
        return RepeatedStratifiedKFold(n_splits=config.cv, n_repeats=config.cv_repeats, random_state=seed)
    return StratifiedKFold(n_splits=config.cv, shuffle=True, random_state=seed)


def has_distributions(space: dict[str, Any]) -> bool:
    """True when some axis is a distribution rather than a list."""
    return any(not isinstance(values, list) for values in space.values())


def build_search(
    config: SearchConfig,
    estimator: BaseEstimator,
    space: dict[str, Any],
    seed: int,
    n_jobs: int = 1,
    refit: bool | Callable[[dict[str, Any]], int] = True,
    storage: StudyStorage | None = None,
) -> SearchCV:
    """Build the unfitted search that ``search.strategy`` names.

    Args:
        config: The ``search`` config group.
        estimator: The unfitted estimator each candidate clones.
        space: Parameter grid or distributions, from :func:`mnist_hpo.search.space.build_space`; for Optuna, the
            ``grid`` config group itself (:func:`mnist_hpo.search.bayesian.optuna_space` converts it).
        seed: Seeds the folds and any sampling.
        n_jobs: Parallel fits (``execution.n_jobs``): how the search runs, not what it finds.
        refit: Refit the best (True), none (False), or the row a refit rule picks from ``cv_results_``.
        storage: Where Optuna's study lives (None: in memory).

    Returns:
        A GridSearchCV, RandomizedSearchCV, HalvingGridSearchCV, HalvingRandomSearchCV or OptunaSearchCV.
    """
    common = dict(
        estimator=estimator,
        scoring=config.scoring,
        n_jobs=n_jobs,
        refit=refit,
        cv=build_cv(config, seed),
        error_score=error_score(config.error_score),
        return_train_score=config.return_train_score,
    )
    if config.strategy == "grid":
        return GridSearchCV(param_grid=space, **common)
    if config.strategy == "optuna":
        return OptunaSearchCV(
            param_distributions=space,
            n_iter=config.n_iter,
            trials_per_batch=min(config.trials_per_batch, config.n_iter),
            sampler=config.sampler,
            random_state=seed,
            storage=storage,
            **common,
        )
    if config.strategy == "random":
        return RandomizedSearchCV(param_distributions=space, n_iter=config.n_iter, random_state=seed, **common)
    halving = dict(
        resource=config.resource,
        factor=config.factor,
        min_resources=config.min_resources,
        random_state=seed,
        **common,
    )
    if config.resource == "epochs":
        halving["max_resources"] = estimator.get_params()["epochs"]
    if has_distributions(space):
        return HalvingRandomSearchCV(param_distributions=space, n_candidates=config.n_candidates, **halving)
    return HalvingGridSearchCV(param_grid=space, **halving)


def candidate_params(search: SearchCV) -> Iterable[dict[str, Any]]:
    """The candidates the search will try first, drawn as its ``_run_search`` draws them.

    Empty for Optuna, whose study asks for each batch's candidates as it goes.

    Only public API: a grid's ``ParameterGrid``; a sampler seeded like the search, for as many
    candidates as the search asks for (halving's "exhaust" from its fitted ``max_resources_`` and
    ``min_resources_``, as scikit-learn documents it).
    """
    if isinstance(search, OptunaSearchCV):
        return []
    if isinstance(search, HalvingRandomSearchCV):
        count = search.n_candidates
        if count == "exhaust":
            count = search.max_resources_ // search.min_resources_
        return ParameterSampler(search.param_distributions, count, random_state=search.random_state)
    if isinstance(search, RandomizedSearchCV):
        return ParameterSampler(search.param_distributions, search.n_iter, random_state=search.random_state)
    return ParameterGrid(search.param_grid)


def is_halving(search: SearchCV) -> bool:
    """Whether ``search`` is successive halving, whose candidates depend on its earlier iterations."""
    return isinstance(search, HalvingGridSearchCV | HalvingRandomSearchCV)
