"""The local SQLite store survives processes that open it for the first time at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mlflow import MlflowClient

from mnist_hpo.config import TrackingConfig
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
