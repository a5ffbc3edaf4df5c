"""Coarse-to-fine studies: one coarse grid per hyperparameter, then a fine grid over the best.

Stage 1 runs one search per hyperparameter in ``study.coarse`` (all others at the base model)
on a stratified subset of the training images. A hyperparameter's influence is the spread of
its stage-1 mean CV scores (best minus worst value). Stage 2 crosses the best ``top_k`` values
of the ``top_m`` most influential hyperparameters on all training images, refits the best and
scores it on the test set. Everything nests under one MLflow study run: study -> stage -> search.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from mnist_hpo.configuration.schema import Config
from mnist_hpo.data.loading import stratified_subset
from mnist_hpo.report import plots
from mnist_hpo.runner import run_search
from mnist_hpo.search.evaluation import SearchResult
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


def influence(results: dict[str, SearchResult]) -> pd.DataFrame:
    """Rank hyperparameters by the spread of their stage-1 mean CV scores: detectable ones first, largest first.

    A spread is best minus worst value; its interval and verdict are the corrected paired t-test of
    the worst value against the best on the same folds (selection.py). A hyperparameter whose worst
    value is tied with its best has no detectable influence: it ranks after every detectable one, so
    stage 2 takes it only when ``study.top_m`` asks for more hyperparameters than are detectable.
    """
    rows = []
    for name, result in results.items():
        frame = result.candidates.dropna(subset=["mean_test_score"])
        ranked = frame.sort_values("mean_test_score", ascending=False, kind="stable")
        worst = ranked.iloc[-1] if len(ranked) else None
        values = ranked[name].tolist()  # plain Python values: they become the stage-2 grid and its JSON
        rows.append(
            {
                "hyperparameter": name,
                "influence": float(ranked["mean_test_score"].iloc[0] - worst["mean_test_score"])
                if len(ranked)
                else 0.0,
                "influence_low": float(worst["diff_low"]) if len(ranked) > 1 else float("nan"),
                "influence_high": float(worst["diff_high"]) if len(ranked) > 1 else float("nan"),
                "detectable": bool(len(ranked) > 1 and not worst["tied_with_best"]),
                "best_value": values[0] if values else None,
                "best_score": float(ranked["mean_test_score"].iloc[0]) if len(ranked) else float("nan"),
                "worst_score": float(worst["mean_test_score"]) if len(ranked) else float("nan"),
                "ranked_values": values,
            }
        )
    ranking = pd.DataFrame(rows)
    # One column holds every hyperparameter's best value: left as objects, 32 stays 32 beside 0.001.
    ranking["best_value"] = pd.Series([row["best_value"] for row in rows], dtype=object)
    return ranking.sort_values(["detectable", "influence"], ascending=False, kind="stable").reset_index(drop=True)


def fine_grid(ranking: pd.DataFrame, top_m: int, top_k: int) -> dict[str, list[Any]]:
    """The stage-2 grid: the best ``top_k`` values of the ``top_m`` most influential hyperparameters."""
    usable = ranking[ranking["ranked_values"].map(len) > 0]  # a hyperparameter whose every value failed has none
    return {row.hyperparameter: list(row.ranked_values[:top_k]) for row in usable.head(top_m).itertuples()}


def influence_table(ranking: pd.DataFrame) -> Table:
    """The influence ranking as a rich table, with each spread's interval and whether it is detectable."""
    table = Table(title="Hyperparameters by influence (stage-1 spread of mean CV score, best minus worst)")
    for column in ("rank", "hyperparameter", "influence [95% CI]", "detectable", "best value", "best", "worst"):
        table.add_column(column, justify="left" if column in ("hyperparameter", "best value") else "right")
    for rank, row in enumerate(ranking.itertuples(), start=1):
        table.add_row(
            str(rank),
            row.hyperparameter,
            f"{row.influence:.4f} [{row.influence_low:+.4f}, {row.influence_high:+.4f}]",
            "yes" if row.detectable else "no detectable influence",
            json.dumps(row.best_value),
            f"{row.best_score:.4f}",
            f"{row.worst_score:.4f}",
        )
    return table


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
