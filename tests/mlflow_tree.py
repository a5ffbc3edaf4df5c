"""Reads back what a search left in an MLflow store, through the public client API."""

from __future__ import annotations

from collections import defaultdict

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
