"""What a finished search leaves in its MLflow run tree: scores, fit counts, files, figures, the model.

The search run (tracking/search_run.py) opens, resumes and closes the tree; this fills it once the
search has its results.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunStatus, RunTag

from mnist_hpo.search.evaluation import SearchResult
from mnist_hpo.search.selection import COMPARISON_COLUMNS
from mnist_hpo.tracking.limits import tag_value
from mnist_hpo.tracking.model_log import log_best_model
from mnist_hpo.tracking.run_tree import candidate_key
from mnist_hpo.tracking.runs import (
    BEST,
    BEST_CANDIDATE,
    CANDIDATE,
    ERROR,
    FAILED,
    FAILED_FITS,
    ITERATION,
    ITERATION_REACHED,
    LEVEL,
    LOST,
    MAX_TEXT,
    MODEL_URI,
    NOT_STORED,
    REFITTED,
    REUSED_FIT_KEY,
    REUSED_FITS,
    SPLIT,
    TIED_WITH_BEST,
    TRAINED_FITS,
    UNSTORED_FITS,
    close_run,
)
from mnist_hpo.tracking.writer import WriterCalls

if TYPE_CHECKING:
    from mnist_hpo.tracking.search_run import SearchRun


def levels(runs: list[Run], *names: str) -> list[Run]:
    """The runs of ``runs`` at one of the levels ``names`` (candidate, fold, refit)."""
    return [run for run in runs if run.data.tags.get(LEVEL) in names]


def metrics_batch(values: dict[str, float], step: int = 0) -> list[Metric]:
    """MLflow metrics from a dict, skipping non-finite values (MLflow cannot chart NaN)."""
    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items() if math.isfinite(float(value))]


class SearchRecords:
    """Writes one search's results into its open run and the candidate and fold runs under it."""

    def __init__(self, run: SearchRun) -> None:
        self.run = run
        self.client = run.client
        self.run_id = run.run_id
        # Scores, counts and closes: the writer's, when the search has one (the files and model are made here).
        self.writes: MlflowClient | WriterCalls = WriterCalls(run.writer) if run.writer is not None else run.client

    def fit_counts(self, runs: list[Run]) -> tuple[tuple[int, int, int], dict[str, int]]:
        """Tag how many of this attempt's fits were restored from the fit store, trained, or failed.

        A resumed search's fits whose fold runs had FINISHED before this attempt get no new run:
        they count as restored. A fit that raised (diverged, or a broken worker) is failed, not
        trained: it left no result and nothing in the store.

        Args:
            runs: The search's runs below its search run (:meth:`SearchRun.descendants`).
        """
        reused = trained = failed = 0
        unstored: dict[str, int] = {}
        for run in levels(runs, "fold", "refit"):
            if LOST in run.data.tags:  # an attempt whose worker died: the fit's own run counts it
                continue
            if run.info.start_time >= self.run.attempt_started_ms:
                if run.info.status == "FAILED":
                    failed += 1
                elif REUSED_FIT_KEY in run.data.tags:
                    reused += 1
                else:
                    trained += 1
                if NOT_STORED in run.data.tags:
                    unstored[run.data.tags[NOT_STORED]] = unstored.get(run.data.tags[NOT_STORED], 0) + 1
            elif run.info.status == "FINISHED":
                reused += 1
        self.writes.log_batch(
            self.run_id,
            tags=[
                RunTag(REUSED_FITS, str(reused)),
                RunTag(TRAINED_FITS, str(trained)),
                RunTag(FAILED_FITS, str(failed)),
                RunTag(UNSTORED_FITS, str(sum(unstored.values()))),
            ],
        )
        return (reused, trained, failed), unstored

    def candidates(self, result: SearchResult, runs: list[Run]) -> None:
        """Log each candidate's CV results to its run, each fold's scores to its fold run.

        Args:
            result: The search's results.
            runs: The search's runs below its search run (:meth:`SearchRun.descendants`).
        """
        candidates = {run.data.tags[CANDIDATE]: run for run in levels(runs, "candidate")}
        folds = {
            (
                run.data.tags[CANDIDATE],
                run.data.tags[SPLIT],
                run.data.tags.get(ITERATION, "0"),
            ): run
            for run in levels(runs, "fold")
            if run.info.status != "KILLED" and LOST not in run.data.tags
        }
        frame = result.candidates
        best_key = candidate_key(result.best_params, result.axes)
        for _, row in frame.iterrows():
            key = candidate_key(row[result.axes].to_dict(), result.axes)
            run = candidates.get(key)
            if run is None:
                continue
            step = int(row.get("iter", 0))
            values = {name: row[name] for name in frame.columns if name.endswith(("_score", "_time")) and name in row}
            values |= {"rank_test_score": row["rank_test_score"]}
            values |= {name: row[name] for name in COMPARISON_COLUMNS if name != "tied_with_best"}
            tags = {TIED_WITH_BEST: str(bool(row["tied_with_best"])).lower()}
            if "iter" in frame:
                tags[ITERATION_REACHED] = str(step)
            if row["failed"]:
                reasons = {
                    fold.data.tags.get(ERROR) for k, fold in folds.items() if k[0] == key and fold.data.tags.get(ERROR)
                }
                tags |= {FAILED: "true", ERROR: "; ".join(sorted(reasons))[:MAX_TEXT] or "fit failed"}
            self.writes.log_batch(
                run.info.run_id,
                metrics=metrics_batch(values, step),
                tags=[RunTag(name, value) for name, value in tags.items()],
            )
            for split in range(result.n_splits):
                fold = folds.get((key, str(split), str(step)))
                if fold is not None:
                    scores = {
                        name: row[f"split{split}_{name}"]
                        for name in ("test_score", "train_score")
                        if f"split{split}_{name}" in row
                    }
                    self.writes.log_batch(fold.info.run_id, metrics=metrics_batch(scores))
            status = RunStatus.FAILED if row["failed"] else RunStatus.FINISHED
            close_run(self.writes, run.info.run_id, status)
        if best_key in candidates:
            best_id = candidates[best_key].info.run_id
            self.writes.set_tag(best_id, BEST, "true")
            self.writes.set_tag(self.run_id, BEST_CANDIDATE, best_id)
        if result.refit_index is not None:
            refitted = candidate_key(frame.iloc[result.refit_index][result.axes].to_dict(), result.axes)
            if refitted in candidates:
                self.writes.set_tag(candidates[refitted].info.run_id, REFITTED, result.refit_rule)

    def result(self, result: SearchResult, tags: dict[str, str]) -> None:
        """Log the search's headline metrics and extra tags."""
        values = {"best_cv_score": result.best_score, "tied_with_best": result.tied}
        if result.test is not None:
            values |= result.test.metrics()
        self.writes.log_batch(self.run_id, metrics=metrics_batch(values))
        for name, value in tags.items():
            self.writes.set_tag(self.run_id, name, tag_value(value))

    def figures(self, figures: dict[str, Figure]) -> None:
        """Log each figure as a PNG artifact under ``plots/``."""
        for name, figure in figures.items():
            self.client.log_figure(self.run_id, figure, f"plots/{name}")

    def file(self, path: Path) -> None:
        """Log one local file at the artifact root."""
        self.client.log_artifact(self.run_id, str(path))

    def model(self, estimator: Any, images: np.ndarray) -> str:
        """Log the best estimator as this search run's MLflow model (see :func:`log_best_model`); return its URI."""
        uri = log_best_model(
            self.run.store.uri,
            self.run_id,
            estimator,
            images,
            self.run.spec.pip_requirements,
            self.run.spec.registered_model_name,
        )
        self.client.set_tag(self.run_id, MODEL_URI, uri)
        return uri
