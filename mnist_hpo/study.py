"""Coarse-to-fine studies: one coarse grid per hyperparameter, then a fine grid over the best.

Stage 1 runs one search per hyperparameter in ``study.coarse`` (all others at the base model)
on a stratified subset of the training images. A hyperparameter's influence is the spread of
its stage-1 mean CV scores (best minus worst value). Stage 2 crosses the best ``top_k`` values
of the ``top_m`` most influential hyperparameters on all training images, refits the best and
scores it on the test set. Everything nests under one MLflow study run: study -> stage -> search.
This module runs the stages; the oracle that ranks and picks is search/oracle.py, its table
report/tables.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from rich.console import Console

from mnist_hpo.configuration.schema import Config
from mnist_hpo.data.loading import stratified_subset
from mnist_hpo.report import plots
from mnist_hpo.report.tables import influence_table
from mnist_hpo.runner import run_search
from mnist_hpo.search.evaluation import SearchResult
from mnist_hpo.search.oracle import fine_grid, influence
from mnist_hpo.session import JobContext, Session
from mnist_hpo.tracking.group_run import GroupRun
from mnist_hpo.tracking.links import run_links
from mnist_hpo.tracking.runs import BEST_SEARCH, STAGE2_GRID


def stage_config(cfg: Config, grid: dict[str, list[Any]], *, refit: bool) -> Config:
    """``cfg`` with the search space replaced by ``grid`` and the study switched off."""
    return replace(
        cfg,
        grid=grid,
        search=replace(cfg.search, refit=refit),
        study=replace(cfg.study, enabled=False),
        tracking=replace(cfg.tracking, log_model=cfg.tracking.log_model and refit),
    )


def stage1_session(session: Session, size: int | None, seed: int) -> Session:
    """The session with training images cut to the stage-1 subset."""
    x, y = stratified_subset(session.data.x_train, session.data.y_train, size, seed, "study.stage1_train_size")
    return replace(session, data=replace(session.data, x_train=x, y_train=y))


def run_study(cfg: Config, job: JobContext, session: Session, console: Console) -> float:
    """Run both stages and return the stage-2 best mean CV score."""
    study = cfg.study
    params = {f"study.{key}": value for key, value in asdict(study).items()}
    with GroupRun(session.store, cfg.tracking.experiment, "study", "study", job.sweep_run_id, params) as study_run:
        coarse_session = stage1_session(session, study.stage1_train_size, cfg.seed)
        stage1: dict[str, SearchResult] = {}
        with GroupRun.child(study_run, "stage-1", "stage") as stage_run:
            for name, values in study.coarse.items():
                grid = {name: list(values)}
                outcome = run_search(
                    stage_config(cfg, grid, refit=False),
                    job,
                    coarse_session,
                    console,
                    parent_run_id=stage_run.run_id,
                    run_name=f"stage1-{name}",
                )
                stage1[name] = outcome.result
        ranking = influence(stage1)
        grid = fine_grid(ranking, study.top_m, study.top_k)
        console.print(influence_table(ranking))
        console.print(f"[bold]Stage 2 grid[/bold] (top {study.top_k} values of the top {study.top_m}): {grid}")
        study_run.log_table(ranking.drop(columns="ranked_values"), "influence.csv")
        study_run.log_text(json.dumps(grid, indent=2), "stage2_grid.json")
        study_run.log_figure(plots.influence_figure(ranking), "plots/influence.png")
        with GroupRun.child(study_run, "stage-2", "stage") as stage_run:
            stage_run.log_text(json.dumps(grid, indent=2), "stage2_grid.json")
            final = run_search(
                stage_config(cfg, grid, refit=cfg.search.refit),
                job,
                session,
                console,
                parent_run_id=stage_run.run_id,
                run_name="stage2",
            )
        metrics = {"best_cv_score": final.result.best_score}
        if final.result.test is not None:
            metrics |= final.result.test.metrics()
            console.print(f"[bold]Study result[/bold]: test accuracy {final.result.test.accuracy:.4f}")
        tags = {BEST_SEARCH: final.run_id or "", STAGE2_GRID: json.dumps(grid)}
        study_run.finish(metrics, tags)
    if session.store is not None and study_run.run_id is not None:
        links = run_links(session.store.client(), cfg.tracking, study_run.run_id)
        console.print(f"MLflow study run: {links.run}", soft_wrap=True, highlight=False)
    return final.result.best_score
