"""The tracking writer process writes restored fits' fold runs whole, reports a lost store, and loses nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from mnist_hpo.configuration.schema import TrackingConfig
from mnist_hpo.tracking.datasets import DataOrigin, fold_input
from mnist_hpo.tracking.store import experiment_id, open_store
from mnist_hpo.tracking.store_loss import TrackingStoreLost
from mnist_hpo.tracking.writer import RunRecord, RunWriter


def a_record(experiment: str, name: str = "fold-0", status: str = "FINISHED") -> RunRecord:
    x, y = np.zeros((5, 28, 28, 1), np.float32), np.arange(5)
    dataset: DatasetInput = fold_input(DataOrigin("/data/mnist.npz", "f" * 16), name, x, y, "d" * 64)
    return RunRecord(
        experiment_id=experiment,
        name=name,
        tags={"mnist_hpo.level": "fold", "mnist_hpo.split": "0"},
        params={"fold": "0", "epochs": "2"},
        metrics=[("loss", 0.5, 1000, 0), ("loss", 0.25, 1000, 1), ("fit_time_s", 0.1, 1000, 0)],
        inputs=[{"dataset": dataset.dataset.to_dictionary(), "tags": {t.key: t.value for t in dataset.tags}}],
        status=status,
        start_time=1_000,
        end_time=2_000,
    )


@pytest.fixture
def store(tmp_path):
    store = open_store(TrackingConfig(), tmp_path)
    return store, experiment_id(store, "writer")


def test_a_handed_over_run_is_written_whole(store):
    store, experiment = store
    writer = RunWriter()
    writer.open(store.uri)
    assert store.uri not in " ".join(psutil.Process(writer.process.pid).cmdline())  # the URI goes over the pipe
    writer.submit(a_record(experiment))
    writer.submit(a_record(experiment, "fold-1", "FAILED"))
    writer.drain()
    writer.close()
    client = MlflowClient(store.uri)
    runs = {run.info.run_name: run for run in client.search_runs([experiment])}
    assert set(runs) == {"fold-0", "fold-1"}
    run = runs["fold-0"]
    assert (run.info.status, run.info.start_time, run.info.end_time) == ("FINISHED", 1_000, 2_000)
    assert runs["fold-1"].info.status == "FAILED"
    assert run.data.tags["mnist_hpo.level"] == "fold" and run.data.params == {"fold": "0", "epochs": "2"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(0, 0.5), (1, 0.25)]
    (dataset_input,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == ("train-fold-0", "d" * 16)
    assert InputTag(MLFLOW_DATASET_CONTEXT, "training").value in {tag.value for tag in dataset_input.tags}


def test_a_store_lost_under_the_writer_comes_back_as_a_lost_store(store):
    store, experiment = store
    writer = RunWriter()
    writer.open(store.uri)
    writer.submit(a_record(experiment))
    writer.drain()
    Path(store.uri.removeprefix("sqlite:///")).unlink()
    writer.submit(a_record(experiment, "fold-1"))
    with pytest.raises(TrackingStoreLost, match=r"readonly database|no such table|unable to open|disk I/O"):
        writer.drain()
    with pytest.raises(TrackingStoreLost):  # and the next hand-over stops the search at once
        writer.submit(a_record(experiment, "fold-2"))
    writer.close()


def test_the_writes_a_dead_writer_left_are_made_by_the_search_not_lost_and_not_waited_for(store, caplog):
    store, experiment = store
    writer = RunWriter()
    writer.open(store.uri)
    writer.submit(a_record(experiment))
    writer.drain()
    # Given a writer killed after one run, then handed two more
    writer.process.kill()
    writer.process.wait()
    writer.submit(a_record(experiment, "fold-1"))
    writer.submit(a_record(experiment, "fold-2"))
    started = time.monotonic()
    # When the search waits for it
    with caplog.at_level(logging.WARNING, logger="mnist_hpo.tracking.writer"):
        writer.drain()
    # Then it did not wait, said so once, and every run is written once, whole
    assert time.monotonic() - started < 5
    said = [record.getMessage() for record in caplog.records if "ended early" in record.getMessage()]
    assert len(said) == 1 and "the search makes its writes itself" in said[0]
    writer.close()
    runs = MlflowClient(store.uri).search_runs([experiment])
    assert sorted(run.info.run_name for run in runs) == ["fold-0", "fold-1", "fold-2"]
    assert {run.info.status for run in runs} == {"FINISHED"}


HAND_OVER_THEN_DIE = """
import os, signal, sys
from mnist_hpo.tracking.writer import RunWriter
sys.path.insert(0, sys.argv[3])
from test_writer import a_record
writer = RunWriter()
writer.open(sys.argv[1])
for number in range(20):
    writer.submit(a_record(sys.argv[2], f"fold-{number}"))
print(writer.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_runs_handed_over_by_a_search_killed_with_kill_9_are_all_written(store):
    store, experiment = store
    # Given a search that hands 20 runs to its writer and is killed at once (kill -9)
    killed = subprocess.run(
        [sys.executable, "-c", HAND_OVER_THEN_DIE, store.uri, experiment, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    writer = psutil.Process(int(killed.stdout))
    # Then its writer writes every run it was handed, then ends
    psutil.wait_procs([writer], timeout=60)
    assert not writer.is_running() or writer.status() == psutil.STATUS_ZOMBIE
    runs = MlflowClient(store.uri).search_runs([experiment])
    assert sorted(run.info.run_name for run in runs) == sorted(f"fold-{number}" for number in range(20))
    assert {run.info.status for run in runs} == {"FINISHED"}
