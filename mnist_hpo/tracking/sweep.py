"""A Hydra callback that groups a multirun's search runs under one MLflow sweep run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

from mnist_hpo.configuration.schema import SWEEP_RUN_ENV, TrackingConfig
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.runs import BEST_SEARCH, LEVEL, OVERRIDES, SWEEP_RUN, close_run
from mnist_hpo.tracking.store import Store, experiment_id, open_store


def tracking_config(config: DictConfig) -> TrackingConfig:
    """The ``tracking`` group of the sweep's config, typed like everywhere else."""
    return OmegaConf.to_object(config.tracking)


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
        self.store = open_store(tracking_config(config), Path(os.getcwd()))
        client = self.store.client()
        experiment = experiment_id(self.store, config.tracking.experiment)
        overrides = redact(" ".join(config.hydra.overrides.task)) or "(none)"
        run = client.create_run(experiment, run_name="sweep", tags={LEVEL: "sweep", OVERRIDES: overrides})
        self.run_id = run.info.run_id
        client.set_tag(self.run_id, SWEEP_RUN, self.run_id)
        os.environ[SWEEP_RUN_ENV] = self.run_id

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A failed job fails the sweep run at once: the multirun stops without ``on_multirun_end``."""
        run_id = os.environ.get(SWEEP_RUN_ENV)
        if run_id and job_return.status == JobStatus.FAILED and config.tracking.enabled:
            store = self.store or open_store(tracking_config(config), Path(os.getcwd()))
            close_run(store.client(), run_id, RunStatus.FAILED, f"a job failed: {' '.join(job_return.overrides or [])}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Point the sweep run at its best search run, and end it."""
        if self.store is None or self.run_id is None:
            return
        client = self.store.client()
        sweep = client.get_run(self.run_id).info
        searches = client.search_runs(
            [sweep.experiment_id],
            f"tags.`{SWEEP_RUN}` = '{self.run_id}' and tags.`{LEVEL}` = 'search'",
            order_by=["metrics.best_cv_score DESC"],
        )
        finished = [run for run in searches if run.info.status == "FINISHED"]
        if finished:
            client.set_tag(self.run_id, BEST_SEARCH, finished[0].info.run_id)
            best = finished[0].data.metrics.get("best_cv_score")
            if best is not None:
                client.log_metric(self.run_id, "best_cv_score", best)
        # A job that failed already ended the sweep FAILED (on_job_end); a sweeper that went on keeps it so.
        failed = sweep.status == "FAILED" or len(finished) < len(searches)
        close_run(client, self.run_id, RunStatus.FAILED if failed else RunStatus.FINISHED)
        os.environ.pop(SWEEP_RUN_ENV, None)
