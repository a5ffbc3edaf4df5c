"""The fit plan: every (candidate, split) fit a search will make, with its rows and fit key, computed once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from sklearn.base import clone

from mnist_hpo.execution.fit_keys import KNOWN_ROWS, digest_arrays, key_from_digest, numerics_versions
from mnist_hpo.search.strategies import SearchCV, candidate_params


@dataclass(frozen=True)
class Split:
    """One split of the search's folds: its training rows, hashed once for every fit on it."""

    index: int  # the split's index in cv_results_ (repeat * folds + fold)
    train: np.ndarray
    digest: str  # fit_keys.digest_arrays of the training rows (X, y, no sample weights)
    test: np.ndarray  # the rows the search scores each fit on


@dataclass(frozen=True)
class PlannedFit:
    """One fit of the search: a candidate's parameters on one split, under its fit-store key."""

    candidate: int  # its index in the search's candidates
    split: Split
    params: dict[str, Any]
    key: str  # the fit store key its estimator computes when it fits

    @property
    def rows(self) -> np.ndarray:
        """The training rows the fit learns from."""
        return self.split.train


def plan_splits(search: SearchCV, X: np.ndarray, y: np.ndarray) -> tuple[Split, ...]:
    """The search's splits (``cv.split``), each split's training rows hashed once.

    Remembered (``fit_keys.KNOWN_ROWS``), so the search's own fits on them take these digests.
    """
    splits = tuple(
        Split(index, train, digest_arrays(X[train], y[train], None), test)
        for index, (train, test) in enumerate(search.cv.split(X, y))
    )
    KNOWN_ROWS.remember(X, y, [(split.train, split.digest) for split in splits])
    return splits


@dataclass(frozen=True)
class FitPlan:
    """Every fit of a search, from public scikit-learn API: its candidates and ``cv.split``."""

    fits: tuple[PlannedFit, ...]
    splits: tuple[Split, ...]
    score_train: bool = False  # the search scores each fit on its training rows too (return_train_score)

    @classmethod
    def of(
        cls,
        search: SearchCV,
        X: np.ndarray,
        y: np.ndarray,
        candidates: Sequence[dict[str, Any]] | None = None,
        splits: tuple[Split, ...] | None = None,
    ) -> FitPlan:
        """The plan of ``search`` on ``(X, y)``; its estimator must be this project's classifier.

        ``candidates`` default to those the search will try (:func:`~mnist_hpo.search.strategies.candidate_params`);
        a search that asks for them in batches plans each batch, on ``splits`` from :func:`plan_splits` once.
        The fit keys are those the estimator computes when it fits (the same digest of the same rows),
        so a fit an executor stores is the one the search then restores.
        """
        backend = keras.backend.backend()
        versions = numerics_versions(backend)
        splits = plan_splits(search, X, y) if splits is None else splits
        fits = []
        for candidate, params in enumerate(candidate_params(search) if candidates is None else candidates):
            result_params = clone(search.estimator).set_params(**params).result_params()
            for split in splits:
                key = key_from_digest(result_params, backend, versions, split.digest)
                fits.append(PlannedFit(candidate, split, dict(params), key))
        return cls(tuple(fits), splits, bool(getattr(search, "return_train_score", False)))
