"""A coarse-to-fine study on smoke settings: stage-1 grids, the influence ranking, stage 2, test score."""

from __future__ import annotations

import json
from collections import Counter
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_FOLDS, store_uri
from mlflow import MlflowClient
from mlflow_tree import parent_of, runs_by_level

pytestmark = pytest.mark.slow


def artifact_text(client: MlflowClient, run_id: str, path: str, folder: Path) -> str:
    """One text artifact of a run."""
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


def test_staged_study_runs_both_stages_under_one_study_run(cli, tmp_path):
    result = cli("experiment=smoke", "study=smoke", "execution.progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Hyperparameters by influence" in result.stdout and "Stage 2 grid" in result.stdout
    assert "Study result: test accuracy" in result.stdout

    uri = store_uri(tmp_path)
    client = MlflowClient(uri)
    levels = runs_by_level(uri)
    (study,) = levels["study"]
    assert study.info.status == "FINISHED"
    assert {"best_cv_score", "test_accuracy"} <= set(study.data.metrics)
    stages = {run.info.run_name: run for run in levels["stage"]}
    assert set(stages) == {"stage-1", "stage-2"} and {parent_of(run) for run in stages.values()} == {study.info.run_id}

    searches = Counter(parent_of(run) for run in levels["search"])
    assert searches == {stages["stage-1"].info.run_id: 3, stages["stage-2"].info.run_id: 1}
    stage1 = [run for run in levels["search"] if parent_of(run) == stages["stage-1"].info.run_id]
    (stage2,) = [run for run in levels["search"] if parent_of(run) == stages["stage-2"].info.run_id]
    # Stage 1 ran on the configured subset, one hyperparameter per search; stage 2 on all images.
    assert {run.data.tags["data.train_size"] for run in stage1} == {"300"}
    assert stage2.data.tags["data.train_size"] == "600"
    assert sorted(run.info.run_name for run in stage1) == [
        "stage1-activation",
        "stage1-batch_size",
        "stage1-dense_units",
    ]

    # The influence ranking picks stage 2's grid: the best 2 values of the top 2 hyperparameters.
    ranking = pd.read_csv(StringIO(artifact_text(client, study.info.run_id, "influence.csv", tmp_path)))
    assert list(ranking["influence"]) == sorted(ranking["influence"], reverse=True)
    grid = json.loads(artifact_text(client, study.info.run_id, "stage2_grid.json", tmp_path))
    assert list(grid) == list(ranking["hyperparameter"][:2]) and all(len(values) == 2 for values in grid.values())
    assert "plots/influence.png" in {item.path for item in client.list_artifacts(study.info.run_id, "plots")}
    stage2_candidates = [run for run in levels["candidate"] if parent_of(run) == stage2.info.run_id]
    assert len(stage2_candidates) == 4
    stage2_folds = [run for run in levels["fold"] if parent_of(run) in {c.info.run_id for c in stage2_candidates}]
    assert len(stage2_folds) == 4 * SMOKE_FOLDS
    assert stage2.data.metrics["test_accuracy"] == study.data.metrics["test_accuracy"]
    assert {run.info.status for runs in levels.values() for run in runs} == {"FINISHED"}
