"""A Hydra callback that groups a multirun's search runs under one MLflow sweep run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from mnist_hpo.config import SWEEP_RUN_ENV
from mnist_hpo.tracking.fold_logger import LEVEL
from mnist_hpo.tracking.search_run import SWEEP_RUN
from mnist_hpo.tracking.store import Store, experiment_id, open_store

BEST_SEARCH = "mnist_hpo.best_search_run_id"


class SweepRun(Callback):
    """Opens a sweep run before a multirun's jobs start and closes it after they end.

    Jobs find the sweep run through ``MNIST_HPO_SWEEP_RUN_ID``, which the basic launcher
    and the joblib launcher's worker processes both inherit.
    """

    def __init__(self) -> None:
        self.store: Store | None = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the sweep run (when tracking is on) and publish its id to the jobs."""
        if not config.tracking.enabled:
            return
        self.store = open_store(config.tracking, Path(os.getcwd()))
        client = self.store.client()
        experiment = experiment_id(self.store, config.tracking.experiment)
        overrides = " ".join(config.hydra.overrides.task) or "(none)"
        run = client.create_run(experiment, run_name="sweep", tags={LEVEL: "sweep", "mnist_hpo.overrides": overrides})
        self.run_id = run.info.run_id
        client.set_tag(self.run_id, SWEEP_RUN, self.run_id)
        os.environ[SWEEP_RUN_ENV] = self.run_id

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A failed job fails the sweep run at once: the multirun stops without ``on_multirun_end``."""
        run_id = os.environ.get(SWEEP_RUN_ENV)
        if run_id and job_return.status == JobStatus.FAILED and config.tracking.enabled:
            store = self.store or open_store(config.tracking, Path(os.getcwd()))
            store.client().set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Point the sweep run at its best search run, and end it."""
        if self.store is None or self.run_id is None:
            return
        client = self.store.client()
        experiment = client.get_run(self.run_id).info.experiment_id
        searches = client.search_runs(
            [experiment],
            f"tags.`{SWEEP_RUN}` = '{self.run_id}' and tags.`{LEVEL}` = 'search'",
            order_by=["metrics.best_cv_score DESC"],
        )
        if searches:
            client.set_tag(self.run_id, BEST_SEARCH, searches[0].info.run_id)
            best = searches[0].data.metrics.get("best_cv_score")
            if best is not None:
                client.log_metric(self.run_id, "best_cv_score", best)
        failed = any(run.info.status != "FINISHED" for run in searches)
        client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))
        os.environ.pop(SWEEP_RUN_ENV, None)
