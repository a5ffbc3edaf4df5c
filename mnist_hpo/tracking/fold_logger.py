"""An sklearn callback that records candidate runs, fold runs and per-epoch curves in MLflow.

It rides scikit-learn's callback API, so the search itself tells it which candidate and fold
each fit is, in the main process or in any worker the search's joblib backend started.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import psutil
from mlflow.entities import DatasetInput, Metric, Param, RunStatus, RunTag
from sklearn.callback import CallbackContext

from mnist_hpo.search.strategies import candidate_params
from mnist_hpo.tracking.datasets import DataOrigin, fold_input, log_inputs, training_input
from mnist_hpo.tracking.run_tree import RunTree, params_batch
from mnist_hpo.tracking.runs import (
    CANDIDATE,
    ERROR,
    FIT_KEY,
    FUSED_GROUP,
    ITERATION,
    LEVEL,
    MAX_TEXT,
    NOT_STORED,
    PID,
    REPEAT,
    REUSED,
    REUSED_FIT_KEY,
    SPLIT,
    TRAINED_BY,
    close_run,
)
from mnist_hpo.tracking.store import Store
from mnist_hpo.tracking.store_loss import guarded
from mnist_hpo.tracking.tasks import Task, task_of
from mnist_hpo.tracking.writer import RunRecord, RunWriter


@dataclass
class PendingRun:
    """A restored fit's fold run, made whole when the fit ends and handed to the writer then."""

    name: str
    tags: dict[str, str]
    params: list[Param]
    inputs: list[DatasetInput]
    start_time: int


class FoldLogger:
    """Auto-propagated sklearn callback: what each fold (and the refit) of a search records in MLflow.

    It turns the search's tasks into runs of the search's :class:`RunTree` (candidate runs when the
    search or an Optuna batch begins) and writes each fold run: made by whichever process fits the
    fold, with the rows it fit on as its training dataset, each epoch's metrics as they come, and at
    its end the fit time, the fit key and its status. A fit restored from the fit store gets its fold
    run like any other, with the curves, fit time and the run that trained it; a resumed search's
    restored fit whose fold run had FINISHED gets no second one. The refit run records the whole
    training set.

    Args:
        store: The tracking store; workers open their own client from its URI.
        experiment_id: The experiment holding the search run.
        search_run_id: The parent search run.
        n_splits: Folds per repeat (``search.cv``), to turn a task id into a repeat and fold.
        n_repeats: Repeats of the folds (``search.cv_repeats``).
        origin: Where the search's data came from, for the runs' datasets (None: no datasets).
        writer: Where a restored fit's fold run goes, whole, when the fit ends (tracking/writer.py); None:
            written here. Only the search's own process has it: in workers each fit writes its own.
    """

    max_propagation_depth = None

    def __init__(
        self,
        store: Store,
        experiment_id: str,
        search_run_id: str,
        n_splits: int,
        n_repeats: int = 1,
        origin: DataOrigin | None = None,
        writer: RunWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.tree = RunTree(store, experiment_id, search_run_id)
        self.n_splits = n_splits
        self.n_repeats = n_repeats
        self.origin = origin
        self.fold_runs: dict[tuple[int, ...], str | PendingRun | None] = {}
        self.pending_params: dict[str, list[Param]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a worker: without the writer, which belongs to the search's process."""
        return self.__dict__ | {"writer": None}

    def setup(self, estimator: Any, context: CallbackContext) -> None:
        """Nothing to open: clients are made per process, on first use."""

    def teardown(self, estimator: Any, context: CallbackContext) -> None:
        """Nothing to close."""

    def on_fit_task_begin(self, estimator: Any, context: CallbackContext, *, X=None, y=None) -> None:
        """Create candidate runs when the search starts, a fold run when a fold fit starts."""
        with guarded():
            task = task_of(context, self.n_splits * self.n_repeats)
            if task.kind == "search":
                self.tree.adopt_existing()
                self.tree.create_candidates(list(candidate_params(estimator)))
            elif task.kind == "batch":  # an Optuna batch: its trials are candidates from now on
                self.tree.create_candidates(estimator.batch_candidates_, estimator.batch_trials_)
            elif task.kind == "fold":
                self.fold_runs[task.path] = self.create_fold_run(estimator, task, X, y)
            elif task.kind == "refit":
                reused = getattr(estimator, "fit_reused_", False)
                if reused and self.tree.refit_finished:  # a resumed search whose refit had finished: no second run
                    self.fold_runs[task.path] = None
                    return
                tags = {LEVEL: "refit"} | ({REUSED: "true"} if reused else {})
                run_id = self.tree.create_run("refit", self.tree.search_run_id, tags)
                if self.origin is not None and X is not None:
                    log_inputs(self.store.client(), run_id, [training_input(self.origin, X, y)])
                self.fold_runs[task.path] = run_id

    def on_fit_task_end(self, estimator: Any, context: CallbackContext, *, fitted_estimator=None) -> None:
        """Log an epoch's metrics, or close a fold run with its outcome."""
        with guarded():
            task = task_of(context, self.n_splits * self.n_repeats)
            if task.kind == "epoch":
                run_id = self.fold_runs.get(task.path[:-1])  # the fit the epoch belongs to
                if isinstance(run_id, str) and fitted_estimator is not None:
                    self.log_epoch(run_id, fitted_estimator.history_)
            else:
                run_id = self.fold_runs.pop(task.path, None)
                if run_id is not None:
                    self.close_fold_run(run_id, estimator)

    def create_fold_run(self, estimator: Any, task: Task, X: Any, y: Any) -> str | PendingRun | None:
        """Create the run of one (candidate, fold) fit under its candidate run, with the rows it fits on.

        None for a fit restored from the fit store whose fold run already FINISHED (a resumed search);
        a :class:`PendingRun` for one restored with a writer at hand (written whole when it ends).
        """
        key = self.tree.key(estimator.get_params())
        split, iteration = task.split, task.iteration
        repeat, fold = divmod(split, self.n_splits)
        reused = getattr(estimator, "fit_reused_", False)
        if reused and self.tree.fold_finished(key, split, iteration):
            return None
        tags = {LEVEL: "fold", CANDIDATE: key, SPLIT: str(split), REPEAT: str(repeat), ITERATION: str(iteration)}
        if reused:
            tags[REUSED] = "true"
        name = f"repeat-{repeat}-fold-{fold}" if self.n_repeats > 1 else f"fold-{fold}"
        from_store = getattr(estimator, "from_store_", False)  # already fitted: its run can be written whole at its end
        pending = from_store and self.writer is not None
        run_id = None if pending else self.tree.create_run(name, self.tree.candidate_runs[key], tags)
        n_train = len(X) if X is not None else 0
        n_validation = int(n_train * estimator.validation_split)
        params = params_batch(
            {
                "fold": fold,
                "repeat": repeat,
                "iteration": iteration,
                "train_size": n_train - n_validation,
                "validation_size": n_validation,
                "epochs": estimator.epochs,
            }
        )
        digest = getattr(estimator, "rows_digest_", None)  # the fit hashed these rows already
        inputs = [fold_input(self.origin, name, X, y, digest)] if self.origin is not None and X is not None else []
        if run_id is None:
            tags = self.tree.child_tags(self.tree.candidate_runs[key], tags)
            return PendingRun(name, tags, params, inputs, int(time.time() * 1000))
        if from_store:  # its params go with the rest of the run when it closes: one write
            self.pending_params[run_id] = params
        else:  # trains now: its settings show while it runs
            self.store.client().log_batch(run_id, params=params)
        if inputs:
            log_inputs(self.store.client(), run_id, inputs)
        return run_id

    def log_epoch(self, run_id: str, history: dict[str, list[float]]) -> None:
        """Log the newest epoch of every Keras metric with ``step=epoch``."""
        now = int(time.time() * 1000)
        metrics = [Metric(name, values[-1], now, len(values) - 1) for name, values in history.items() if values]
        self.store.client().log_batch(run_id, metrics=metrics)

    @staticmethod
    def history_metrics(history: dict[str, list[float]], now: int) -> list[Metric]:
        """Every epoch of a fit that trained before its run opened (restored or fused), as its training logged them."""
        return [Metric(name, value, now, step) for name, values in history.items() for step, value in enumerate(values)]

    def origin_run(self, fit_key: str) -> str:
        """The run that trained the stored fit ``fit_key``: the first fold or refit run tagged with it."""
        if self.writer is not None:  # it may hold the run that trained it (a fit twice in one search)
            self.writer.drain()
        runs = self.store.client().search_runs(
            [self.tree.experiment_id],
            f"tags.`{FIT_KEY}` = '{fit_key}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else "unknown (trained under another tracking store or experiment)"

    def close_fold_run(self, run_id: str | PendingRun, estimator: Any) -> None:
        """Mark a fold run FINISHED, or FAILED with the reason; note which process fit it, how long, from where.

        A restored fit logs the curves, fit time and origin its training left; a trained one its
        fit key, by which later searches that restore it find this run.
        """
        client = self.store.client()
        now = int(time.time() * 1000)
        metrics = [Metric("worker_rss_mb", psutil.Process().memory_info().rss / 2**20, now, 0)]
        tags = [RunTag(PID, str(os.getpid()))]
        fit_time = getattr(estimator, "fit_time_s_", math.nan)
        if math.isfinite(fit_time):
            metrics.append(Metric("fit_time_s", fit_time, now, 0))
        key = getattr(estimator, "fit_key_", None)
        fused = getattr(estimator, "fused_group_", None)
        if getattr(estimator, "fit_reused_", False):
            metrics += self.history_metrics(estimator.history_, now)
            tags += [RunTag(REUSED_FIT_KEY, key), RunTag(TRAINED_BY, self.origin_run(key))]
        elif key is not None:
            tags.append(RunTag(FIT_KEY, key))
            if getattr(estimator, "not_stored_", None):
                tags.append(RunTag(NOT_STORED, estimator.not_stored_))
            if fused is not None:  # trained ahead by this search's fused executor: its epochs, logged at once
                metrics += self.history_metrics(estimator.history_, now)
                tags.append(RunTag(FUSED_GROUP, fused))
        error = getattr(estimator, "fit_error_", None)
        if error:
            tags.append(RunTag(ERROR, error[:MAX_TEXT]))
        status = RunStatus.FAILED if error else RunStatus.FINISHED
        if isinstance(run_id, PendingRun):
            self.hand_over(run_id, metrics, tags, status, now)
            return
        # One write for the run's params (when deferred), metrics and tags: a restored fit costs four in all.
        client.log_batch(run_id, metrics=metrics, params=self.pending_params.pop(run_id, []), tags=tags)
        close_run(client, run_id, status)

    def hand_over(self, run: PendingRun, metrics: list[Metric], tags: list[RunTag], status: int, now: int) -> None:
        """Give the writer a restored fit's fold run, whole: what :meth:`create_fold_run` and the close would write."""
        assert self.writer is not None
        record = RunRecord(
            experiment_id=self.tree.experiment_id,
            name=run.name,
            tags=run.tags | {tag.key: str(tag.value) for tag in tags},
            params={param.key: str(param.value) for param in run.params},
            metrics=[(metric.key, float(metric.value), metric.timestamp, metric.step) for metric in metrics],
            inputs=[item.to_dictionary() for item in run.inputs],
            status=RunStatus.to_string(status),
            start_time=run.start_time,
            end_time=now,
        )
        self.writer.submit(record)
