"""The MLflow search run: opened (or resumed) with its params and tags, closed whatever happens.

What it records once the search has its results is tracking/records.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from mlflow.entities import Run, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mnist_hpo.configuration.schema import ConfigError
from mnist_hpo.data.loading import MnistData
from mnist_hpo.environment.provenance import Provenance
from mnist_hpo.search.evaluation import SearchResult
from mnist_hpo.tracking.datasets import DataOrigin, log_inputs, search_inputs
from mnist_hpo.tracking.fold_logger import FoldLogger
from mnist_hpo.tracking.limits import tag_value
from mnist_hpo.tracking.records import SearchRecords
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.run_tree import params_batch
from mnist_hpo.tracking.runs import (
    BEST_PARAMS,
    CANDIDATE,
    ERROR,
    LEVEL,
    PID,
    REFIT_RULE,
    RESUME_COUNT,
    RESUME_KEY,
    RESUMED_FROM,
    SEARCH_RUN,
    SPLIT,
    SWEEP_RUN,
    close_dead_runs,
    close_lost_fits,
    close_on_exit,
    close_run,
    exit_status,
    process_alive,
    provenance_tags,
    this_process,
)
from mnist_hpo.tracking.store import Store, experiment_id
from mnist_hpo.tracking.store_loss import store_lost
from mnist_hpo.tracking.writer import RunWriter

MAX_PARAMS_PER_BATCH = 100
Draw = Callable[[], dict[str, Figure]]  # the search's figures, drawn when the records are ready for them


@dataclass(frozen=True)
class SearchRunSpec:
    """Everything the search run records up front, prepared by the runner."""

    experiment: str
    run_name: str
    params: dict[str, Any]
    provenance: Provenance
    config_yaml: str
    sweep_run_id: str | None = None
    parent_run_id: str | None = None
    registered_model_name: str | None = None
    pip_requirements: list[str] = field(default_factory=list)
    resume_key: str = ""
    resume: bool = True


class SearchRun:
    """Context manager around one search's MLflow run and everything nested under it.

    On a clean exit the search run is FINISHED. If the block raises, the search run and any
    child still RUNNING end FAILED (KILLED for Ctrl-C), so no run is left RUNNING.
    """

    def __init__(self, store: Store, spec: SearchRunSpec, writer: RunWriter | None = None) -> None:
        self.store = store
        self.spec = spec
        self.writer = writer
        self.client = store.client()
        self.experiment_id = ""
        self.run_id = ""
        self.resumed_from: str | None = None
        self.attempt_started_ms = 0
        self.fit_counts = (0, 0, 0)
        self.unstored: dict[str, int] = {}  # why trained fits could not be kept in the fit store -> how many
        provenance = spec.provenance
        self.origin = DataOrigin.of(provenance.data_source, provenance.data_fingerprint)

    def __enter__(self) -> SearchRun:
        self.attempt_started_ms = int(time.time() * 1000)
        self.experiment_id = experiment_id(self.store, self.spec.experiment)
        close_dead_runs(self.client, self.experiment_id)
        previous = self.interrupted_run() if self.spec.resume and self.spec.resume_key else None
        self.resumed_from = previous.info.status if previous is not None else None
        tags = {LEVEL: "search", RESUME_KEY: self.spec.resume_key, **this_process()}
        tags |= provenance_tags(self.spec.provenance)
        if self.spec.sweep_run_id:
            tags |= {MLFLOW_PARENT_RUN_ID: self.spec.sweep_run_id, SWEEP_RUN: self.spec.sweep_run_id}
        if self.spec.parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = self.spec.parent_run_id
        if previous is None:
            self.run_id = self.client.create_run(self.experiment_id, run_name=self.spec.run_name).info.run_id
            params = self.spec.params
        else:
            self.run_id = previous.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            if ERROR in previous.data.tags:  # the interruption's reason no longer describes it
                self.client.delete_tag(self.run_id, ERROR)
            tags[RESUMED_FROM] = previous.info.status
            tags[RESUME_COUNT] = str(int(previous.data.tags.get(RESUME_COUNT, "0")) + 1)
            # MLflow params are write-once: keep the first attempt's, add any new ones.
            params = {key: value for key, value in self.spec.params.items() if key not in previous.data.params}
        self.client.log_batch(self.run_id, tags=[RunTag(key, tag_value(value)) for key, value in tags.items()])
        self.client.set_tag(self.run_id, SEARCH_RUN, self.run_id)
        items = list(params.items())
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params_batch(dict(items[start : start + MAX_PARAMS_PER_BATCH])))
        self.client.log_text(self.run_id, redact(self.spec.config_yaml), "config.yaml")
        return self

    def interrupted_run(self) -> Any | None:
        """The newest unfinished search run with this config and data, unless it is still alive."""
        query = f"tags.`{RESUME_KEY}` = '{self.spec.resume_key}' and tags.`{LEVEL}` = 'search'"
        runs = self.client.search_runs([self.experiment_id], query, order_by=["attributes.start_time DESC"])
        if not runs or runs[0].info.status == "FINISHED":
            return None
        run = runs[0]
        if run.info.status == "RUNNING" and process_alive(run.data.tags):
            raise ConfigError(
                f"execution.resume: search run {run.info.run_id} with this config is still running "
                f"(pid {run.data.tags.get(PID)}); wait for it, or set execution.resume=false to start another"
            )
        return run

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if store_lost(error):  # nothing can be written; the next search in a restored store ends these runs
            return
        if self.writer is not None:  # the runs it was handed are written before any is ended as unfinished
            self.writer.drain(raise_errors=False)
        if kind is None:
            self.close_children(RunStatus.FAILED, "the search ended before this run finished")
        else:
            unfinished = self.close_children(exit_status(kind), f"{kind.__name__}: {error}")
            if error is not None and unfinished:  # the fits it stopped, for whoever reports the error
                error.add_note(f"unfinished fits: {'; '.join(unfinished)}")
        close_on_exit(self.client, self.run_id, kind, error)

    @property
    def resumed(self) -> bool:
        """True when this search continues an interrupted one."""
        return self.resumed_from is not None

    def descendants(self, running_only: bool = False) -> list[Run]:
        """Every run below this search run (candidate, fold, refit), or only those still RUNNING.

        One query: a search of 90 fits answers in about 0.1 s, so callers share its answer.
        """
        query = f"tags.`{SEARCH_RUN}` = '{self.run_id}' and tags.`{LEVEL}` != 'search'"
        if running_only:
            query += " and attributes.status = 'RUNNING'"
        return self.client.search_runs([self.experiment_id], query, max_results=50000)

    def close_children(self, status: int, reason: str) -> list[str]:
        """End every descendant of this search still RUNNING with ``status`` and the reason as a tag.

        Returns the fits (candidate and split) whose fold runs it ended.
        """
        fits = []
        for run in self.descendants(running_only=True):
            close_run(self.client, run.info.run_id, status, reason)
            if run.data.tags.get(LEVEL) == "fold":
                fits.append(f"candidate {run.data.tags.get(CANDIDATE)} split {run.data.tags.get(SPLIT)}")
        return fits

    def callbacks(self, n_splits: int, n_repeats: int = 1) -> list[FoldLogger]:
        """The sklearn callbacks that fill this search run's candidate and fold runs."""
        return [FoldLogger(self.store, self.experiment_id, self.run_id, n_splits, n_repeats, self.origin, self.writer)]

    def log_datasets(self, data: MnistData) -> None:
        """Record the search's training and test data as its run's datasets (MLflow ignores a resume's repeat)."""
        inputs = search_inputs(self.origin, data.x_train, data.y_train, data.x_test, data.y_test)
        log_inputs(self.client, self.run_id, inputs)

    def record(self, result: SearchResult, csv_path: Path, draw: Draw, model: Any | None, images: np.ndarray) -> None:
        """Everything a finished search leaves (tracking/records.py); the model last, as it ends the run's block.

        With a writer, the scores, counts and closes go to it, and ``draw`` (the figures) runs while
        it writes them; the search waits for it at the end, so every write is made, or raised, here.
        """
        if self.writer is not None:  # the fold runs it was handed are read back next
            self.writer.drain()
        close_lost_fits(self.client, self.experiment_id, self.run_id)
        records = SearchRecords(self)
        runs = self.descendants()  # what both need is written by the search, before this: read once
        records.candidates(result, runs)
        self.fit_counts, self.unstored = records.fit_counts(runs)
        records.result(result, {BEST_PARAMS: str(result.best_params), REFIT_RULE: result.refit_rule or "none"})
        records.file(csv_path)
        records.figures(draw())
        if model is not None:
            records.model(model, images)
        if self.writer is not None:
            self.writer.drain()

    def summary_line(self) -> str:
        """Where the user finds this search in MLflow, and how many fits it trained or restored."""
        reused, trained, failed = self.fit_counts
        failures = f", {failed} failed" if failed else ""
        if self.unstored:  # one line for all of them, however many fits a full disk refused
            reasons = ", ".join(sorted(self.unstored))
            failures += (
                f", {sum(self.unstored.values())} not kept in the fit store ({reasons}): they stand in these "
                "results but train again next time"
            )
        return (
            f"MLflow: experiment {self.spec.experiment!r}, search run {self.run_id} ({redact(self.store.uri)}); "
            f"fits: {trained} trained, {reused} restored from the fit store{failures}"
        )


class UntrackedSearch:
    """Tracking off (``tracking.enabled=false``): the search run's calls, none of them recording anything."""

    run_id: str | None = None
    resumed = False
    resumed_from: str | None = None

    def __enter__(self) -> UntrackedSearch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def callbacks(self, n_splits: int, n_repeats: int = 1) -> list[FoldLogger]:
        return []

    def log_datasets(self, data: MnistData) -> None:
        return None

    def record(self, result: SearchResult, csv_path: Path, draw: Draw, model: Any | None, images: np.ndarray) -> None:
        return None

    def summary_line(self) -> str:
        return "MLflow: nothing recorded (tracking.enabled=false)"


def open_search_run(
    store: Store | None, spec: SearchRunSpec, writer: RunWriter | None = None
) -> SearchRun | UntrackedSearch:
    """The search's run in ``store`` (restored fits' fold runs written by ``writer``, if any), or one that
    records nothing when tracking is off."""
    return SearchRun(store, spec, writer) if store is not None else UntrackedSearch()
