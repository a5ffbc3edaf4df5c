"""Failures inside a search, runs never left RUNNING, flat memory, reproducible scores."""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.config import DataConfig, ModelConfig
from mnist_hpo.data import load_data
from mnist_hpo.estimator import TrainingDivergedError, build_estimator
from mnist_hpo.runner import JobContext, run

DIVERGING_GRID = ["model.optimizer=sgd", "grid=empty", "+grid.optimizer__learning_rate=[0.01,1e9]"]


def job(folder: Path) -> JobContext:
    """A job launched from ``folder``."""
    return JobContext(launch_dir=folder, output_dir=folder / "out")


def test_diverging_candidate_scores_nan_and_the_search_goes_on(tmp_path):
    cfg = compose_config("experiment=smoke", "search.progress=false", *DIVERGING_GRID)
    best = run(cfg, job(tmp_path))
    assert best > 0.1
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.info.status == "FINISHED"
    failed = [run for run in levels["candidate"] if run.data.tags.get("mnist_hpo.failed") == "true"]
    assert len(failed) == 1 and "1000000000" in failed[0].data.tags["mnist_hpo.candidate"]
    assert "TrainingDivergedError" in failed[0].data.tags["mnist_hpo.error"]
    assert failed[0].info.status == "FAILED"
    fold_status = Counter(run.info.status for run in levels["fold"])
    assert fold_status == {"FAILED": 2, "FINISHED": 2}


def test_error_score_raise_stops_and_leaves_nothing_running(tmp_path):
    cfg = compose_config("experiment=smoke", "search.progress=false", "search.error_score=raise", *DIVERGING_GRID)
    with pytest.raises(TrainingDivergedError):
        run(cfg, job(tmp_path))
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.info.status == "FAILED" and "TrainingDivergedError" in search.data.tags["mnist_hpo.error"]
    statuses = {run.info.status for runs in levels.values() for run in runs}
    assert "RUNNING" not in statuses


def test_same_seed_gives_identical_cv_scores(tmp_path):
    scores = []
    for attempt in range(2):
        cfg = compose_config(
            "experiment=smoke", "search.progress=false", "tracking.enabled=false", "deterministic=true"
        )
        scores.append(run(cfg, job(tmp_path / str(attempt))))
    assert scores[0] == scores[1]


def resident_mb() -> float:
    """This process' resident memory in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this platform")


@pytest.mark.xfail(
    strict=True,
    reason="measured: TF 2.21 keeps ~6 MB per fit even after clear_session(free_memory=True), bare Keras "
    "too; flat memory needs recycled worker processes, not built yet (issue 4)",
)
def test_memory_stays_flat_over_many_sequential_fits():
    data = load_data(DataConfig(train_size=200, test_size=50), seed=0)
    estimator = build_estimator(ModelConfig(conv_filters=[4], dense_units=8, epochs=1), seed=0)
    readings = []
    for _ in range(24):
        estimator.fit(data.x_train, data.y_train)
        gc.collect()
        readings.append(resident_mb())
    warm, last = np.median(readings[4:8]), np.median(readings[-4:])
    # Without clear_session every fit leaves a model graph behind; with it growth stays small.
    assert last - warm < 100, readings
