"""Stage-1 influence ranking and the stage-2 grid it picks, on hand-built search results."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest

from mnist_hpo.search.evaluation import SearchResult
from mnist_hpo.search.oracle import fine_grid, influence
from mnist_hpo.search.selection import FoldSizes, compare_with_best

NAN = float("nan")


def result(name: str, values: list[Any], scores: list[float], noise: float = 0.0) -> SearchResult:
    """A one-axis search result over ``name`` with ``scores`` as mean CV scores (NaN = failed).

    Each candidate scores ``mean - noise`` and ``mean + noise`` on two folds, the sign of the noise
    alternating between candidates: no noise makes every difference exact, much noise ties them.
    """
    candidates = pd.DataFrame({name: values, "mean_test_score": scores})
    signs = [(-1) ** index for index in range(len(scores))]
    cv_results = {
        "params": [{name: value} for value in values],
        "mean_test_score": scores,
        "split0_test_score": [score - sign * noise for score, sign in zip(scores, signs, strict=True)],
        "split1_test_score": [score + sign * noise for score, sign in zip(scores, signs, strict=True)],
    }
    candidates["failed"] = candidates["mean_test_score"].isna()
    finite = candidates["mean_test_score"].dropna()
    best = int(finite.idxmax()) if len(finite) else 0
    comparisons = compare_with_best(cv_results, best, FoldSizes(n_train=100, n_test=100), alpha=0.05, rope=0.005)
    candidates = pd.concat([candidates, comparisons], axis=1)
    return SearchResult(
        candidates=candidates,
        axes=[name],
        n_splits=2,
        best_index=best,
        best_params={name: values[best]},
        best_score=float(finite.max()) if len(finite) else NAN,
        test=None,
    )


def row(ranking: pd.DataFrame, name: str) -> pd.Series:
    """The ranking row of hyperparameter ``name``."""
    (found,) = ranking.index[ranking["hyperparameter"] == name]
    return ranking.loc[found]


def test_influence_is_best_minus_worst_and_ranks_largest_first():
    # Given three coarse searches with spreads 0.1, 0.4 and 0.25
    results = {
        "dense_units": result("dense_units", [0, 32, 64], [0.80, 0.85, 0.90]),
        "learning_rate": result("learning_rate", [0.1, 0.01, 0.001], [0.5, 0.9, 0.7]),
        "batch_size": result("batch_size", [32, 128], [0.6, 0.85]),
    }
    # When they are ranked
    ranking = influence(results)
    # Then the largest spread comes first and each row holds its best and worst scores
    assert list(ranking["hyperparameter"]) == ["learning_rate", "batch_size", "dense_units"]
    assert list(ranking.index) == [0, 1, 2]
    assert ranking["influence"].tolist() == pytest.approx([0.4, 0.25, 0.1])
    lr = row(ranking, "learning_rate")
    assert lr["best_score"] == pytest.approx(0.9)
    assert lr["worst_score"] == pytest.approx(0.5)
    assert lr["best_value"] == 0.01
    assert lr["ranked_values"] == [0.01, 0.001, 0.1]


def test_equal_influence_keeps_the_order_the_searches_ran_in():
    # Given two searches with exactly the same spread, after one with a larger spread
    results = {
        "kernel_size": result("kernel_size", [3, 5], [0.7, 0.9]),
        "padding": result("padding", ["same", "valid"], [0.9, 0.7]),
        "activation": result("activation", ["relu", "sigmoid"], [0.95, 0.1]),
    }
    ranking = influence(results)
    # Then the tie keeps its input order (a stable sort)
    assert list(ranking["hyperparameter"]) == ["activation", "kernel_size", "padding"]


def test_failed_candidates_are_ignored():
    # Given a search whose best-looking value failed on every fold (NaN mean score)
    results = {"learning_rate": result("learning_rate", [1.0, 0.1, 0.01], [NAN, 0.6, 0.8])}
    lr = row(influence(results), "learning_rate")
    # Then it takes no part in the spread, the best value or the ranked values
    assert lr["influence"] == pytest.approx(0.2)
    assert lr["worst_score"] == pytest.approx(0.6)
    assert lr["best_value"] == 0.01
    assert lr["ranked_values"] == [0.01, 0.1]


def test_a_search_where_everything_failed_has_no_influence_and_no_values():
    results = {
        "dense_units": result("dense_units", [0, 64], [0.8, 0.9]),
        "dropout_dense": result("dropout_dense", [0.2, 0.5], [NAN, NAN]),
    }
    ranking = influence(results)
    assert list(ranking["hyperparameter"]) == ["dense_units", "dropout_dense"]
    failed = row(ranking, "dropout_dense")
    assert failed["influence"] == 0.0
    assert pd.isna(failed["best_value"])  # None, which pandas stores as NaN beside numeric best values
    assert math.isnan(failed["best_score"]) and math.isnan(failed["worst_score"])
    assert failed["ranked_values"] == []


def test_list_valued_hyperparameters_stay_lists():
    # Given conv_filters, whose values are lists of filters per block
    values = [[16], [16, 32], [32, 64]]
    ranking = influence({"conv_filters": result("conv_filters", values, [0.7, 0.9, 0.8])})
    filters = row(ranking, "conv_filters")
    # Then the best and ranked values come back as the same lists, not strings or tuples
    assert filters["best_value"] == [16, 32]
    assert isinstance(filters["best_value"], list)
    assert filters["ranked_values"] == [[16, 32], [32, 64], [16]]
    assert all(isinstance(value, list) for value in filters["ranked_values"])
    assert fine_grid(ranking, top_m=1, top_k=2) == {"conv_filters": [[16, 32], [32, 64]]}


def test_fine_grid_takes_the_top_k_values_of_the_top_m_hyperparameters_in_ranking_order():
    results = {
        "batch_size": result("batch_size", [32, 64, 128], [0.88, 0.90, 0.86]),  # spread 0.04
        "learning_rate": result("learning_rate", [0.1, 0.01, 0.001], [0.3, 0.9, 0.8]),  # 0.6
        "activation": result("activation", ["relu", "tanh", "sigmoid"], [0.9, 0.85, 0.6]),  # 0.3
    }
    ranking = influence(results)
    grid = fine_grid(ranking, top_m=2, top_k=2)
    assert grid == {"learning_rate": [0.01, 0.001], "activation": ["relu", "tanh"]}
    assert list(grid) == ["learning_rate", "activation"]


def test_fine_grid_keeps_every_value_when_top_k_exceeds_them():
    ranking = influence({"padding": result("padding", ["same", "valid"], [0.7, 0.9])})
    assert fine_grid(ranking, top_m=3, top_k=5) == {"padding": ["valid", "same"]}


def test_a_hyperparameter_whose_worst_value_is_tied_with_its_best_ranks_after_every_detectable_one():
    # Given a large but noisy spread (tied: no detectable influence) and a small exact one
    results = {
        "batch_size": result("batch_size", [32, 128], [0.90, 0.80], noise=0.2),
        "dense_units": result("dense_units", [0, 64], [0.85, 0.86]),
    }
    ranking = influence(results)
    # Then the detectable one ranks first although its spread is smaller, with an interval excluding 0
    assert list(ranking["hyperparameter"]) == ["dense_units", "batch_size"]
    assert list(ranking["detectable"]) == [True, False]
    dense = row(ranking, "dense_units")
    assert dense["influence_low"] > 0
    noisy = row(ranking, "batch_size")
    assert noisy["influence_low"] < 0 < noisy["influence_high"]
    # And stage 2 takes the undetectable one only when top_m asks for more than are detectable
    assert list(fine_grid(ranking, top_m=1, top_k=2)) == ["dense_units"]
    assert list(fine_grid(ranking, top_m=2, top_k=2)) == ["dense_units", "batch_size"]


def test_a_hyperparameter_whose_every_value_failed_never_enters_stage_2():
    results = {
        "batch_size": result("batch_size", [32, 128], [NAN, NAN]),
        "dense_units": result("dense_units", [0, 64], [0.85, 0.86]),
    }
    assert fine_grid(influence(results), top_m=2, top_k=2) == {"dense_units": [64, 0]}


def test_the_stage_2_grid_holds_plain_values_that_json_and_the_estimator_take():
    # Integer and float axes come out of pandas as NumPy scalars unless converted
    results = {
        "batch_size": result("batch_size", [32, 128], [0.9, 0.8]),
        "learning_rate": result("learning_rate", [0.01, 0.001], [0.7, 0.9]),
    }
    ranking = influence(results)
    grid = fine_grid(ranking, top_m=2, top_k=2)
    assert json.loads(json.dumps(grid)) == grid
    assert all(type(value) in (int, float) for values in grid.values() for value in values)
    assert json.dumps(row(ranking, "batch_size")["best_value"]) == "32"
