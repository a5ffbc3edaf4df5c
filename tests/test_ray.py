"""execution.backend=ray: the fits run as tasks on a (local) Ray cluster, with the same results and tree."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SMOKE_CANDIDATES, SMOKE_EPOCHS, SMOKE_FOLDS, store_uri
from mlflow_tree import assert_complete_tree, runs_by_level

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


def test_ray_backend_gives_the_local_scores_and_the_same_tree(cli, tmp_path, smoke_run):
    result = cli(
        "experiment=smoke",
        "hydra.run.dir=outputs/smoke",
        "execution.backend=ray",
        "execution.n_jobs=2",
        "execution.progress=false",
        cwd=tmp_path,
        env={"RAY_AUTH_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Ray started a local cluster, and said so in the job's log, not on the terminal.
    assert "Started a local Ray instance" in (tmp_path / "outputs/smoke/__main__.log").read_text()
    assert result.stderr.strip() == "", result.stderr[-3000:]
    uri = store_uri(tmp_path)
    assert_complete_tree(uri, SMOKE_CANDIDATES, SMOKE_FOLDS, SMOKE_EPOCHS)
    levels = runs_by_level(uri)
    (search,) = levels["search"]
    # The folds were fitted by Ray worker processes, not by the search's own process.
    assert search.data.tags["mnist_hpo.pid"] not in {run.data.tags["mnist_hpo.pid"] for run in levels["fold"]}

    local = pd.read_csv(smoke_run[0] / "outputs/smoke/cv_results.csv")
    on_ray = pd.read_csv(tmp_path / "outputs/smoke/cv_results.csv")
    pd.testing.assert_series_equal(on_ray["mean_test_score"], local["mean_test_score"], atol=0.02)
