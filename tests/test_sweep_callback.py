"""The Hydra callback that groups a multirun's searches under one sweep run, on a real SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import store_uri
from hydra.core.utils import JobReturn, JobStatus
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mnist_hpo.configuration.schema import SWEEP_RUN_ENV, TrackingConfig
from mnist_hpo.tracking.sweep import SweepRun

BEST_SEARCH = "mnist_hpo.best_search_run_id"


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch folder for the module: creating a SQLite store's schema takes seconds."""
    return tmp_path_factory.mktemp("launch")


@pytest.fixture
def launch_dir(shared_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The launch folder as the working directory, and no sweep id leaking in or out."""
    monkeypatch.chdir(shared_folder)
    monkeypatch.delenv(SWEEP_RUN_ENV, raising=False)  # also removes what the callback sets, at teardown
    return shared_folder


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    """An experiment of this test's own in the shared store."""
    return request.node.name


def multirun_config(experiment: str, uri: str | None = None) -> DictConfig:
    """What a multirun hands its callbacks: the typed tracking group (as composed) and the task overrides."""
    tracking = TrackingConfig(enabled=True, uri=uri, store_dir="mlruns", experiment=experiment, log_model=False)
    return OmegaConf.create({"tracking": OmegaConf.structured(tracking), "hydra": {"overrides": {"task": ["a=1"]}}})


def start_sweep(launch_dir: Path, experiment: str) -> tuple[DictConfig, SweepRun, MlflowClient]:
    """A multirun started on an explicit SQLite URI: its config, its callback and a client of its store."""
    uri = store_uri(launch_dir)
    config = multirun_config(experiment, uri)
    callback = SweepRun()
    callback.on_multirun_start(config)
    return config, callback, MlflowClient(uri)


def search_run(client: MlflowClient, experiment: str, sweep_run_id: str, score: float, status: str = "FINISHED") -> str:
    """A search run as a job of sweep ``sweep_run_id`` leaves it in ``experiment``; returns its id."""
    run = client.create_run(
        client.get_experiment_by_name(experiment).experiment_id,
        run_name="search",
        tags={"mnist_hpo.level": "search", "mnist_hpo.sweep_run_id": sweep_run_id},
    )
    client.log_metric(run.info.run_id, "best_cv_score", score)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_multirun_start_opens_a_running_sweep_run_in_the_launch_folder_store(launch_dir, experiment):
    # Given tracking with no URI, so the store goes under <launch folder>/mlruns
    callback = SweepRun()
    callback.on_multirun_start(multirun_config(experiment))
    # Then the sweep run is open there, tagged, and its id is published to the jobs
    client = MlflowClient(store_uri(launch_dir))
    sweep = client.get_run(os.environ[SWEEP_RUN_ENV])
    assert sweep.info.status == "RUNNING"
    assert sweep.info.run_id == callback.run_id
    assert client.get_experiment(sweep.info.experiment_id).name == experiment
    assert sweep.data.tags["mnist_hpo.level"] == "sweep"
    assert sweep.data.tags["mnist_hpo.sweep_run_id"] == sweep.info.run_id
    assert sweep.data.tags["mnist_hpo.overrides"] == "a=1"


def test_a_failed_job_fails_the_sweep_run(launch_dir, experiment):
    # Given a started multirun on an explicit SQLite URI
    config, callback, client = start_sweep(launch_dir, experiment)
    # When a job completes, the sweep run stays open
    callback.on_job_end(config, JobReturn(overrides=["a=1"], status=JobStatus.COMPLETED))
    assert client.get_run(callback.run_id).info.status == "RUNNING"
    # When a job fails, the sweep run is failed at once (Hydra ends the multirun without on_multirun_end)
    callback.on_job_end(config, JobReturn(overrides=["a=2"], status=JobStatus.FAILED))
    sweep = client.get_run(callback.run_id)
    assert sweep.info.status == "FAILED"
    assert sweep.info.end_time is not None


def test_a_callback_that_did_not_start_the_sweep_still_fails_it(launch_dir, experiment):
    # Given a sweep run started by another callback instance, known only through the environment
    config = multirun_config(experiment, store_uri(launch_dir))
    starter = SweepRun()
    starter.on_multirun_start(config)
    # When a fresh instance sees a failed job
    SweepRun().on_job_end(config, JobReturn(status=JobStatus.FAILED))
    # Then it finds the store from the config and fails the sweep run
    assert MlflowClient(store_uri(launch_dir)).get_run(starter.run_id).info.status == "FAILED"


def test_multirun_end_finishes_the_sweep_and_points_at_its_best_search(launch_dir, experiment):
    # Given a started sweep whose two jobs each left a finished search run
    config, callback, client = start_sweep(launch_dir, experiment)
    sweep_id = callback.run_id
    search_run(client, experiment, sweep_id, 0.81)
    best = search_run(client, experiment, sweep_id, 0.93)
    # And a better search of another sweep in the same experiment
    search_run(client, experiment, "another-sweep", 0.99)
    # When the multirun ends
    callback.on_multirun_end(config)
    # Then the sweep run is finished and names its own best search and score
    sweep = client.get_run(sweep_id)
    assert sweep.info.status == "FINISHED"
    assert sweep.data.tags[BEST_SEARCH] == best
    assert sweep.data.metrics["best_cv_score"] == pytest.approx(0.93)
    assert SWEEP_RUN_ENV not in os.environ


def test_multirun_end_fails_the_sweep_when_one_of_its_searches_failed(launch_dir, experiment):
    config, callback, client = start_sweep(launch_dir, experiment)
    best = search_run(client, experiment, callback.run_id, 0.9)
    search_run(client, experiment, callback.run_id, 0.5, status="FAILED")
    callback.on_multirun_end(config)
    sweep = client.get_run(callback.run_id)
    assert sweep.info.status == "FAILED"
    assert sweep.data.tags[BEST_SEARCH] == best


def test_a_sweep_failed_by_a_job_stays_failed_and_names_only_a_finished_best(launch_dir, experiment):
    # Given a sweep that a failed job already ended FAILED, and a sweeper that went on to the end
    config, callback, client = start_sweep(launch_dir, experiment)
    finished = search_run(client, experiment, callback.run_id, 0.8)
    search_run(client, experiment, callback.run_id, 0.95, status="FAILED")
    callback.on_job_end(config, JobReturn(overrides=["a=2"], status=JobStatus.FAILED))
    # When the multirun ends
    callback.on_multirun_end(config)
    # Then the sweep stays FAILED, and its best is the best search that finished, not the failed one
    sweep = client.get_run(callback.run_id)
    assert sweep.info.status == "FAILED"
    assert sweep.data.tags[BEST_SEARCH] == finished
    assert sweep.data.metrics["best_cv_score"] == pytest.approx(0.8)


def test_tracking_off_opens_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(SWEEP_RUN_ENV, raising=False)
    config = multirun_config("off")
    config.tracking.enabled = False
    callback = SweepRun()
    callback.on_multirun_start(config)
    callback.on_job_end(config, JobReturn(status=JobStatus.FAILED))
    callback.on_multirun_end(config)
    assert callback.run_id is None
    assert SWEEP_RUN_ENV not in os.environ
    assert not (tmp_path / "mlruns").exists()
