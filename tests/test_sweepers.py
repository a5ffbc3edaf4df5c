"""Hydra's Optuna sweeper drives searches; the best trial is identifiable in MLflow."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import store_uri
from mlflow_tree import parent_of, runs_by_level

pytestmark = pytest.mark.slow


def test_optuna_sweep_of_three_trials_points_at_its_best_trial(cli, tmp_path):
    result = cli(
        "-m",
        "hydra/sweeper=mnist_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweep.dir=multirun/optuna",
        "experiment=smoke",
        "model.epochs=2",
        "tracking.log_model=false",
        "execution.progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    optuna = yaml.safe_load((tmp_path / "multirun/optuna/optimization_results.yaml").read_text())

    levels = runs_by_level(store_uri(tmp_path))
    (sweep,) = levels["sweep"]
    trials = levels["search"]
    assert len(trials) == 3 and {parent_of(run) for run in trials} == {sweep.info.run_id}
    assert {run.info.status for runs in levels.values() for run in runs} == {"FINISHED"}
    # Each trial is a search that tried different values from the sweeper's space.
    assert len({run.data.params["optimizer__learning_rate"] for run in trials}) == 3

    best = max(trials, key=lambda run: run.data.metrics["best_cv_score"])
    assert sweep.data.tags["mnist_hpo.best_search_run_id"] == best.info.run_id
    assert math.isclose(sweep.data.metrics["best_cv_score"], optuna["best_value"])
    assert math.isclose(best.data.metrics["best_cv_score"], optuna["best_value"])
    chosen = optuna["best_params"]
    assert math.isclose(float(best.data.params["optimizer__learning_rate"]), chosen["model.learning_rate"])
    assert int(best.data.params["model__dense_units"]) == chosen["model.dense_units"]
