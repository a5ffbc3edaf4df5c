"""Reads back what a search left in an MLflow store, through the public client API."""

from __future__ import annotations

from collections import Counter, defaultdict

from mlflow import MlflowClient
from mlflow.entities import Run


def runs_by_level(uri: str, experiment: str = "mnist-hpo") -> dict[str, list[Run]]:
    """Every run of ``experiment``, grouped by its ``mnist_hpo.level`` tag."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    levels: dict[str, list[Run]] = defaultdict(list)
    for run in client.search_runs([found.experiment_id], max_results=50000):
        levels[run.data.tags.get("mnist_hpo.level", "?")].append(run)
    return dict(levels)


def parent_of(run: Run) -> str | None:
    """The run id this run is nested under."""
    return run.data.tags.get("mlflow.parentRunId")


def assert_complete_tree(uri: str, candidates: int, folds: int, epochs: int) -> None:
    """One search run, ``candidates`` candidate runs under it, ``folds`` fold runs under each."""
    levels = runs_by_level(uri)
    (search,) = levels["search"]
    assert len(levels["candidate"]) == candidates
    assert {parent_of(run) for run in levels["candidate"]} == {search.info.run_id}
    assert len(levels["fold"]) == candidates * folds
    candidate_ids = {run.info.run_id: run for run in levels["candidate"]}
    per_candidate = Counter(parent_of(run) for run in levels["fold"])
    assert set(per_candidate) == set(candidate_ids) and set(per_candidate.values()) == {folds}
    client = MlflowClient(uri)
    for fold in levels["fold"]:
        # A fold belongs to the candidate whose parameters it trained with.
        assert fold.data.tags["mnist_hpo.candidate"] == candidate_ids[parent_of(fold)].data.tags["mnist_hpo.candidate"]
        history = client.get_metric_history(fold.info.run_id, "loss")
        assert sorted(point.step for point in history) == list(range(epochs))
        assert "test_score" in fold.data.metrics
    statuses = {run.info.status for runs in levels.values() for run in runs}
    assert statuses == {"FINISHED"}
    assert search.data.tags["mnist_hpo.best_candidate_run_id"] in candidate_ids
    assert {"best_cv_score", "test_accuracy", "test_f1_macro"} <= set(search.data.metrics)
