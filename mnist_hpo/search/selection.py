"""Which candidate to believe: each one compared with the best on the same folds, and the refit rules.

Every candidate is scored on the same folds, so candidate and best form paired fold scores; the
comparisons are stats.py's corrected paired t-test (Nadeau & Bengio 2003) and correlated Bayesian
t-test (Corani & Benavoli 2015). A halving search compares only the candidates of the best's
iteration, which saw the same resources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mnist_hpo.search import stats

# The refit rules that choose by more than the best mean (RefitRule); "best" is scikit-learn's own.
CHOOSING_RULES = ("one_se", "tied_fastest")
REFIT_RULES = ("best", *CHOOSING_RULES)
COMPARISON_COLUMNS = (
    "diff_vs_best",
    "diff_low",
    "diff_high",
    "p_value",
    "tied_with_best",
    "p_best_better",
    "p_equivalent",
)


@dataclass(frozen=True)
class FoldSizes:
    """Training and validation sizes of one fold: the Nadeau-Bengio correction's n_train and n_test."""

    n_train: int
    n_test: int

    @classmethod
    def of(cls, n_samples: int, n_splits: int) -> FoldSizes:
        """The sizes of a k-fold split of ``n_samples`` (folds differ by at most one sample)."""
        n_test = n_samples // n_splits
        return cls(n_train=n_samples - n_test, n_test=n_test)


def rule_name(refit: Any) -> str | None:
    """``search.refit`` as a rule name: true is ``best``, false is no refit (None)."""
    if refit is True:
        return "best"
    if refit is False:
        return None
    return str(refit)


def split_scores(cv_results: Mapping[str, Any]) -> np.ndarray:
    """The test score of every candidate on every split, shape (candidates, splits)."""
    columns = sorted(
        (name for name in cv_results if name.startswith("split") and name.endswith("_test_score")),
        key=lambda name: int(name[len("split") : -len("_test_score")]),
    )
    return np.column_stack([np.asarray(cv_results[name], dtype=float) for name in columns])


def comparable_rows(cv_results: Mapping[str, Any], row: int) -> np.ndarray:
    """The rows comparable with ``row``: all, or in a halving search those of the same iteration."""
    if "iter" not in cv_results:
        return np.arange(len(cv_results["params"]))
    iterations = np.asarray(cv_results["iter"])
    return np.flatnonzero(iterations == iterations[row])


def final_rows(cv_results: Mapping[str, Any]) -> np.ndarray:
    """The rows a search chooses among: all, or in a halving search those of its last iteration."""
    iterations = np.asarray(cv_results.get("iter", np.zeros(len(cv_results["params"]), dtype=int)))
    return np.flatnonzero(iterations == iterations.max())


def top_index(cv_results: Mapping[str, Any]) -> int:
    """The row with the best mean CV score among :func:`final_rows` (the first, on a tie, as scikit-learn)."""
    means = np.asarray(cv_results["mean_test_score"], dtype=float)
    rows = final_rows(cv_results)
    finite = rows[np.isfinite(means[rows])]
    return int(finite[np.argmax(means[finite])]) if finite.size else int(rows[0])


def compare_with_best(
    cv_results: Mapping[str, Any], best_index: int, sizes: FoldSizes, alpha: float, rope: float
) -> pd.DataFrame:
    """Every candidate against the best: :data:`COMPARISON_COLUMNS`, one row per ``cv_results_`` row.

    ``diff_vs_best`` is best minus candidate (>= 0 for all but noise), with its 95 % interval;
    ``p_value`` is the one-sided corrected t-test's (small: the best is really better);
    ``tied_with_best`` is ``p_value >= alpha``; ``p_best_better`` and ``p_equivalent`` are the
    Bayesian posterior probabilities that the best is better by more than ``rope``, or within it.
    Rows not comparable with the best (another halving iteration) are NaN and not tied.
    """
    scores = split_scores(cv_results)
    frame = pd.DataFrame(np.nan, index=range(len(scores)), columns=list(COMPARISON_COLUMNS), dtype=object)
    frame["tied_with_best"] = False
    rows = comparable_rows(cv_results, best_index)
    position = int(np.flatnonzero(rows == best_index)[0])
    comparisons = stats.compare_all(scores[rows], position, sizes.n_train, sizes.n_test, alpha=alpha, rope=rope)
    for row, comparison in zip(rows, comparisons, strict=True):
        frequentist, bayesian = comparison.frequentist, comparison.bayesian
        frame.loc[row, list(COMPARISON_COLUMNS)] = [
            frequentist.mean_difference,
            frequentist.interval_low,
            frequentist.interval_high,
            frequentist.p_value,
            comparison.tied,
            bayesian.p_best_better,
            bayesian.p_equivalent,
        ]
    frame["tied_with_best"] = frame["tied_with_best"].astype(bool)
    return frame.astype({name: float for name in COMPARISON_COLUMNS if name != "tied_with_best"})


@dataclass
class RefitRule:
    """``search.refit`` as scikit-learn's public refit callable: given ``cv_results_``, the row to refit.

    * ``one_se``: the simplest candidate whose mean is within one standard error (of the best's fold
      scores) of the best; simplest = fewest trainable parameters, then shortest training time.
    * ``tied_fastest``: of the candidates tied with the best (corrected t-test at ``alpha``), the one
      with the shortest mean training time.

    Training times are those recorded when each fit trained (the fit store keeps them), so a fit
    restored in milliseconds still counts what it cost.
    """

    rule: str
    sizes: FoldSizes
    alpha: float
    parameter_counts: Callable[[Sequence[dict[str, Any]]], np.ndarray]
    training_times: Callable[[Mapping[str, Any]], np.ndarray]

    def __call__(self, cv_results: Mapping[str, Any]) -> int:
        means = np.asarray(cv_results["mean_test_score"], dtype=float)
        rows = final_rows(cv_results)
        finite = rows[np.isfinite(means[rows])]
        best = top_index(cv_results)
        if finite.size == 0:
            return best
        times = np.asarray(self.training_times(cv_results), dtype=float)
        if self.rule == "one_se":
            floor = means[best] - np.nan_to_num(stats.standard_error(split_scores(cv_results)[best]))
            eligible = finite[means[finite] >= floor]
            counts = self.parameter_counts([cv_results["params"][row] for row in eligible])
            order = sorted(range(len(eligible)), key=lambda i: (counts[i], times[eligible[i]], eligible[i]))
            return int(eligible[order[0]])
        tied = compare_with_best(cv_results, best, self.sizes, self.alpha, rope=0.0)["tied_with_best"].to_numpy()
        eligible = finite[tied[finite]]
        return int(min(eligible, key=lambda row: (times[row], row)))
