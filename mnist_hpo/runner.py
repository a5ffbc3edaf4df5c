"""Runs one search from a composed config: config -> data -> estimator -> search -> tracking -> report."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import keras
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from sklearn.callback import ProgressBar

from mnist_hpo import plots
from mnist_hpo.data import MnistData, load_data
from mnist_hpo.estimator import build_estimator
from mnist_hpo.evaluation import SearchResult, summarize
from mnist_hpo.journal import FitJournal
from mnist_hpo.params import estimator_params
from mnist_hpo.report import output_console, result_view
from mnist_hpo.runtime import describe_device, seed_everything
from mnist_hpo.search import build_search
from mnist_hpo.space import build_space
from mnist_hpo.tracking.search_run import SearchRun, SearchRunSpec
from mnist_hpo.tracking.store import Store, open_store
from mnist_hpo.validation import validate_config
from mnist_hpo.workers import fit_workers

log = logging.getLogger(__name__)
PACKAGES = (
    "mnist-hpo",
    "keras",
    "tensorflow",
    "jax",
    "torch",
    "scikit-learn",
    "scikeras",
    "mlflow",
    "hydra-core",
)
# Settings that change how fast a search runs or where it logs, never what it finds.
RESUME_NEUTRAL = (
    "n_jobs",
    "progress",
    "backend",
    "worker_threads",
    "model_cache_mb",
    "worker_max_growth_mb",
    "gpu_memory_fraction",
    "ray",
    "resume",
    "journal_dir",
)


@dataclass(frozen=True)
class JobContext:
    """Where and how this job was launched, as Hydra reports it."""

    launch_dir: Path
    output_dir: Path
    job_name: str = "search"
    preset: str = "none"
    overrides: list[str] = field(default_factory=list)
    sweep_run_id: str | None = None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide results."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``, when it is a git work tree."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, flattened: model values under their routed estimator names."""
    container = OmegaConf.to_container(cfg, resolve=True)
    params = dict(estimator_params(OmegaConf.to_object(cfg.model)))
    stack = [(f"{group}.", value) for group, value in container.items() if group not in ("model", "grid")]
    while stack:
        prefix, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{prefix}{key}.", item) for key, item in value.items())
        else:
            params[prefix.rstrip(".")] = value
    params |= {f"grid.{key}": value for key, value in container["grid"].items()}
    return params


def resume_key(cfg: DictConfig, data: MnistData) -> str:
    """What identifies a search across restarts: its result-deciding config, data and backend."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("tracking")
    for name in RESUME_NEUTRAL:
        container["search"].pop(name)
    text = json.dumps(container, sort_keys=True, default=str) + data.fingerprint() + keras.backend.backend()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_journal(cfg: DictConfig, launch_dir: Path, key: str) -> FitJournal | None:
    """The journal of this search's finished fits (none when ``search.resume=false``)."""
    if not cfg.search.resume:
        return None
    root = Path(cfg.search.journal_dir or Path(cfg.tracking.store_dir) / "journal")
    return FitJournal((launch_dir / root).resolve() / key)


def run_tags(data: MnistData, job: JobContext, device: str, versions: dict[str, str]) -> dict[str, str]:
    """Tags that say what this run was: preset, overrides, code, data, versions, device."""
    tags = {
        "mnist_hpo.preset": job.preset,
        "mnist_hpo.overrides": " ".join(job.overrides) or "(none)",
        "mnist_hpo.output_dir": str(job.output_dir),
        "data.fingerprint": data.fingerprint(),
        "data.source": data.source,
        "data.train_size": str(len(data.y_train)),
        "data.test_size": str(len(data.y_test)),
        "keras.backend": keras.backend.backend(),
        "device": device,
        "python": platform.python_version(),
        **versions,
    }
    commit = git_commit(job.launch_dir)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def write_cv_results(search: Any, output_dir: Path) -> Path:
    """Write ``cv_results.csv`` into the job's output folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "cv_results.csv"
    pd.DataFrame(search.cv_results_).to_csv(path, index=False)
    return path


def result_figures(result: SearchResult, best_estimator: Any) -> dict[str, Any]:
    """Every plot the search run carries."""
    figures = {
        "scores_by_axis.png": plots.axis_scores_figure(result),
        "fit_time.png": plots.fit_time_figure(result),
    }
    figures |= plots.heatmap_figures(result)
    if best_estimator is not None:
        figures["learning_curves_best.png"] = plots.learning_curves_figure(best_estimator.history_)
    if result.test is not None:
        figures["confusion_matrix.png"] = plots.confusion_figure(result.test.confusion)
    return figures


@dataclass(frozen=True)
class Session:
    """What every search of one job shares: checked config, store, data, device, versions."""

    store: Store | None
    data: MnistData
    device: str
    versions: dict[str, str]


@dataclass(frozen=True)
class SearchOutcome:
    """One finished search: its results, its MLflow run and its ``cv_results.csv``."""

    result: SearchResult
    run_id: str | None
    csv_path: Path


def open_session(cfg: DictConfig, job: JobContext) -> Session:
    """Every check that can fail on bad input (config, tracking store, data files), then seeding.

    It runs before any MLflow run is created and before any training.
    """
    validate_config(cfg)
    store = open_store(cfg.tracking, job.launch_dir) if cfg.tracking.enabled else None
    data = load_data(cfg.data, cfg.seed)
    device = describe_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    return Session(store=store, data=data, device=device, versions=package_versions())


def run_search(
    cfg: DictConfig,
    job: JobContext,
    session: Session,
    console: Console,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> SearchOutcome:
    """Fit the search ``cfg`` describes on ``session.data``, record it, print its report."""
    data = session.data
    key = resume_key(cfg, data)
    journal = open_journal(cfg, job.launch_dir, key)
    search = build_search(
        cfg.search,
        build_estimator(
            OmegaConf.to_object(cfg.model),
            cfg.seed,
            journal=str(journal.folder) if journal is not None else None,
            model_cache_mb=cfg.search.model_cache_mb,
        ),
        build_space(cfg.grid, allow_distributions=cfg.search.strategy != "grid"),
        cfg.seed,
    )
    console.print(
        f"[bold]{type(search).__name__}[/bold] over {', '.join(cfg.grid)}: "
        f"{cfg.search.cv}-fold CV on {len(data.y_train)} training images "
        f"({data.source}), backend {keras.backend.backend()}, {session.device}"
    )
    callbacks = [ProgressBar(max_propagation_depth=0)] if cfg.search.progress else []
    spec = SearchRunSpec(
        experiment=cfg.tracking.experiment,
        run_name=run_name or job.job_name,
        params=flat_params(cfg),
        tags=run_tags(data, job, session.device, session.versions),
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        sweep_run_id=job.sweep_run_id,
        parent_run_id=parent_run_id,
        registered_model_name=cfg.tracking.registered_model_name,
        pip_requirements=[f"{name.removeprefix('version.')}=={v}" for name, v in session.versions.items()],
        resume_key=key,
        resume=cfg.search.resume,
    )
    tracker = SearchRun(session.store, spec) if session.store is not None else None
    with tracker or nullcontext():
        reused = journal.entries() if journal is not None else 0
        if tracker is not None and tracker.resumed:
            tracker.client.set_tag(tracker.run_id, "mnist_hpo.reused_fits", str(reused))
            console.print(f"Resuming search run {tracker.run_id} (it ended {tracker.resumed_from}).")
        if reused:
            console.print(f"Reusing {reused} finished fits from {journal.folder}; training only the rest.")
        if tracker is not None:
            callbacks.append(tracker.fold_logger(cfg.search.cv))
        search.set_callbacks(*callbacks)
        with fit_workers(cfg.search):
            search.fit(data.x_train, data.y_train)
        result = summarize(search, data.x_test, data.y_test)
        csv_path = write_cv_results(search, job.output_dir / (run_name or ""))
        if tracker is not None:
            best = getattr(search, "best_estimator_", None)
            tracker.record_candidates(result)
            tracker.record_result(result, {"mnist_hpo.best_params": str(result.best_params)})
            tracker.log_file(csv_path)
            tracker.log_figures(result_figures(result, best))
            if best is not None and cfg.tracking.log_model:
                tracker.log_model(best, data.x_test)
    if journal is not None:
        journal.clear()
    console.print(result_view(result))
    console.print(f"cv_results.csv: {csv_path}")
    if tracker is not None:
        console.print(
            f"MLflow: experiment {cfg.tracking.experiment!r}, search run {tracker.run_id} ({session.store.uri})"
        )
    return SearchOutcome(result=result, run_id=tracker.run_id if tracker is not None else None, csv_path=csv_path)


def run(cfg: DictConfig, job: JobContext, console: Console | None = None) -> float:
    """Run the search (or the staged study) ``cfg`` describes; return its best mean CV score."""
    console = console or output_console()
    session = open_session(cfg, job)
    if cfg.study.enabled:
        from mnist_hpo.study import run_study

        return run_study(cfg, job, session, console)
    return run_search(cfg, job, session, console).result.best_score
