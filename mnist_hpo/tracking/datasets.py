"""The data each run trained or was tested on, as MLflow dataset inputs: metadata only, no array uploaded."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.numpy_dataset import from_numpy
from mlflow.data.sources import HTTPDatasetSource, LocalArtifactDatasetSource
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from mnist_hpo.execution.fit_keys import digest_arrays

TRAINING = "training"
TEST = "test"
TRAIN_NAME = "train"
TEST_NAME = "test"
# Where keras.datasets.mnist.load_data downloads from (keras/src/datasets/mnist.py).
KERAS_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# As long as MnistData.fingerprint; MLflow's SQL stores keep at most 36 characters of a digest.
DIGEST_LENGTH = 16
LOG_ATTEMPTS = 3


@dataclass(frozen=True)
class DataOrigin:
    """What every dataset of one search shares: where its data came from and the data's fingerprint.

    Plain strings, so the fold logger carries it to any worker (MLflow's local source class cannot
    be pickled); ``uri`` is absolute, so a worker elsewhere names the same place.
    """

    uri: str
    fingerprint: str

    @classmethod
    def of(cls, source: str, fingerprint: str) -> DataOrigin:
        """The origin of data loaded from ``source`` (``MnistData.source``: embedded, keras or a path)."""
        if source == "keras":
            uri = KERAS_MNIST_URL
        elif source == "embedded":
            uri = str(resources.files("mnist_hpo") / "assets" / "mnist_subset.npz")
        else:  # a path, relative to the folder the search was launched from
            uri = str(Path(source).expanduser().resolve())
        return cls(uri=uri, fingerprint=fingerprint)

    def source(self) -> DatasetSource:
        """MLflow's source object for ``uri``: a web address or a local file or folder."""
        return HTTPDatasetSource(self.uri) if self.uri.startswith("https://") else LocalArtifactDatasetSource(self.uri)


def rows_digest(x: np.ndarray, y: np.ndarray) -> str:
    """The digest of exactly these rows: the data part of their fit key (``fit_keys.digest_arrays``), shortened."""
    return digest_arrays(x, y, None)[:DIGEST_LENGTH]


def dataset_input(
    origin: DataOrigin, name: str, digest: str, x: np.ndarray, y: np.ndarray, context: str
) -> DatasetInput:
    """One dataset input of a run: name, digest, source, shapes and dtypes of ``x``/``y``, and its context.

    ``from_numpy`` only reads the arrays' dtype and shape for the schema and profile; the digest is
    given, so MLflow hashes nothing.
    """
    dataset = from_numpy(x, source=origin.source(), targets=y, name=name, digest=digest)
    return DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def search_inputs(
    origin: DataOrigin, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> list[DatasetInput]:
    """A search run's training and test datasets, both under the data's fingerprint.

    The fingerprint hashes all four arrays, so the names tell the two apart: MLflow keeps one
    dataset per (name, digest).
    """
    return [
        training_input(origin, x_train, y_train),
        dataset_input(origin, TEST_NAME, origin.fingerprint, x_test, y_test, TEST),
    ]


def training_input(origin: DataOrigin, x: np.ndarray, y: np.ndarray) -> DatasetInput:
    """The search's whole training set, under the data's fingerprint: the search run's and the refit's."""
    return dataset_input(origin, TRAIN_NAME, origin.fingerprint, x, y, TRAINING)


def fold_input(
    origin: DataOrigin, run_name: str, x: np.ndarray, y: np.ndarray, digest: str | None = None
) -> DatasetInput:
    """A fold run's training dataset: the rows it fit on, digested (``train-fold-0`` ...).

    ``digest``: ``digest_arrays(x, y, None)`` when the caller has it (the fit computed it), else computed here.
    """
    short = digest[:DIGEST_LENGTH] if digest is not None else rows_digest(x, y)
    return dataset_input(origin, f"{TRAIN_NAME}-{run_name}", short, x, y, TRAINING)


def log_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """Log dataset inputs to a run, again when another process added the same new dataset first.

    MLflow looks a dataset up by (name, digest) and inserts it when missing, in two steps: fits of
    one fold in parallel workers, or parallel jobs on the same data, race, and the loser's insert
    fails (measured: 6 of 20 logs by 4 concurrent writers). On the next try the dataset exists and
    is reused; any other error still ends the search, after the last try.
    """
    for attempt in range(1, LOG_ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException:
            if attempt == LOG_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)
