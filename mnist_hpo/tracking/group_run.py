"""An MLflow run that groups other runs (a study, its stages) and never stays RUNNING."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mnist_hpo.tracking.records import metrics_batch
from mnist_hpo.tracking.run_tree import params_batch
from mnist_hpo.tracking.runs import LEVEL, close_dead_runs, close_on_exit, this_process
from mnist_hpo.tracking.store import Store, experiment_id
from mnist_hpo.tracking.store_loss import store_lost


class GroupRun:
    """Context manager for a parent run: FINISHED on a clean exit, else FAILED (KILLED for Ctrl-C).

    With ``store=None`` (tracking off) every method does nothing and ``run_id`` is None.
    """

    def __init__(
        self,
        store: Store | None,
        experiment: str,
        name: str,
        level: str,
        parent_run_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.experiment = experiment
        self.name = name
        self.level = level
        self.parent_run_id = parent_run_id
        self.params = params or {}
        self.run_id: str | None = None

    @classmethod
    def child(cls, parent: GroupRun, name: str, level: str) -> GroupRun:
        """A group run nested under ``parent``, in the same store and experiment."""
        return cls(parent.store, parent.experiment, name, level, parent.run_id)

    def __enter__(self) -> GroupRun:
        if self.store is None:
            return self
        client = self.store.client()
        experiment = experiment_id(self.store, self.experiment)
        close_dead_runs(client, experiment)
        tags = {LEVEL: self.level, **this_process()}
        if self.parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        run = client.create_run(experiment, run_name=self.name, tags=tags)
        self.run_id = run.info.run_id
        if self.params:
            client.log_batch(self.run_id, params=params_batch(self.params))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.store is not None and self.run_id is not None and not store_lost(error):
            close_on_exit(self.store.client(), self.run_id, kind, error)

    def log_text(self, text: str, path: str) -> None:
        """Log a text artifact."""
        if self.run_id is not None:
            self.store.client().log_text(self.run_id, text, path)

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        """Log a data frame as a CSV artifact."""
        self.log_text(frame.to_csv(index=False), path)

    def log_figure(self, figure: Figure, path: str) -> None:
        """Log a figure as a PNG artifact."""
        if self.run_id is not None:
            self.store.client().log_figure(self.run_id, figure, path)

    def finish(self, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Log the group's headline metrics and tags (the run ends when the block exits)."""
        if self.run_id is None:
            return
        client = self.store.client()
        client.log_batch(self.run_id, metrics=metrics_batch(metrics))
        for name, value in tags.items():
            client.set_tag(self.run_id, name, value)
