"""The local SQLite store survives processes that open it for the first time at once, and a writer killed mid-write."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from mnist_hpo.configuration.schema import TrackingConfig
from mnist_hpo.tracking.store import experiment_id, open_store

OPENERS = 4


def open_fresh_store(launch_dir: str, opener: int) -> str:
    """Open the default store under ``launch_dir`` and create experiment ``opener-<opener>``."""
    store = open_store(TrackingConfig(), Path(launch_dir))
    return experiment_id(store, f"opener-{opener}")


def test_concurrent_first_opens_of_a_fresh_store_all_succeed(tmp_path):
    # MLflow migrates a fresh SQLite schema on first open; unserialised, these openers break
    # each other ("table _alembic_tmp_... already exists") and can leave the file unusable.
    with multiprocessing.get_context("spawn").Pool(OPENERS) as pool:
        ids = pool.starmap(open_fresh_store, [(str(tmp_path), opener) for opener in range(OPENERS)], chunksize=1)
    assert len(set(ids)) == OPENERS
    store = open_store(TrackingConfig(), tmp_path)
    names = {experiment.name for experiment in MlflowClient(store.uri).search_experiments()}
    assert {f"opener-{opener}" for opener in range(OPENERS)} <= names


# A writer SIGKILLed inside a transaction big enough to spill SQLite's one-page cache: the
# rollback journal it leaves is "hot", as after a kill -9 of a search in the middle of a write.
KILLED_MID_WRITE = """
import os, signal, sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
connection.execute("pragma cache_size=1")
connection.execute("begin")
connection.execute("create table half_written(x)")
connection.executemany("insert into half_written values (?)", [("x" * 100,)] * 2000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_store_whose_writer_was_killed_mid_write_opens_with_what_was_committed(tmp_path):
    # Given a store with an experiment, and a writer killed mid-transaction (its journal left hot)
    store = open_store(TrackingConfig(), tmp_path)
    kept = experiment_id(store, "kept")
    database = tmp_path / "mlruns" / "mlflow.db"
    subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(database)], check=False)
    assert database.with_name("mlflow.db-journal").stat().st_size > 0
    # When the next search opens it (its checks, then MLflow)
    reopened = open_store(TrackingConfig(), tmp_path)
    # Then SQLite has rolled the half-written transaction back and the committed experiment is there
    assert experiment_id(reopened, "kept") == kept
    assert not database.with_name("mlflow.db-journal").exists()
