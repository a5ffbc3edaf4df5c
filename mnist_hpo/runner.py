"""Runs one search in an opened session: estimator -> search -> fit -> results -> tracking -> report."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras
import pandas as pd
from rich.console import Console
from sklearn.callback import ProgressBar

from mnist_hpo.configuration.schema import Config, config_yaml
from mnist_hpo.data.loading import MnistData
from mnist_hpo.environment.provenance import Provenance, git_commit, model_requirements
from mnist_hpo.execution.ahead import TrainingAhead
from mnist_hpo.execution.candidate_costs import parameter_counts, training_times
from mnist_hpo.execution.estimator import MnistCNNClassifier, build_estimator
from mnist_hpo.execution.executors import temporary_fit_store, train_ahead
from mnist_hpo.execution.fit_keys import numerics_versions
from mnist_hpo.execution.fused import FusedReport
from mnist_hpo.execution.outputs import OUTPUTS
from mnist_hpo.execution.workers import fit_workers
from mnist_hpo.report import plots
from mnist_hpo.report.tables import places_view, result_view
from mnist_hpo.search.bayesian import StudyStorage
from mnist_hpo.search.evaluation import SearchResult, summarize
from mnist_hpo.search.selection import CHOOSING_RULES, COMPARISON_COLUMNS, FoldSizes, RefitRule, rule_name
from mnist_hpo.search.space import build_space
from mnist_hpo.search.strategies import build_cv, build_search
from mnist_hpo.session import JobContext, Session
from mnist_hpo.tracking.identity import resume_key
from mnist_hpo.tracking.limits import config_params
from mnist_hpo.tracking.links import run_links
from mnist_hpo.tracking.search_run import SearchRunSpec, open_search_run


@dataclass(frozen=True)
class SearchOutcome:
    """One finished search: its results, its MLflow run (None when untracked) and its ``cv_results.csv``."""

    result: SearchResult
    run_id: str | None
    csv_path: Path


def write_cv_results(search: Any, result: SearchResult, output_dir: Path) -> Path:
    """Write ``cv_results.csv``: scikit-learn's columns, then each candidate's training time and comparison."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "cv_results.csv"
    comparisons = result.candidates[["mean_training_time", *COMPARISON_COLUMNS]].reset_index(drop=True)
    pd.concat([pd.DataFrame(search.cv_results_), comparisons], axis=1).to_csv(path, index=False)
    return path


def batch_line(console: Console) -> Callable[[FusedReport], None]:
    """Prints what fused training did for one Optuna batch."""
    return lambda report: console.print(report.line())


def refit_choice(
    rule: str | None, cfg: Config, estimator: MnistCNNClassifier, data: MnistData, sizes: FoldSizes
) -> bool | RefitRule:
    """What the search refits: scikit-learn's own best (True), nothing (False), or a rule's choice."""
    if rule not in CHOOSING_RULES:
        return rule is not None
    return RefitRule(
        rule,
        sizes,
        cfg.search.alpha,
        parameter_counts=partial(parameter_counts, estimator, y=data.y_train, X=data.x_train),
        training_times=partial(training_times, estimator, data.x_train, data.y_train, build_cv(cfg.search, cfg.seed)),
    )


def run_search(
    cfg: Config,
    job: JobContext,
    session: Session,
    console: Console,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> SearchOutcome:
    """Fit the search ``cfg`` describes on ``session.data``, record it, print its report.

    Fused training hands its fits to the search through a fit store: with the store off, a temporary
    one serves this search alone.
    """
    fingerprint = session.data.fingerprint()  # hashes every image: once per search
    backend = keras.backend.backend()
    key = resume_key(cfg, fingerprint, backend, numerics_versions(backend))
    args = (cfg, job, session, console, parent_run_id, run_name, key, fingerprint)
    if session.fit_store is not None or not cfg.execution.fusion:
        return fitted_search(*args, session.fit_store)
    with temporary_fit_store() as folder:
        return fitted_search(*args, folder)


def fitted_search(
    cfg: Config,
    job: JobContext,
    session: Session,
    console: Console,
    parent_run_id: str | None,
    run_name: str | None,
    key: str,
    fingerprint: str,
    fit_store: Path | None,
) -> SearchOutcome:
    """:func:`run_search` with its fit store folder chosen (a temporary one when fusion runs without a store)."""
    data = session.data
    backend = keras.backend.backend()
    estimator = build_estimator(cfg.model, cfg.execution, cfg.seed, fit_store=fit_store, search_token=uuid.uuid4().hex)
    optuna = cfg.search.strategy == "optuna"
    space = dict(cfg.grid) if optuna else build_space(cfg.grid, allow_distributions=cfg.search.strategy != "grid")
    store_dir = (job.launch_dir / cfg.tracking.store_dir).resolve()
    storage = StudyStorage.beside(store_dir, key, fresh=not cfg.execution.resume) if optuna else None
    sizes = FoldSizes.of(len(data.y_train), cfg.search.cv)
    rule = rule_name(cfg.search.refit)
    refit = refit_choice(rule, cfg, estimator, data, sizes)
    n_jobs = cfg.execution.n_jobs
    search = build_search(cfg.search, estimator, space, cfg.seed, n_jobs=n_jobs, refit=refit, storage=storage)
    console.print(
        f"[bold]{type(search).__name__}[/bold] over {', '.join(cfg.grid)}: "
        f"{cfg.search.cv}-fold CV on {len(data.y_train)} training images "
        f"({data.source}), backend {backend}, {session.device}"
    )
    if storage is not None:
        console.print(
            f"Optuna study {storage.name} ({cfg.search.sampler}, {cfg.search.n_iter} trials, "
            f"{search.trials_per_batch} a batch): "
            f"optuna-dashboard {storage.url}",
            soft_wrap=True,
        )
    provenance = Provenance(
        preset=job.preset,
        overrides=job.overrides,
        output_dir=job.output_dir,
        data_fingerprint=fingerprint,
        data_source=data.source,
        train_size=len(data.y_train),
        test_size=len(data.y_test),
        keras_backend=backend,
        device=session.device,
        versions=session.versions,
        git_commit=git_commit(job.launch_dir),
    )
    spec = SearchRunSpec(
        experiment=cfg.tracking.experiment,
        run_name=run_name or job.job_name,
        params=config_params(cfg),
        provenance=provenance,
        config_yaml=config_yaml(cfg),
        sweep_run_id=job.sweep_run_id,
        parent_run_id=parent_run_id,
        registered_model_name=cfg.tracking.registered_model_name,
        pip_requirements=model_requirements(session.versions),
        resume_key=key,
        resume=cfg.execution.resume,
    )
    with open_search_run(session.store, spec, session.writer) as tracked:
        tracked.log_datasets(data)
        if tracked.resumed:
            console.print(f"Resuming search run {tracked.run_id} (it ended {tracked.resumed_from}).")
        if session.fit_store is not None:
            console.print(f"Finished fits come from, and go to, the fit store {session.fit_store}.")
        progress = [ProgressBar(max_propagation_depth=0)] if cfg.execution.progress else []
        search.set_callbacks(*progress, *tracked.callbacks(cfg.search.cv, cfg.search.cv_repeats))
        ahead = None
        if fit_store is not None:  # an Optuna search trains each batch ahead when it asks: one line each
            ahead = train_ahead(search, data.x_train, data.y_train, cfg.execution, fit_store, batch_line(console))
        if isinstance(ahead, FusedReport):
            console.print(ahead.line())
        elif isinstance(ahead, str) and cfg.execution.fusion:
            console.print(f"fused training does not apply: {ahead}; each fit trains alone")
        if isinstance(ahead, TrainingAhead) or (isinstance(ahead, FusedReport) and ahead.complete):
            search.set_params(n_jobs=1)  # every fit a restore: here, not in worker processes to start
        try:
            with fit_workers(cfg.execution):
                search.fit(data.x_train, data.y_train)
        finally:
            if isinstance(ahead, TrainingAhead):  # training had ended unless the search failed: then it stops
                ahead.cancel()
            OUTPUTS.clear()  # outputs no fit took (fits scored in workers): not kept past the search
        if isinstance(ahead, TrainingAhead):
            console.print(ahead.finish().line())
        cv = build_cv(cfg.search, cfg.seed)
        trained_in = training_times(estimator, data.x_train, data.y_train, cv, search.cv_results_)
        result = summarize(search, data.x_test, data.y_test, sizes, cfg.search.alpha, cfg.search.rope, rule, trained_in)
        csv_path = write_cv_results(search, result, job.output_dir / (run_name or ""))
        best = getattr(search, "best_estimator_", None)
        draw = partial(plots.search_figures, result, best.history_ if best is not None else None)
        tracked.record(result, csv_path, draw, best if cfg.tracking.log_model else None, data.x_test)
    console.print(result_view(result))
    console.print(tracked.summary_line())
    links = run_links(session.store.client(), cfg.tracking, tracked.run_id) if tracked.run_id else None
    console.print(places_view(job.output_dir, csv_path, links), soft_wrap=True)  # links stay whole, clickable
    return SearchOutcome(result=result, run_id=tracked.run_id, csv_path=csv_path)
