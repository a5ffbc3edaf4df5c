"""The coarse-to-fine study's oracle: how much each hyperparameter matters, and the fine grid it picks."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mnist_hpo.search.evaluation import SearchResult


def influence(results: dict[str, SearchResult]) -> pd.DataFrame:
    """Rank hyperparameters by the spread of their stage-1 mean CV scores: detectable ones first, largest first.

    A spread is best minus worst value; its interval and verdict are the corrected paired t-test of
    the worst value against the best on the same folds (selection.py). A hyperparameter whose worst
    value is tied with its best has no detectable influence: it ranks after every detectable one, so
    stage 2 takes it only when ``study.top_m`` asks for more hyperparameters than are detectable.
    """
    rows = []
    for name, result in results.items():
        frame = result.candidates.dropna(subset=["mean_test_score"])
        ranked = frame.sort_values("mean_test_score", ascending=False, kind="stable")
        worst = ranked.iloc[-1] if len(ranked) else None
        values = ranked[name].tolist()  # plain Python values: they become the stage-2 grid and its JSON
        rows.append(
            {
                "hyperparameter": name,
                "influence": float(ranked["mean_test_score"].iloc[0] - worst["mean_test_score"])
                if len(ranked)
                else 0.0,
                "influence_low": float(worst["diff_low"]) if len(ranked) > 1 else float("nan"),
                "influence_high": float(worst["diff_high"]) if len(ranked) > 1 else float("nan"),
                "detectable": bool(len(ranked) > 1 and not worst["tied_with_best"]),
                "best_value": values[0] if values else None,
                "best_score": float(ranked["mean_test_score"].iloc[0]) if len(ranked) else float("nan"),
                "worst_score": float(worst["mean_test_score"]) if len(ranked) else float("nan"),
                "ranked_values": values,
            }
        )
    ranking = pd.DataFrame(rows)
    # One column holds every hyperparameter's best value: left as objects, 32 stays 32 beside 0.001.
    ranking["best_value"] = pd.Series([row["best_value"] for row in rows], dtype=object)
    return ranking.sort_values(["detectable", "influence"], ascending=False, kind="stable").reset_index(drop=True)


def fine_grid(ranking: pd.DataFrame, top_m: int, top_k: int) -> dict[str, list[Any]]:
    """The stage-2 grid: the best ``top_k`` values of the ``top_m`` most influential hyperparameters."""
    usable = ranking[ranking["ranked_values"].map(len) > 0]  # a hyperparameter whose every value failed has none
    return {row.hyperparameter: list(row.ranked_values[:top_k]) for row in usable.head(top_m).itertuples()}
