"""Resolves and checks the MLflow tracking store before anything trains."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mnist_hpo.config import ConfigError, TrackingConfig

# A remote store that does not answer must fail fast, before training, not after retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

import mlflow
from mlflow import MlflowClient


@dataclass(frozen=True)
class Store:
    """Where runs and artifacts go: a tracking URI and, for local stores, an artifact root."""

    uri: str
    artifact_root: str | None

    def client(self) -> MlflowClient:
        """A client bound to this store (never to MLflow's process-global URI)."""
        return MlflowClient(tracking_uri=self.uri)


def resolve_store(config: TrackingConfig, launch_dir: Path) -> Store:
    """The store ``tracking.uri`` names, or SQLite under ``<launch_dir>/<tracking.store_dir>``.

    Relative paths resolve against the directory the user launched from, never Hydra's
    per-job output folder.
    """
    if config.uri:
        return Store(uri=config.uri, artifact_root=None)
    folder = (launch_dir / config.store_dir).resolve()
    return Store(uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=(folder / "artifacts").as_uri())


def check_sqlite_file(uri: str) -> None:
    """Fail clearly when a local SQLite store exists but is not a database."""
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            connection.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise ConfigError(
            f"tracking.uri: the store {path} is corrupted ({error}); move it aside or set tracking.uri"
        ) from error


def open_store(config: TrackingConfig, launch_dir: Path) -> Store:
    """Resolve the store and prove it answers; raise ``ConfigError`` naming ``tracking.uri``."""
    store = resolve_store(config, launch_dir)
    if store.uri.startswith("sqlite:///"):
        check_sqlite_file(store.uri)
    try:
        store.client().search_experiments(max_results=1)
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"tracking.uri: cannot use the tracking store {store.uri} ({first_line[:200]}); "
            "start the server, fix the URI, or set tracking.enabled=false"
        ) from error
    return store


def experiment_id(store: Store, name: str) -> str:
    """The id of experiment ``name``, created (with the store's artifact root) if new."""
    client = store.client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        # The kind tag makes the UI open the experiment on its training runs, not GenAI traces.
        return client.create_experiment(
            name,
            artifact_location=store.artifact_root,
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except mlflow.exceptions.MlflowException:
        # Another job of the same sweep created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id
