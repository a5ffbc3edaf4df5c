"""Failures inside a search, runs never left RUNNING, flat memory, reproducible scores."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import compose_config, run_cli_killed_after, store_uri
from mlflow import MlflowClient
from mlflow_tree import runs_by_level

from mnist_hpo.dispatch import run
from mnist_hpo.execution.estimator import TrainingDivergedError
from mnist_hpo.session import JobContext

DIVERGING_GRID = ["model.optimizer=sgd", "grid=empty", "+grid.learning_rate=[0.01,1e9]"]


def job(folder: Path) -> JobContext:
    """A job launched from ``folder``."""
    return JobContext(launch_dir=folder, output_dir=folder / "out")


def test_diverging_candidate_scores_nan_and_the_search_goes_on(tmp_path):
    cfg = compose_config("experiment=smoke", "execution.progress=false", *DIVERGING_GRID)
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
    # And the failed fits are counted as failed, not trained: 2 folds and the refit trained
    counts = {kind: search.data.tags[f"mnist_hpo.{kind}_fits"] for kind in ("trained", "failed", "reused")}
    assert counts == {"trained": "3", "failed": "2", "reused": "0"}


def test_error_score_raise_stops_and_leaves_nothing_running(tmp_path):
    cfg = compose_config("experiment=smoke", "execution.progress=false", "search.error_score=raise", *DIVERGING_GRID)
    with pytest.raises(TrainingDivergedError):
        run(cfg, job(tmp_path))
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.info.status == "FAILED" and "TrainingDivergedError" in search.data.tags["mnist_hpo.error"]
    statuses = {run.info.status for runs in levels.values() for run in runs}
    assert "RUNNING" not in statuses


def test_values_longer_than_mlflow_takes_are_recorded_cut_and_whole_in_config_yaml(tmp_path):
    # Given a long override list: 2,000 batch sizes to draw one from (a 10,000-character param and tag)
    sizes = f"+grid.batch_size=[{','.join(str(size) for size in range(16, 2016))}]"
    overrides = ["experiment=smoke", "execution.progress=false", "search.strategy=random", "search.n_iter=1", sizes]
    cfg = compose_config(*overrides)
    # When it runs
    run(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out", overrides=overrides))
    # Then it finishes, the param and the tag cut to MLflow's limits and marked, the whole list in config.yaml
    (search,) = runs_by_level(store_uri(tmp_path))["search"]
    assert search.info.status == "FINISHED"
    cut = "[... cut to fit MLflow; the whole value is in config.yaml]"
    param, tag = search.data.params["grid.batch_size"], search.data.tags["mnist_hpo.overrides"]
    assert param.endswith(cut) and len(param) == 6000
    assert tag.endswith(cut) and len(tag) == 8000
    config = MlflowClient(store_uri(tmp_path)).download_artifacts(search.info.run_id, "config.yaml", str(tmp_path))
    assert "- 2015" in Path(config).read_text()


def test_same_seed_gives_identical_cv_scores(tmp_path):
    scores = []
    for attempt in range(2):
        cfg = compose_config(
            "experiment=smoke", "execution.progress=false", "tracking.enabled=false", "deterministic=true"
        )
        scores.append(run(cfg, job(tmp_path / str(attempt))))
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_memory_stays_bounded_over_many_fits_in_recycled_workers(tmp_path):
    """24 fits in two loky workers: each worker is replaced once it grew past the ceiling."""
    ceiling_mb = 40
    cfg = compose_config(
        "experiment=smoke",
        "execution.progress=false",
        "execution.n_jobs=2",
        "execution.fusion=false",  # the per-fit path: every fit trains in a recycled worker
        f"execution.worker_max_growth_mb={ceiling_mb}",
        "model.epochs=1",
        "data.train_size=200",
        "grid=empty",
        "+grid.dense_units=[8,9,10,11,12,13,14,15,16,17,18,19]",
        "tracking.log_model=false",
    )
    run(cfg, job(tmp_path))
    folds = runs_by_level(store_uri(tmp_path))["fold"]
    assert len(folds) == 24 and all(run.info.status == "FINISHED" for run in folds)
    by_worker: dict[str, list[float]] = {}
    for fold in sorted(folds, key=lambda run: run.info.end_time):
        by_worker.setdefault(fold.data.tags["mnist_hpo.pid"], []).append(fold.data.metrics["worker_rss_mb"])
    # TensorFlow keeps ~6 MB per fit, so 12 fits per worker would pass the ceiling: loky recycled them.
    assert len(by_worker) > 2, by_worker
    for readings in by_worker.values():
        assert max(readings) - readings[0] < ceiling_mb + 30, by_worker


def test_fit_store_off_keeps_no_fit_and_trains_every_one(tmp_path):
    cfg = compose_config("experiment=smoke", "execution.progress=false", "execution.fit_store=false", "model.epochs=1")
    for _ in range(2):
        run(cfg, job(tmp_path))
    assert not (tmp_path / "mlruns" / "fits").exists()
    searches = runs_by_level(store_uri(tmp_path))["search"]
    assert [search.data.tags["mnist_hpo.trained_fits"] for search in searches] == ["5", "5"]
    assert all(search.data.tags["mnist_hpo.reused_fits"] == "0" for search in searches)


@pytest.mark.slow
def test_halving_over_epochs_trains_each_iteration_for_its_epochs(tmp_path):
    """``search.resource=epochs``: each halving iteration's fits train for that iteration's epochs."""
    cfg = compose_config(
        "experiment=smoke",
        "execution.progress=false",
        "search.strategy=halving",
        "search.resource=epochs",
        "search.factor=2",
        "search.min_resources=1",
        "model.epochs=4",
        "grid=default",
        "tracking.log_model=false",
    )
    run(cfg, job(tmp_path))
    levels = runs_by_level(store_uri(tmp_path))
    client = MlflowClient(store_uri(tmp_path))
    epochs_by_iteration = {}
    for fold in levels["fold"]:
        iteration = int(fold.data.tags["mnist_hpo.iteration"])
        epochs = int(fold.data.params["epochs"])
        epochs_by_iteration.setdefault(iteration, set()).add(epochs)
        assert len(client.get_metric_history(fold.info.run_id, "loss")) == epochs
    assert epochs_by_iteration == {0: {1}, 1: {2}, 2: {4}}
    assert Counter(int(fold.data.tags["mnist_hpo.iteration"]) for fold in levels["fold"]) == {0: 8, 1: 4, 2: 2}


def test_ctrl_c_prints_one_line_marks_the_runs_killed_and_exits_130(tmp_path):
    # Given a search interrupted by a real SIGINT (Ctrl-C) after its first fit
    result = run_cli_killed_after(1, "experiment=smoke", "execution.progress=false", cwd=tmp_path, signal_name="SIGINT")
    # Then it says so in one line, with no traceback, and exits 130
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted: the search's MLflow runs are marked KILLED and its finished fits are kept; "
        "run `python -m mnist_hpo experiment=smoke execution.progress=false` again to resume"
    )
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.info.status == "KILLED"
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}


@pytest.mark.slow
def test_sigterm_of_a_search_with_two_workers_marks_its_runs_killed_and_exits_143(tmp_path):
    """What Slurm, Kubernetes, systemd and ``timeout`` send: handled as Ctrl-C is, within seconds."""
    args = ["experiment=smoke", "execution.n_jobs=2", "model.epochs=30", "execution.fusion=false"]
    search = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[psutil.Process] = []
    try:
        # Given a search whose two workers are training
        workers = loky_workers(search, 2)
        time.sleep(5)  # the workers are inside their first fits
        # When it gets SIGTERM
        search.terminate()
        _, stderr = search.communicate(timeout=30)
    finally:
        for process in [search, *workers]:
            with contextlib.suppress(Exception):
                process.kill()
    # Then it says so in one line and exits 143, its workers gone and no run left RUNNING
    assert search.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "terminated (SIGTERM): the search's MLflow runs are marked KILLED and its finished fits are kept; "
        f"run `python -m mnist_hpo {' '.join(args)}` again to resume"
    )
    deadline = time.monotonic() + 10
    while not all(gone(worker.pid) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(worker.pid) for worker in workers)
    levels = runs_by_level(store_uri(tmp_path))
    assert levels["search"][0].info.status == "KILLED"
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}


def loky_workers(search: subprocess.Popen, count: int, timeout_s: float = 300) -> list[psutil.Process]:
    """Wait for ``search`` to have started ``count`` loky worker processes; return them."""
    deadline = time.monotonic() + timeout_s
    workers: list[psutil.Process] = []
    while len(workers) < count and time.monotonic() < deadline and search.poll() is None:
        workers = [
            child
            for child in psutil.Process(search.pid).children(recursive=True)
            if "LokyProcess" in " ".join(child.cmdline())
        ]
        time.sleep(0.5)
    assert len(workers) == count, f"the search never started its {count} workers"
    return workers


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (exited, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_workers_end_within_seconds_of_a_kill_9_of_their_search(tmp_path):
    """``kill -9`` of the search process alone (not its group): its loky workers must not train on."""
    search = subprocess.Popen(
        # Fusion off: the workers train the fits (with fusion they would only restore them after the groups).
        [
            sys.executable,
            "-m",
            "mnist_hpo",
            "experiment=smoke",
            "execution.n_jobs=2",
            "model.epochs=30",
            "execution.fusion=false",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[psutil.Process] = []
    try:
        workers = loky_workers(search, 2)
        search.kill()
        search.wait()
        deadline = time.monotonic() + 10
        while not all(gone(worker.pid) for worker in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(gone(worker.pid) for worker in workers)
    finally:
        for process in [search, *workers]:
            with contextlib.suppress(Exception):
                process.kill()


def test_a_fit_store_that_cannot_grow_says_so_once_and_counts_the_fits_it_could_not_keep(tmp_path):
    """The file system refuses every fit-store entry (a file size limit below an entry's size, as a full disk
    refuses a write): the search finishes, one warning line says so, and the end line counts them."""
    limit = 4 * 2**20  # an entry of this model is 6.3 MB; every other file the search writes stays far below

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail EFBIG

    args = ["experiment=smoke", "model.dense_units=2048", "tracking.log_model=false", "execution.progress=false"]
    result = subprocess.run(
        [sys.executable, "-m", "mnist_hpo", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limited,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("fit store: could not save") == 1, output[-3000:]
    assert "5 not kept in the fit store (File too large): they stand in these results but train again next time" in (
        " ".join(output.split())
    ), output[-3000:]
    (search,) = runs_by_level(store_uri(tmp_path))["search"]
    assert search.data.tags["mnist_hpo.unstored_fits"] == "5"
