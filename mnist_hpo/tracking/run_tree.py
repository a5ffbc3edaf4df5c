"""The search's tree of runs in MLflow: candidate runs under the search run, made once or adopted on resume."""

from __future__ import annotations

import json
from typing import Any

from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mnist_hpo.tracking.limits import param_value
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.runs import CANDIDATE, ERROR, ITERATION, LEVEL, SEARCH_RUN, SPLIT, TRIAL
from mnist_hpo.tracking.store import Store


def candidate_key(params: dict[str, Any], axes: list[str]) -> str:
    """A canonical text for one candidate: its values on the search axes."""
    return json.dumps({axis: params[axis] for axis in sorted(axes)}, sort_keys=True, default=str)


def params_batch(params: dict[str, Any]) -> list[Param]:
    """MLflow params from a dict, values as text with credentials hidden."""
    return [Param(key, param_value(redact(str(value)))) for key, value in params.items()]


class RunTree:
    """One search run's candidate runs, keyed by their values on the search's axes, and what it had finished.

    Candidate runs are made in the main process when the search (or an Optuna batch) begins, so they
    exist before any worker needs one; a fold run finds its candidate by the candidate's values,
    never by arrival order. A resumed search adopts its candidate runs and remembers which fold and
    refit runs had FINISHED, so a restored fit does not get a second one.

    Args:
        store: The tracking store; each process opens its own client from it.
        experiment_id: The experiment holding the search run.
        search_run_id: The search run every run of the tree is tagged with.
    """

    def __init__(self, store: Store, experiment_id: str, search_run_id: str) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.search_run_id = search_run_id
        self.axes: list[str] = []
        self.candidate_runs: dict[str, str] = {}
        self.finished_folds: set[tuple[str, str, str]] = set()
        self.refit_finished = False

    def create_run(self, name: str, parent_id: str, tags: dict[str, str]) -> str:
        """Create a child run of ``parent_id`` in the search and return its id."""
        run = self.store.client().create_run(self.experiment_id, run_name=name, tags=self.child_tags(parent_id, tags))
        return run.info.run_id

    def child_tags(self, parent_id: str, tags: dict[str, str]) -> dict[str, str]:
        """``tags`` of a child run of ``parent_id`` in the search: with its parent and its search run."""
        return {MLFLOW_PARENT_RUN_ID: parent_id, SEARCH_RUN: self.search_run_id, **tags}

    def adopt_existing(self) -> None:
        """Take over the candidate runs of a resumed search run and note its finished fold and refit runs."""
        client = self.store.client()
        query = f"tags.`{SEARCH_RUN}` = '{self.search_run_id}'"
        for run in client.search_runs([self.experiment_id], query, max_results=50000):
            tags = run.data.tags
            if tags.get(LEVEL) == "candidate":
                self.candidate_runs[tags[CANDIDATE]] = run.info.run_id
                if run.info.status != "RUNNING":
                    client.update_run(run.info.run_id, status="RUNNING")
                if ERROR in tags:  # the interruption's reason no longer describes it
                    client.delete_tag(run.info.run_id, ERROR)
            elif tags.get(LEVEL) == "fold" and run.info.status == "FINISHED":
                self.finished_folds.add((tags[CANDIDATE], tags[SPLIT], tags.get(ITERATION, "0")))
            elif tags.get(LEVEL) == "refit" and run.info.status == "FINISHED":
                self.refit_finished = True

    def create_candidates(self, candidates: list[dict[str, Any]], trials: list[int] | None = None) -> None:
        """One run per candidate not yet in the tree; an Optuna trial's is named and tagged by its number."""
        client = self.store.client()
        if candidates and not self.axes:
            self.axes = sorted(candidates[0])
        for index, params in enumerate(candidates):
            key = self.key(params)
            if key in self.candidate_runs:
                continue
            number = index if trials is None else trials[index]
            tags = {LEVEL: "candidate", CANDIDATE: key} | ({TRIAL: str(number)} if trials is not None else {})
            run_id = self.create_run(f"candidate-{number:03d}", self.search_run_id, tags)
            client.log_batch(run_id, params=params_batch(params))
            self.candidate_runs[key] = run_id

    def key(self, params: dict[str, Any]) -> str:
        """The candidate ``params`` belong to (an estimator's parameters hold more than the axes)."""
        return candidate_key(params, self.axes)

    def fold_finished(self, key: str, split: int, iteration: int) -> bool:
        """Whether a resumed search's fold run for this candidate, split and iteration had FINISHED."""
        return (key, str(split), str(iteration)) in self.finished_folds
