"""Credentials in the tracking URI never reach a run, a tag, a recorded file or the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow import MlflowClient
from mlflow_tree import runs_by_level
from test_ui import free_port, wait_for

from mnist_hpo.configuration.schema import TrackingConfig
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.store import open_store

SECRET = "s3cr3t-pa55"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"http://alice:{SECRET}@host:5000", "http://alice:***@host:5000"),
        (
            f"tracking.uri=https://bob:{SECRET}@mlflow.example.org/x",
            "tracking.uri=https://bob:***@mlflow.example.org/x",
        ),
        (f"http://host/api?token={SECRET}&run=1", "http://host/api?token=***&run=1"),
        ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
        ("http://user@host:5000", "http://user@host:5000"),
    ],
)
def test_redact_hides_passwords_and_secret_query_values_only(text, hidden):
    assert redact(text) == hidden


@pytest.mark.slow
def test_a_search_over_http_with_credentials_records_and_prints_none_of_them(tmp_path):
    # Given a real MLflow tracking server (the project's UI command) on a local port
    server_dir = tmp_path / "server"
    open_store(TrackingConfig(), server_dir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo.ui", "--port", str(port)],
        cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
        # When a search logs there through a URI that carries a password
        launch = tmp_path / "launch"
        launch.mkdir()
        result = run_cli(
            "experiment=smoke", f"tracking.uri={uri}", "model.epochs=1", "execution.progress=false", cwd=launch
        )
        assert result.returncode == 0, result.stderr[-3000:]
        # Then the password is nowhere: not printed, not in any param, tag or the recorded config
        assert SECRET not in result.stdout + result.stderr
        assert "alice:***@" in result.stdout
        levels = runs_by_level(f"http://127.0.0.1:{port}")
        client = MlflowClient(f"http://127.0.0.1:{port}")
        (search,) = levels["search"]
        for run in (run for runs in levels.values() for run in runs):
            assert SECRET not in str(run.data.params) + str(run.data.tags)
        assert search.data.params["tracking.uri"] == f"http://alice:***@127.0.0.1:{port}"
        config = Path(client.download_artifacts(search.info.run_id, "config.yaml", str(tmp_path))).read_text()
        assert SECRET not in config and "alice:***@" in config
    finally:
        server.terminate()
        server.wait(timeout=30)
