"""The product end to end through its command line: real training, real MLflow store."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from importlib.util import find_spec

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import SMOKE_CANDIDATES, SMOKE_EPOCHS, SMOKE_FOLDS, chatter_lines, store_uri
from mlflow import MlflowClient
from mlflow_tree import assert_complete_tree, parent_of, runs_by_level

from mnist_hpo.data.loading import read_embedded


def test_smoke_search_prints_ranked_table_and_writes_cv_results(smoke_run):
    folder, result = smoke_run
    assert "Candidates (ranked by mean CV score)" in result.stdout
    assert chatter_lines(result.stdout + result.stderr) == []  # the first lines are the tool's
    assert "test_accuracy" in result.stdout
    frame = pd.read_csv(folder / "outputs" / "smoke" / "cv_results.csv")
    assert len(frame) == SMOKE_CANDIDATES
    assert {"rank_test_score", "split0_test_score", "split1_test_score", "mean_fit_time"} <= set(frame.columns)


def test_smoke_search_builds_the_full_mlflow_tree(smoke_run):
    folder, _ = smoke_run
    assert_complete_tree(store_uri(folder), SMOKE_CANDIDATES, SMOKE_FOLDS, SMOKE_EPOCHS)


def test_best_estimator_is_a_loadable_model_that_predicts_digits(smoke_run):
    folder, _ = smoke_run
    (search,) = runs_by_level(store_uri(folder))["search"]
    mlflow.set_tracking_uri(store_uri(folder))
    model = mlflow.pyfunc.load_model(search.data.tags["mnist_hpo.model_uri"])
    images = (read_embedded()["x_test"][:16].astype(np.float32) / 255.0)[..., None]
    digits = np.asarray(model.predict(images))
    assert digits.shape == (16,) and set(digits.tolist()) <= set(range(10))
    artifacts = {item.path for item in MlflowClient(store_uri(folder)).list_artifacts(search.info.run_id, "plots")}
    assert {
        "plots/confusion_matrix.png",
        "plots/scores_by_axis.png",
        "plots/learning_curves_best.png",
    } <= artifacts


def test_search_run_records_config_data_and_environment(smoke_run):
    folder, _ = smoke_run
    (search,) = runs_by_level(store_uri(folder))["search"]
    assert search.data.params["activation"] == "relu"
    assert search.data.params["search.cv"] == str(SMOKE_FOLDS)
    tags = search.data.tags
    assert tags["mnist_hpo.preset"] == "smoke"
    assert tags["data.train_size"] == "600" and len(tags["data.fingerprint"]) == 16
    assert tags["keras.backend"] == "tensorflow" and "version.scikit-learn" in tags


@pytest.mark.slow
def test_parallel_fits_build_the_same_tree_and_register_the_model(cli, tmp_path):
    # Fusion off: the two workers train the fits (fused, they would only restore them).
    args = ["execution.n_jobs=2", "execution.fusion=false", "tracking.registered_model_name=mnist-cnn"]
    result = cli("experiment=smoke", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert chatter_lines(result.stdout + result.stderr) == []  # the workers' start-up went to the job's log
    assert_complete_tree(store_uri(tmp_path), SMOKE_CANDIDATES, SMOKE_FOLDS, SMOKE_EPOCHS)
    mlflow.set_tracking_uri(store_uri(tmp_path))
    images = (read_embedded()["x_test"][:4].astype(np.float32) / 255.0)[..., None]
    assert len(mlflow.pyfunc.load_model("models:/mnist-cnn/1").predict(images)) == 4


@pytest.mark.slow
def test_random_search_samples_distributions_and_builds_the_tree(cli, tmp_path):
    result = cli(
        "experiment=smoke", "search.strategy=random", "search.n_iter=3", "grid=empty",
        "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.01}",
        "+grid.activation=[relu,tanh]", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RandomizedSearchCV" in result.stdout
    assert_complete_tree(store_uri(tmp_path), 3, SMOKE_FOLDS, SMOKE_EPOCHS)


@pytest.mark.slow
def test_halving_search_records_the_iteration_each_candidate_reached(cli, tmp_path):
    result = cli("experiment=smoke", "search.strategy=halving", "search.factor=2", "grid=default", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    levels = runs_by_level(store_uri(tmp_path))
    assert len(levels["candidate"]) == 4
    reached = sorted(int(run.data.tags["mnist_hpo.iteration_reached"]) for run in levels["candidate"])
    assert reached == [0, 0, 1, 2]
    folds = Counter(parent_of(run) for run in levels["fold"])
    # 4 candidates at iteration 0, 2 at 1, 1 at 2: every evaluation has its fold runs.
    assert sum(folds.values()) == (4 + 2 + 1) * SMOKE_FOLDS
    assert {run.info.status for runs in levels.values() for run in runs} == {"FINISHED"}


@pytest.mark.slow
def test_four_parallel_multirun_jobs_share_one_store_and_lose_nothing(cli, tmp_path):
    """Hydra's joblib launcher runs 4 searches at once against one SQLite store; count what arrived."""
    units = [8, 9, 10, 11]
    result = cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "experiment=smoke",
        "model.epochs=1",
        "tracking.log_model=false",
        "execution.progress=false",
        f"model.dense_units={','.join(map(str, units))}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    uri = store_uri(tmp_path)
    levels = runs_by_level(uri)
    (sweep,) = levels["sweep"]
    searches = levels["search"]
    assert sorted(int(run.data.params["dense_units"]) for run in searches) == units
    assert {parent_of(run) for run in searches} == {sweep.info.run_id}
    assert {run.info.status for runs in levels.values() for run in runs} == {"FINISHED"}
    assert sweep.data.tags["mnist_hpo.best_search_run_id"] in {run.info.run_id for run in searches}
    # Every search logged the whole config, and its whole tree with every metric.
    assert len({frozenset(run.data.params) for run in searches}) == 1 and len(searches[0].data.params) > 40
    assert all({"best_cv_score", "test_accuracy"} <= set(run.data.metrics) for run in searches)
    client = MlflowClient(uri)
    for search in searches:
        children = [run for level in ("candidate", "fold", "refit") for run in levels[level]]
        mine = [run for run in children if run.data.tags["mnist_hpo.search_run_id"] == search.info.run_id]
        counts = Counter(run.data.tags["mnist_hpo.level"] for run in mine)
        assert counts == {"candidate": SMOKE_CANDIDATES, "fold": SMOKE_CANDIDATES * SMOKE_FOLDS, "refit": 1}
        for run in mine:
            if run.data.tags["mnist_hpo.level"] == "candidate":
                assert {"mean_test_score", "std_test_score", "rank_test_score"} <= set(run.data.metrics)
            if run.data.tags["mnist_hpo.level"] == "fold":
                assert "test_score" in run.data.metrics
                assert len(client.get_metric_history(run.info.run_id, "loss")) == 1


def test_unknown_activation_fails_at_once_naming_key_and_choices(cli, tmp_path):
    result = cli("model.activation=softplusx", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model.activation: unknown value 'softplusx'; valid: sigmoid, relu")
    assert runs_by_level(store_uri(tmp_path)).get("search") is None


MISSING_BACKENDS = [name for name in ("torch", "jax") if find_spec(name) is None]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backend=mxnet", "error: backend: unknown value 'mxnet'; valid: tensorflow, jax, torch"),
        ("device=tpu", "error: device: unknown value 'tpu'; valid: auto, cpu, gpu"),
        *[
            (f"backend={name}", f'error: backend: {name} is not installed in this environment (pip install "mnist-hpo[')
            for name in MISSING_BACKENDS[:1]
        ],
    ],
)
def test_backend_and_device_are_checked_before_keras_loads(cli, tmp_path, override, message):
    result = cli("experiment=smoke", override, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlruns").exists()


def nvidia_gpu_present() -> bool:
    """Whether ``nvidia-smi`` runs and lists a GPU on this machine."""
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(not nvidia_gpu_present(), reason="no NVIDIA GPU on this machine")
def test_smoke_search_trains_on_the_gpu_with_the_first_installed_backend(cli, tmp_path):
    backend = next(name for name in ("jax", "torch", "tensorflow") if find_spec(name) is not None)
    result = cli("experiment=smoke", f"backend={backend}", "device=gpu", "execution.progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gpu x" in result.stdout
    assert_complete_tree(store_uri(tmp_path), SMOKE_CANDIDATES, SMOKE_FOLDS, SMOKE_EPOCHS)
