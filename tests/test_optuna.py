"""search.strategy=optuna: trials are candidates with their folds, fused by batch, and a killed study resumes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
from conftest import SMOKE_FOLDS, run_cli, run_cli_killed_after, store_uri
from mlflow_tree import runs_by_level

SPACE = [
    "experiment=smoke",
    "search.strategy=optuna",
    "grid=empty",
    "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.01}",
    "+grid.activation=[relu,tanh]",
    "model.epochs=1",
    "execution.progress=false",
    "hydra.run.dir=out",
]


def study_trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials of the one study under ``folder``'s store."""
    (path,) = (folder / "mlruns" / "optuna").glob("*.db")
    return optuna.load_study(study_name=path.stem, storage=f"sqlite:///{path}").trials


def test_optuna_trials_are_candidates_with_their_folds_and_a_batch_trains_in_one_fused_group(tmp_path):
    result = run_cli(*SPACE, "search.n_iter=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OptunaSearchCV" in result.stdout and "Candidates (ranked by mean CV score)" in result.stdout
    assert "fused training: 12 fit(s) in 2 group(s)" in result.stdout  # 6 trials x 2 folds, one batch
    trials = study_trials(tmp_path)
    assert [trial.state.name for trial in trials] == ["COMPLETE"] * 6
    frame = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    assert frame["trial"].tolist() == list(range(6))
    assert frame["mean_test_score"].tolist() == [trial.value for trial in trials]  # Optuna is told the CV mean
    assert frame["param_learning_rate"].between(0.0001, 0.01).all()
    assert set(frame["param_activation"]) <= {"relu", "tanh"}
    levels = runs_by_level(store_uri(tmp_path))
    candidates = levels["candidate"]
    assert sorted(run.data.tags["mnist_hpo.optuna_trial"] for run in candidates) == [str(n) for n in range(6)]
    folds = levels["fold"]
    assert len(folds) == 6 * SMOKE_FOLDS
    assert Counter(run.data.tags["mlflow.parentRunId"] for run in folds) == {run.info.run_id: 2 for run in candidates}
    # Each split's fold runs (one per trial of the batch) name one fused group.
    groups = Counter((run.data.tags["mnist_hpo.fold"], run.data.tags["mnist_hpo.fused_group"]) for run in folds)
    assert sorted(groups.values()) == [6] * SMOKE_FOLDS
    assert {run.info.status for runs in levels.values() for run in runs} == {"FINISHED"}


def test_a_killed_optuna_search_resumes_its_study_and_trains_no_finished_trial_again(tmp_path):
    args = [*SPACE, "search.n_iter=6", "search.trials_per_batch=2", "search.refit=false"]
    # Killed once trial 2 is told: trials 0-2 finished, trial 3 running with its fits stored.
    run_cli_killed_after(3, *args, cwd=tmp_path, target="optuna:Study.tell")
    before = study_trials(tmp_path)
    assert [trial.state.name for trial in before] == ["COMPLETE"] * 3 + ["RUNNING"]
    restart = run_cli(*args, cwd=tmp_path)
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert "fused training: 0 fit(s) in 0 group(s)" in restart.stdout  # the four trials it had: all stored
    assert "fused training: 4 fit(s) in 2 group(s)" in restart.stdout  # trials 4 and 5 only
    after = study_trials(tmp_path)
    assert [trial.state.name for trial in after] == ["COMPLETE"] * 6
    assert [trial.params for trial in after[:4]] == [trial.params for trial in before]
    assert [trial.value for trial in after[:3]] == [trial.value for trial in before[:3]]
    frame = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    assert frame["trial"].tolist() == list(range(6))
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.data.tags["mnist_hpo.reused_fits"] == str(4 * SMOKE_FOLDS)
    assert search.data.tags["mnist_hpo.trained_fits"] == str(2 * SMOKE_FOLDS)
    assert len(levels["candidate"]) == 6
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}
