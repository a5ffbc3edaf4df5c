"""The fit store in real searches: grown grids, restored fits, corrupted entries, its budget, a killed study."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, run_cli, run_cli_killed_after, store_uri
from mlflow_tree import parent_of, runs_by_level
from sklearn.base import clone

from mnist_hpo.configuration.schema import DataConfig, ExecutionConfig, ModelConfig
from mnist_hpo.data.loading import load_data
from mnist_hpo.dispatch import run
from mnist_hpo.execution.estimator import build_estimator
from mnist_hpo.execution.fit_store import FitStore
from mnist_hpo.session import JobContext

QUICK = ("experiment=smoke", "execution.progress=false", "model.epochs=1", "tracking.log_model=false")
REUSED = "mnist_hpo.reused"


def search(folder: Path, *overrides: str) -> None:
    """One quick smoke search launched from ``folder``."""
    run(compose_config(*QUICK, *overrides), JobContext(launch_dir=folder, output_dir=folder / "out"))


def newest_search(folder: Path):
    """The most recent search run in ``folder``'s store, and its fold runs."""
    levels = runs_by_level(store_uri(folder))
    latest = max(levels["search"], key=lambda item: item.info.start_time)
    folds = [fold for fold in levels["fold"] if fold.data.tags["mnist_hpo.search_run_id"] == latest.info.run_id]
    return latest, folds


def test_a_restored_fit_predicts_exactly_what_its_training_predicted(tmp_path):
    data = load_data(DataConfig(train_size=300, test_size=100), seed=0)
    estimator = build_estimator(
        ModelConfig(epochs=2, activation="prelu"), ExecutionConfig(), seed=1, fit_store=tmp_path
    )
    trained = estimator.fit(data.x_train, data.y_train)
    restored = clone(estimator).fit(data.x_train, data.y_train)
    assert not trained.fit_reused_ and restored.fit_reused_
    assert restored.fit_key_ == trained.fit_key_
    np.testing.assert_array_equal(restored.predict_proba(data.x_test), trained.predict_proba(data.x_test))
    assert restored.history_ == {name: list(values) for name, values in trained.history_.items()}
    assert restored.fit_time_s_ == trained.fit_time_s_


@pytest.mark.slow
def test_a_grown_grid_trains_only_the_new_candidate_and_scores_like_a_fresh_search(tmp_path):
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    search(grown, "grid.activation=[relu,tanh]")
    search(grown, "grid.activation=[relu,tanh,elu]")
    search(fresh, "grid.activation=[relu,tanh,elu]")

    latest, folds = newest_search(grown)
    trained = Counter(fold.data.tags["mnist_hpo.candidate"] for fold in folds if REUSED not in fold.data.tags)
    assert trained == {'{"activation": "elu"}': 2}
    assert sum(REUSED in fold.data.tags for fold in folds) == 4
    for fold in folds:
        if REUSED in fold.data.tags:
            assert fold.data.tags["mnist_hpo.trained_by_run_id"] != latest.info.run_id
            assert "fit_time_s" in fold.data.metrics and "loss" in fold.data.metrics
    pd.testing.assert_frame_equal(
        pd.read_csv(grown / "out" / "cv_results.csv").filter(regex="params|split.*score|mean_test_score"),
        pd.read_csv(fresh / "out" / "cv_results.csv").filter(regex="params|split.*score|mean_test_score"),
    )


def test_a_corrupted_entry_is_warned_about_once_retrained_and_rewritten(tmp_path, caplog):
    search(tmp_path)
    first = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    entry = sorted((tmp_path / "mlruns" / "fits").glob("*/*.npz"))[0]
    entry.write_text("garbage garbage")

    with caplog.at_level(logging.WARNING, logger="mnist_hpo.execution.fit_store"):
        search(tmp_path)
    warnings = [record.getMessage() for record in caplog.records if str(entry) in record.getMessage()]
    assert len(warnings) == 1, caplog.text
    latest, _ = newest_search(tmp_path)
    assert latest.info.status == "FINISHED"
    assert (latest.data.tags["mnist_hpo.trained_fits"], latest.data.tags["mnist_hpo.reused_fits"]) == ("1", "4")
    pd.testing.assert_series_equal(
        pd.read_csv(tmp_path / "out" / "cv_results.csv")["mean_test_score"], first["mean_test_score"]
    )
    assert FitStore(entry.parent.parent).load(entry.stem) is not None  # retrained and written again


def test_a_search_whose_every_fit_is_stored_still_refits_and_logs_its_model(tmp_path):
    results = []
    for _ in range(2):
        search(tmp_path, "tracking.log_model=true")
        results.append(pd.read_csv(tmp_path / "out" / "cv_results.csv"))
    latest, folds = newest_search(tmp_path)
    assert (latest.data.tags["mnist_hpo.trained_fits"], latest.data.tags["mnist_hpo.reused_fits"]) == ("0", "5")
    assert "mnist_hpo.model_uri" in latest.data.tags and all(REUSED in fold.data.tags for fold in folds)
    # And each candidate's training time is the one recorded when it trained, not the restore's
    first, restored = results
    pd.testing.assert_series_equal(restored["mean_training_time"], first["mean_training_time"])
    assert not restored["mean_fit_time"].equals(first["mean_fit_time"])  # what scikit-learn measured: the restore


@pytest.mark.slow
def test_eviction_keeps_the_store_under_its_budget_across_searches(tmp_path):
    budget_mb = 2  # a fit of this model is ~0.8 MB: two fit, five do not
    store = FitStore(tmp_path / "mlruns" / "fits")
    for grid in ("[relu,tanh]", "[elu,gelu]", "[selu,swish]"):
        search(
            tmp_path,
            "model.dense_units=256",
            f"grid.activation={grid}",
            f"execution.fit_store_budget_mb={budget_mb}",
        )
        summary = store.summary()
        assert 0 < summary.bytes <= budget_mb * 2**20 and summary.fits >= 1


@pytest.mark.slow
def test_a_study_killed_in_stage_2_restarts_without_training_stage_1_again(tmp_path):
    # The per-fit path (fusion off): fits train one by one, so the kill lands 2 fits into stage 2.
    # A kill inside a fused group is tests/test_fused.py's.
    study = ("experiment=smoke", "study=smoke", "execution.progress=false", "model.epochs=1", "hydra.run.dir=out")
    study = (*study, "execution.fusion=false")
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    uninterrupted.mkdir()
    killed.mkdir()
    assert run_cli(*study, cwd=uninterrupted).returncode == 0
    # Stage 1: 3 one-hyperparameter searches x 2 values x 2 folds = 12 fits; die 2 fits into stage 2.
    run_cli_killed_after(14, *study, cwd=killed)
    result = run_cli(*study, cwd=killed)
    assert result.returncode == 0, result.stderr[-3000:]

    levels = runs_by_level(store_uri(killed))
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}
    restarted = max(levels["study"], key=lambda item: item.info.start_time)
    assert restarted.info.status == "FINISHED"
    stages = {run.info.run_name: run.info.run_id for run in levels["stage"] if parent_of(run) == restarted.info.run_id}
    stage1 = [run for run in levels["search"] if parent_of(run) == stages["stage-1"]]
    assert len(stage1) == 3
    assert {(run.data.tags["mnist_hpo.trained_fits"], run.data.tags["mnist_hpo.reused_fits"]) for run in stage1} == {
        ("0", "4")
    }
    (stage2,) = [run for run in levels["search"] if parent_of(run) == stages["stage-2"]]
    assert stage2.data.tags["mnist_hpo.reused_fits"] == "2"  # the two stage-2 fits made before the kill
    reference = runs_by_level(store_uri(uninterrupted))["study"][0]
    assert restarted.data.metrics["best_cv_score"] == reference.data.metrics["best_cv_score"]
    assert restarted.data.metrics["test_accuracy"] == reference.data.metrics["test_accuracy"]
    assert restarted.data.tags["mnist_hpo.stage2_grid"] == reference.data.tags["mnist_hpo.stage2_grid"]
