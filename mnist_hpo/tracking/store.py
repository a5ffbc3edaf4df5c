"""Resolves and checks the MLflow tracking store before anything trains."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from mnist_hpo.configuration.schema import ConfigError, TrackingConfig
from mnist_hpo.environment.folders import probe_writable
from mnist_hpo.tracking.layout import ARTIFACTS, DATABASE, SQLITE_PREFIX
from mnist_hpo.tracking.redaction import redact

# A remote store that does not answer must fail fast, before training, not after retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow prints "View run ... at <tracking URI>" for every run it ends over HTTP: one line per fold
# run, and the URI as given, password included. The search prints its own, redacted, summary.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow
from mlflow import MlflowClient

# Long enough for another process to finish MLflow's schema migrations on a slow disk.
INIT_LOCK_TIMEOUT_S = 300


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
    return Store(uri=f"{SQLITE_PREFIX}{folder / DATABASE}", artifact_root=(folder / ARTIFACTS).as_uri())


def check_sqlite_file(path: Path) -> None:
    """Fail clearly when a local SQLite store exists but is not a database.

    Opened read-write (``mode=rw``: never created here): a process killed mid-write leaves a hot
    rollback journal, which SQLite rolls back on the first read of a writable connection, as
    MLflow's own would. A read-only connection cannot, and reports a sound store as "attempt to
    write a readonly database". The folder was proved writable first.
    """
    if not path.exists():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=rw", uri=True) as connection:
            connection.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise ConfigError(
            f"tracking.uri: the store {path} is corrupted ({error}); move it aside or set tracking.uri"
        ) from error


def prove_answers(uri: str) -> None:
    """One cheap query; raise ``ConfigError`` naming ``tracking.uri`` when the store fails it."""
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"tracking.uri: cannot use the tracking store {redact(uri)} ({redact(first_line[:200])}); "
            "start the server, fix the URI, or set tracking.enabled=false"
        ) from error


def prove_writable(folder: Path) -> None:
    """Create the store's folder and a file in it (as the lock will), or fail at once naming ``tracking.uri``.

    Without this a folder where no lock file can be made (``/proc``, read-only) waited out the lock's
    timeout and then blamed another process.
    """
    try:
        probe_writable(folder)
    except OSError as error:
        raise ConfigError(
            f"tracking.uri: cannot write the store's folder {folder} ({error.strerror or error}); "
            "choose a writable folder (tracking.store_dir or tracking.uri)"
        ) from error


def initialize_sqlite(uri: str) -> None:
    """Create or upgrade a local SQLite store's schema, one process at a time.

    MLflow builds the schema with a chain of Alembic migrations on first open. Two processes
    doing that at once on a fresh file (two terminals, parallel jobs) break each other
    and can leave the file half-migrated for good, so the first open holds a file lock
    beside the database. Later opens find the tables and migrate nothing.
    """
    path = Path(uri.removeprefix(SQLITE_PREFIX))
    prove_writable(path.parent)
    try:
        with FileLock(f"{path}.lock", timeout=INIT_LOCK_TIMEOUT_S):
            check_sqlite_file(path)
            prove_answers(uri)
    except Timeout as error:
        raise ConfigError(
            f"tracking.uri: another process has held {path}.lock for {INIT_LOCK_TIMEOUT_S} s; "
            "if none is running, delete the lock file"
        ) from error


def open_store(config: TrackingConfig, launch_dir: Path) -> Store:
    """Resolve the store and prove it answers; raise ``ConfigError`` naming ``tracking.uri``."""
    store = resolve_store(config, launch_dir)
    if store.uri.startswith(SQLITE_PREFIX):
        initialize_sqlite(store.uri)
    else:
        prove_answers(store.uri)
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
