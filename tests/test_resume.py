"""A search killed with SIGKILL part-way resumes, restores its finished fits from the fit store, ends complete."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMOKE_CANDIDATES, SMOKE_EPOCHS, SMOKE_FOLDS, run_cli, run_cli_killed_after, store_uri
from mlflow import MlflowClient
from mlflow_tree import runs_by_level

SMOKE = ("experiment=smoke", "hydra.run.dir=outputs/smoke")
# The per-fit path (fusion off): fits train one by one inside the search, so a kill lands between fits.
# A kill inside a fused group is tests/test_fused.py's.
PER_FIT = (*SMOKE, "execution.fusion=false")


pytestmark = pytest.mark.slow


def kill_after_two_fits(folder: Path) -> list:
    """Run the smoke search until it SIGKILLs itself after two fits; return the fold runs then FINISHED."""
    run_cli_killed_after(2, *PER_FIT, "execution.progress=false", cwd=folder)
    return [run for run in runs_by_level(store_uri(folder)).get("fold", []) if run.info.status == "FINISHED"]


def test_sigkilled_search_resumes_and_trains_only_missing_fits(tmp_path):
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    assert run_cli(*PER_FIT, cwd=reference).returncode == 0
    tmp_path = tmp_path / "killed"
    tmp_path.mkdir()
    done_before = kill_after_two_fits(tmp_path)
    assert len(done_before) == 2
    uri = store_uri(tmp_path)
    (search,) = runs_by_level(uri)["search"]
    assert search.info.status == "RUNNING"  # kill -9 ran no cleanup; the restart must notice

    result = run_cli(*PER_FIT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming search run {search.info.run_id}" in result.stdout
    assert "fits: 3 trained, 2 restored from the fit store" in result.stdout  # 2 folds + the refit trained

    levels = runs_by_level(uri)
    (resumed,) = levels["search"]
    assert resumed.info.run_id == search.info.run_id and resumed.info.status == "FINISHED"
    assert int(resumed.data.tags["mnist_hpo.reused_fits"]) == len(done_before)
    assert resumed.data.tags["mnist_hpo.resumed_from_status"] == "KILLED"
    statuses = Counter(run.info.status for runs in levels.values() for run in runs)
    assert "RUNNING" not in statuses

    # The tree is complete: every candidate has one FINISHED run per fold, and the folds that
    # finished before the kill are the same runs, not trained again (no new run, no new epochs).
    assert len(levels["candidate"]) == SMOKE_CANDIDATES
    assert all(run.info.status == "FINISHED" for run in levels["candidate"])
    # The interruption's reason was cleared from the runs that went on to finish.
    assert all("mnist_hpo.error" not in run.data.tags for run in [resumed, *levels["candidate"]])
    finished = [run for run in levels["fold"] if run.info.status == "FINISHED"]
    per_candidate = Counter(run.data.tags["mnist_hpo.candidate"] for run in finished)
    assert per_candidate == dict.fromkeys(per_candidate, SMOKE_FOLDS) and len(per_candidate) == SMOKE_CANDIDATES
    finished_ids = {run.info.run_id for run in finished}
    assert {run.info.run_id for run in done_before} <= finished_ids
    client = MlflowClient(uri)
    for run in done_before:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == SMOKE_EPOCHS
        assert "test_score" in client.get_run(run.info.run_id).data.metrics

    # Same scores as the uninterrupted smoke search with the same seed.
    uninterrupted = pd.read_csv(reference / "outputs/smoke/cv_results.csv")
    resumed_scores = pd.read_csv(tmp_path / "outputs/smoke/cv_results.csv")
    pd.testing.assert_series_equal(resumed_scores["mean_test_score"], uninterrupted["mean_test_score"])
    # The fit store keeps every fit (4 folds and the refit) for later searches.
    assert len(list((tmp_path / "mlruns" / "fits").glob("*/*.npz"))) == SMOKE_CANDIDATES * SMOKE_FOLDS + 1


def test_a_search_killed_after_its_refit_resumes_without_a_second_refit_run(tmp_path):
    # 4 fold fits and the refit finished; the kill comes before the search recorded anything.
    run_cli_killed_after(SMOKE_CANDIDATES * SMOKE_FOLDS + 1, *SMOKE, "execution.progress=false", cwd=tmp_path)
    result = run_cli(*SMOKE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fits: 0 trained, 5 restored from the fit store" in result.stdout
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.info.status == "FINISHED" and "mnist_hpo.model_uri" in search.data.tags
    assert len(levels["refit"]) == 1 and len(levels["fold"]) == SMOKE_CANDIDATES * SMOKE_FOLDS
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}


def test_a_repeated_search_killed_mid_way_resumes_with_one_run_per_split(tmp_path):
    """``search.cv_repeats=2``: a split of repeat 1 is not taken for the same fold of repeat 0 on resume."""
    repeated = (*SMOKE, "search.cv_repeats=2", "execution.progress=false")
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    assert run_cli(*repeated, cwd=reference).returncode == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    # Fused training stores all 8 fits; the search is killed after restoring 2 (splits 0 and 1 of candidate 0).
    run_cli_killed_after(2, *repeated, cwd=killed)
    result = run_cli(*repeated, cwd=killed)
    assert result.returncode == 0, result.stderr[-3000:]
    levels = runs_by_level(store_uri(killed))
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}
    finished = Counter(
        (run.data.tags["mnist_hpo.candidate"], run.data.tags["mnist_hpo.fold"])
        for run in levels["fold"]
        if run.info.status == "FINISHED"
    )
    splits = SMOKE_FOLDS * 2
    assert len(finished) == SMOKE_CANDIDATES * splits and set(finished.values()) == {1}, finished
    scores = [f"split{split}_test_score" for split in range(splits)]
    before = pd.read_csv(reference / "outputs/smoke/cv_results.csv")[scores]
    after = pd.read_csv(killed / "outputs/smoke/cv_results.csv")[scores]
    pd.testing.assert_frame_equal(after, before)
