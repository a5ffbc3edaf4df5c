"""Every run names the data it saw as MLflow datasets: the project's digests, the data's source, the context."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import SMOKE_CANDIDATES, SMOKE_FOLDS, compose_config, store_uri
from mlflow import MlflowClient
from mlflow.entities import DatasetInput
from mlflow_tree import runs_by_level

from mnist_hpo.data.loading import MnistData, load_data
from mnist_hpo.execution.fit_keys import digest_arrays
from mnist_hpo.search.strategies import build_cv
from mnist_hpo.tracking.datasets import DataOrigin, fold_input, log_inputs


@pytest.fixture(scope="module")
def smoke_data() -> MnistData:
    """The data the smoke search trained and was tested on, loaded as the CLI loads it."""
    cfg = compose_config("experiment=smoke")
    return load_data(cfg.data, cfg.seed)


def context(dataset_input: DatasetInput) -> str:
    """The ``mlflow.data.context`` tag of a run's dataset input."""
    return {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"]


def test_the_search_run_records_its_training_and_test_data_under_the_fingerprint(smoke_run, smoke_data):
    folder, _ = smoke_run
    (search,) = runs_by_level(store_uri(folder))["search"]
    fingerprint = search.data.tags["data.fingerprint"]
    assert fingerprint == smoke_data.fingerprint()

    inputs = {item.dataset.name: item for item in search.inputs.dataset_inputs}

    assert set(inputs) == {"train", "test"}
    assert {name: context(item) for name, item in inputs.items()} == {"train": "training", "test": "test"}
    for name, images in (("train", smoke_data.x_train), ("test", smoke_data.x_test)):
        dataset = inputs[name].dataset
        assert dataset.digest == fingerprint
        assert json.loads(dataset.profile)["features_shape"] == list(images.shape)
        # The source is the file the embedded subset was read from; no array went into the store.
        assert dataset.source_type == "local" and Path(mlflow.data.get_source(dataset).uri).is_file()
    artifacts = mlflow.MlflowClient(store_uri(folder)).list_artifacts(search.info.run_id)
    assert not [item.path for item in artifacts if item.path.endswith((".npy", ".npz"))]


def test_each_fold_run_records_exactly_the_rows_it_trained_on(smoke_run, smoke_data):
    folder, _ = smoke_run
    cfg = compose_config("experiment=smoke")
    x, y = smoke_data.x_train, smoke_data.y_train
    # The data part of each fold's fit key: SHA-256 over the fold's training rows, as fit_keys digests them.
    expected = {
        str(fold): (digest_arrays(x[train], y[train], None)[:16], len(train))
        for fold, (train, _) in enumerate(build_cv(cfg.search, cfg.seed).split(x, y))
    }
    assert len({digest for digest, _ in expected.values()}) == SMOKE_FOLDS
    levels = runs_by_level(store_uri(folder))

    seen = set()
    for run in levels["fold"]:
        fold = run.data.tags["mnist_hpo.fold"]
        (item,) = run.inputs.dataset_inputs
        digest, rows = expected[fold]
        assert (item.dataset.name, item.dataset.digest, context(item)) == (f"train-fold-{fold}", digest, "training")
        assert json.loads(item.dataset.profile)["features_shape"][0] == rows
        seen.add(item.dataset.digest)

    assert len(levels["fold"]) == SMOKE_CANDIDATES * SMOKE_FOLDS and len(seen) == SMOKE_FOLDS
    (refit,) = levels["refit"]
    (item,) = refit.inputs.dataset_inputs
    assert (item.dataset.name, item.dataset.digest) == ("train", smoke_data.fingerprint())


def test_concurrent_writers_of_one_new_dataset_each_record_it(tmp_path):
    # Given four writers, as parallel fits of one fold are, each about to log the same new dataset to its own run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("race")
    origin = DataOrigin.of("embedded", "0" * 16)
    folds = [np.full((10, 28, 28, 1), fold / 10, dtype=np.float32) for fold in range(5)]
    labels = np.arange(10)
    writers = 4
    runs = [[client.create_run(experiment).info.run_id for _ in folds] for _ in range(writers)]
    start = threading.Barrier(writers)
    errors: list[Exception] = []

    def write(writer: int) -> None:
        for fold, images in enumerate(folds):
            item = fold_input(origin, f"fold-{fold}", images, labels)
            start.wait()
            try:
                log_inputs(MlflowClient(uri), runs[writer][fold], [item])
            except Exception as error:  # a thread's exception would otherwise vanish with it
                errors.append(error)

    # When they log at the same moment (MLflow inserts a missing dataset in a second step: they race)
    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then none fails, and every run names the one dataset of its fold
    assert errors == []
    for fold in range(len(folds)):
        recorded = {
            (item.dataset.name, item.dataset.digest)
            for run in runs
            for item in client.get_run(run[fold]).inputs.dataset_inputs
        }
        assert len(recorded) == 1 and recorded.pop()[0] == f"train-fold-{fold}"
