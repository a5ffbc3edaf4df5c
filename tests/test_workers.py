"""How the CPU threads and GPU memory are shared out between parallel fit workers."""

from __future__ import annotations

import joblib
import pytest

from mnist_hpo.execution.workers import gpu_share, thread_budget

CORES = joblib.cpu_count()


@pytest.mark.parametrize("n_jobs", [1, 2, -1, 64])
def test_explicit_threads_win(n_jobs):
    assert thread_budget(n_jobs, 3) == 3
    assert thread_budget(n_jobs, 1) == 1


@pytest.mark.parametrize("n_jobs", [1, 2, -1, 64])
def test_explicit_gpu_fraction_wins(n_jobs):
    assert gpu_share(n_jobs, 0.25) == 0.25
    assert gpu_share(n_jobs, 1.0) == 1.0


def test_one_worker_gets_every_core_and_most_of_the_gpu():
    assert thread_budget(1, None) == CORES
    assert gpu_share(1, None) == 0.9


def test_all_cores_means_one_worker_per_core():
    # n_jobs=-1 is one worker per core, as joblib counts them
    assert thread_budget(-1, None) == 1
    assert gpu_share(-1, None) == round(0.9 / CORES, 3)


def test_negative_n_jobs_counts_workers_as_joblib_does():
    # n_jobs=-2 is all cores but one (at least one worker), not one worker per core
    workers = max(CORES - 1, 1)
    assert thread_budget(-2, None) == max(1, CORES // workers)
    assert gpu_share(-2, None) == round(0.9 / workers, 3)


def test_cores_are_split_evenly_between_workers():
    assert thread_budget(2, None) == max(1, CORES // 2)


@pytest.mark.parametrize("n_jobs", [CORES + 1, 4 * CORES, 1000])
def test_more_workers_than_cores_still_get_one_thread_each(n_jobs):
    assert thread_budget(n_jobs, None) == 1


@pytest.mark.parametrize(
    ("n_jobs", "share"),
    [(2, 0.45), (3, 0.3), (4, 0.225), (7, 0.129), (16, 0.056), (64, 0.014)],
)
def test_gpu_share_is_nine_tenths_split_between_workers_to_three_decimals(n_jobs, share):
    assert gpu_share(n_jobs, None) == share


def test_gpu_shares_of_all_workers_add_up_to_nine_tenths_give_or_take_rounding():
    for n_jobs in range(1, 200):
        assert 0 < gpu_share(n_jobs, None) * n_jobs <= 0.9 + n_jobs * 0.0005


def test_ray_actors_get_every_variable_the_backend_set_up_gives_local_workers(monkeypatch):
    """``backend=jax device=cpu`` on Ray must not grab a GPU: actors see what loky's workers inherit."""
    import os

    import keras

    from mnist_hpo.configuration.schema import ExecutionConfig
    from mnist_hpo.environment.runtime import configure_backend
    from mnist_hpo.execution.ray_backend import FORWARDED_ENV
    from mnist_hpo.execution.workers import fit_workers

    watched = {*FORWARDED_ENV, "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION"}
    for name in watched:
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    configure_backend(keras.backend.backend(), "cpu")
    with fit_workers(ExecutionConfig(n_jobs=2)):
        changed = {name for name in os.environ if os.environ[name] != before.get(name)}
    assert {"JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION"} <= changed
    assert changed <= set(FORWARDED_ENV), changed - set(FORWARDED_ENV)
