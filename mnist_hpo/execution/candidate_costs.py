"""What each candidate of a finished search costs: its trainable weights and its recorded training time.

The refit rules that prefer the simpler or the faster of tied candidates read these
(``search/selection.py``); both are derived from the estimator, never from a fit's own report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone

from mnist_hpo.execution.estimator import MnistCNNClassifier
from mnist_hpo.execution.fit_keys import KNOWN_ROWS, digest_arrays
from mnist_hpo.model.cnn import MNIST_META


def parameter_counts(
    estimator: MnistCNNClassifier, candidates: Sequence[dict[str, Any]], y: np.ndarray, X: np.ndarray | None = None
) -> np.ndarray:
    """Trainable weights of each candidate's model, built (never trained) on one blank image per class.

    ``X`` gives the image shape (a model's weights depend on it); None counts for MNIST's 28 x 28 x 1.
    """
    classes = np.unique(y)
    shape = X.shape[1:] if X is not None else MNIST_META["X_shape_"][1:]
    probe = np.zeros((len(classes), *shape), dtype=np.float32)
    counts = []
    for params in candidates:
        twin = clone(estimator).set_params(fit_store=None, **params).initialize(probe, classes)
        counts.append(sum(int(np.prod(weight.shape)) for weight in twin.model_.trainable_weights))
    return np.asarray(counts)


def training_times(
    estimator: MnistCNNClassifier, X: np.ndarray, y: np.ndarray, cv: Any, cv_results: Mapping[str, Any]
) -> np.ndarray:
    """Mean training time per candidate as recorded when each fit trained (the fit store keeps it).

    Where a fit is not stored (store off, or a halving iteration's subsample), the time the search
    measured stands in: then it was trained in this search, so that time is its training time.
    """
    digests = [
        KNOWN_ROWS.digest(X[train], y[train]) or digest_arrays(X[train], y[train], None) for train, _ in cv.split(X, y)
    ]
    recorded = np.array(
        [
            np.mean([clone(estimator).set_params(**params).stored_fit_time(digest) for digest in digests])
            for params in cv_results["params"]
        ]
    )
    return np.where(np.isfinite(recorded), recorded, np.asarray(cv_results["mean_fit_time"], dtype=float))
