"""Turns a fitted search into results: the ranked candidates and held-out test metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from mnist_hpo.search.selection import FoldSizes, compare_with_best, top_index
from mnist_hpo.search.strategies import SearchCV


@dataclass(frozen=True)
class TestScores:
    """Scores of the refitted best estimator on the held-out test set."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    confusion: np.ndarray
    classes: tuple[Any, ...]  # the confusion matrix's rows and columns, in order

    def metrics(self) -> dict[str, float]:
        """The scalar scores, named as they are logged."""
        return {
            "test_accuracy": self.accuracy,
            "test_precision_macro": self.precision_macro,
            "test_recall_macro": self.recall_macro,
            "test_f1_macro": self.f1_macro,
        }


@dataclass(frozen=True)
class SearchResult:
    """What a search found: one row per candidate (ranked, compared with the best), the refitted one, its test scores.

    ``best_index`` is the top mean CV score's row; ``refit_index`` the row the refit rule chose
    (``search.refit``), which the test scores and the logged model belong to.
    """

    candidates: pd.DataFrame
    axes: list[str]
    n_splits: int
    best_index: int
    best_params: dict[str, Any]
    best_score: float
    test: TestScores | None
    refit_rule: str | None = None
    refit_index: int | None = None

    @property
    def tied(self) -> int:
        """How many candidates other than the best are tied with it (not significantly worse)."""
        return int(self.candidates["tied_with_best"].sum()) - 1


def score_on_test(estimator: Any, x_test: np.ndarray, y_test: np.ndarray) -> TestScores:
    """Accuracy, macro precision/recall/F1 and the confusion matrix (rows and columns: the estimator's classes)."""
    predicted = estimator.predict(x_test)
    precision, recall, f1, _ = precision_recall_fscore_support(y_test, predicted, average="macro", zero_division=0)
    return TestScores(
        accuracy=float(accuracy_score(y_test, predicted)),
        precision_macro=float(precision),
        recall_macro=float(recall),
        f1_macro=float(f1),
        confusion=confusion_matrix(y_test, predicted, labels=list(estimator.classes_)),
        classes=tuple(estimator.classes_.tolist()),
    )


def candidate_frame(cv_results: dict[str, Any], axes: list[str], n_splits: int) -> pd.DataFrame:
    """``cv_results_`` as a table: one row per candidate, axes as columns, failures marked."""
    frame = pd.DataFrame({axis: [params.get(axis) for params in cv_results["params"]] for axis in axes})
    for column in (
        "rank_test_score",
        "mean_test_score",
        "std_test_score",
        "mean_train_score",
        "mean_fit_time",
        "mean_score_time",
        "iter",
        "n_resources",
    ):
        if column in cv_results:
            frame[column] = np.asarray(cv_results[column])
    for split in range(n_splits):
        for kind in ("test", "train"):
            if f"split{split}_{kind}_score" in cv_results:
                frame[f"split{split}_{kind}_score"] = np.asarray(cv_results[f"split{split}_{kind}_score"])
    frame["failed"] = frame[[f"split{k}_test_score" for k in range(n_splits)]].isna().any(axis=1)
    return frame


def summarize(
    search: SearchCV,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    sizes: FoldSizes,
    alpha: float,
    rope: float,
    refit_rule: str | None,
    training_time: np.ndarray,
) -> SearchResult:
    """Collect the search's results, compare every candidate with the best, score the refitted one on test.

    ``training_time`` is each candidate's mean training time as recorded when its fits trained
    (:func:`mnist_hpo.execution.candidate_costs.training_times`): ``mean_fit_time`` is what this search measured,
    which for a fit restored from the fit store is the restore, not the training.
    """
    # The searched axes only: a halving resource (e.g. epochs) is not a candidate's identity.
    space = getattr(search, "param_grid", None) or search.param_distributions
    axes = sorted(space)
    cv_results = search.cv_results_
    best = top_index(cv_results)
    candidates = candidate_frame(cv_results, axes, search.n_splits_)
    candidates["mean_training_time"] = np.asarray(training_time, dtype=float)
    candidates = pd.concat([candidates, compare_with_best(cv_results, best, sizes, alpha, rope)], axis=1)
    refitted = getattr(search, "best_estimator_", None)
    test = score_on_test(refitted, x_test, y_test) if refitted is not None and x_test is not None else None
    return SearchResult(
        candidates=candidates,
        axes=axes,
        n_splits=search.n_splits_,
        best_index=best,
        best_params=dict(cv_results["params"][best]),
        best_score=float(cv_results["mean_test_score"][best]),
        test=test,
        refit_rule=refit_rule if refitted is not None else None,
        refit_index=int(search.best_index_) if refitted is not None else None,
    )
