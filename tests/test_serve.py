"""The logged model as a researcher uses it: served over HTTP and loaded in Python, digits or probabilities."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import packages_distributions, version
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import compose_config, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.data.loading import load_data
from mnist_hpo.environment.provenance import Provenance, package_versions
from mnist_hpo.tracking.model_log import PICKLE_NOTICE, pickle_notice_hidden
from mnist_hpo.tracking.records import SearchRecords
from mnist_hpo.tracking.search_run import SearchRun, SearchRunSpec
from mnist_hpo.tracking.store import Store

# The server imports TensorFlow and loads the model before /ping answers: ~40 s on 2 busy cores.
SERVER_START_S = 300


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON; the status and the decoded answer, errors included."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture(scope="module")
def model_uri(smoke_run) -> str:
    """The smoke search's logged model (``models:/m-...``, resolved through the tracking URI)."""
    folder, _ = smoke_run
    (search,) = runs_by_level(store_uri(folder))["search"]
    return search.data.tags["mnist_hpo.model_uri"]


def load_model(smoke_run, model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The smoke search's model, loaded in this process as the README shows."""
    mlflow.set_tracking_uri(store_uri(smoke_run[0]))
    return mlflow.pyfunc.load_model(model_uri)


@pytest.fixture(scope="module")
def server(smoke_run, model_uri, tmp_path_factory) -> Iterator[str]:
    """``mlflow models serve`` on the smoke search's model, in this environment; its base URL."""
    folder, _ = smoke_run
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # The scoring server is started as a bare ``uvicorn``: it must come from this environment.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env={**os.environ, "MLFLOW_TRACKING_URI": store_uri(folder), "PATH": path},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the CLI and its uvicorn end together
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert process.poll() is None, f"the server exited {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /ping in {SERVER_START_S} s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.slow
def test_the_served_model_answers_digits_and_on_request_probabilities(smoke_run, model_uri, server):
    # Given three test images of different digits that the model classifies correctly
    cfg = compose_config("experiment=smoke")
    data = load_data(cfg.data, cfg.seed)
    local = load_model(smoke_run, model_uri)
    predicted = np.asarray(local.predict(data.x_test[:100]))
    right = [int(i) for i in np.flatnonzero(predicted == data.y_test[:100])]
    picks = [right[[int(data.y_test[j]) for j in right].index(digit)] for digit in dict.fromkeys(data.y_test[right])]
    assert len(picks) >= 3, "the smoke model should get three different digits right"
    images, labels = data.x_test[picks[:3]], data.y_test[picks[:3]]

    # When they are posted as JSON, plainly and asking for probabilities
    status, digits = post(f"{server}/invocations", {"inputs": images.tolist()})
    status_p, probabilities = post(
        f"{server}/invocations", {"inputs": images.tolist(), "params": {"output": "probabilities"}}
    )

    # Then the server answers the true digits, and probabilities that agree with them and with Python
    assert status == 200 and digits["predictions"] == labels.tolist()
    served = np.asarray(probabilities["predictions"])
    assert status_p == 200 and served.shape == (3, 10)
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-5) and served.argmax(axis=1).tolist() == labels.tolist()
    in_python = local.predict(images, params={"output": "probabilities"})
    assert np.allclose(served, in_python, atol=1e-6)
    assert np.asarray(local.predict(images)).tolist() == labels.tolist()

    # And an unknown output is the client's error, naming what is allowed
    status_bad, error = post(f"{server}/invocations", {"inputs": images.tolist(), "params": {"output": "logits"}})
    assert status_bad == 400 and "valid: digits, probabilities" in error["message"]


class Records(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.mark.slow
def test_logging_the_model_drops_mlflows_pickle_notice_and_nothing_else(smoke_run, model_uri, tmp_path):
    # Given the smoke search's fitted estimator and a fresh store; MLflow's loggers do not reach the root
    estimator = load_model(smoke_run, model_uri).unwrap_python_model().estimator
    images = load_data(compose_config("experiment=smoke").data, 42).x_test[:5]
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    provenance = Provenance("smoke", [], tmp_path, "0" * 16, "embedded", 600, 200, "tensorflow", "cpu", {}, None)
    versions = [f"{name}=={version}" for name, version in package_versions().items()]
    spec = SearchRunSpec("log-model", "log-model", {}, provenance, "seed: 42\n", pip_requirements=versions)
    records = Records()
    logging.getLogger("mlflow").addHandler(records)
    try:
        # When the search run logs it, and another warning of the same logger comes while the filter is on
        with SearchRun(store, spec) as search:
            with pickle_notice_hidden():
                logging.getLogger("mlflow.sklearn").warning("another mlflow.sklearn warning")
            SearchRecords(search).model(estimator, images)
        during = records.messages()
        # And MLflow saves a cloudpickled model elsewhere, outside the filter
        plain = str(tmp_path / "plain")
        mlflow.sklearn.save_model(estimator, plain, serialization_format="cloudpickle", pip_requirements=versions)
    finally:
        logging.getLogger("mlflow").removeHandler(records)

    # Then only the notice was dropped, only while the model was logged: MLflow still says it, in these words
    assert "another mlflow.sklearn warning" in during
    assert not [message for message in during if PICKLE_NOTICE.match(message)]
    assert [message for message in records.messages()[len(during) :] if PICKLE_NOTICE.match(message)]


def test_the_model_requirements_pin_the_installed_distributions_and_no_unpublished_package(smoke_run, model_uri):
    mlflow.set_tracking_uri(store_uri(smoke_run[0]))
    pins = dict(
        line.split("==", 1) for line in Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    )
    assert "mnist-hpo" not in pins
    # TensorFlow under the distribution that installed it here (tensorflow, tensorflow-cpu, ...), as installed.
    (tensorflow,) = packages_distributions()["tensorflow"]
    assert pins[tensorflow] == version(tensorflow)
    assert pins["scikeras"] == version("scikeras") and pins["keras"] == version("keras")
