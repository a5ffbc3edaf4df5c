"""Where the search's (candidate, fold) fits run: in-process, in recycled loky workers, or on Ray.

With ``search.n_jobs`` other than 1, scikit-learn hands fits to joblib. Here joblib's loky
backend gets an initializer that gives each worker its share of the CPU threads and a memory
ceiling: loky replaces a worker whose resident memory has grown by more than
``search.worker_max_growth_mb`` since its first task (TensorFlow keeps a few MB of every traced
model), so memory stays bounded however long the grid is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import joblib


def thread_budget(n_jobs: int, threads: int | None) -> int:
    """Threads per worker: ``threads`` if given, else the cores shared out between the workers."""
    if threads:
        return threads
    workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
    return max(1, joblib.cpu_count() // max(1, workers))


def init_worker(max_growth_mb: int, threads: int) -> None:
    """Run once in each new worker process, before its first fit."""
    from joblib.externals.loky import process_executor

    # loky checks this after every task (it needs psutil) and restarts a worker past it.
    process_executor._MAX_MEMORY_LEAK_SIZE = max_growth_mb * 2**20
    set_backend_threads(threads)


def set_backend_threads(threads: int) -> None:
    """Limit the Keras backend's CPU thread pools in this process."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


@contextmanager
def fit_workers(search: Any) -> Iterator[None]:
    """Run the search's parallel fits in workers configured from the ``search`` group.

    ``search.backend=loky`` (default) uses local processes; ``ray`` sends each fit to a Ray
    cluster through Ray's joblib backend (``search.ray.address``; a local Ray when empty).
    """
    if search.backend == "ray":
        from mnist_hpo.ray_backend import ray_workers

        with ray_workers(search.ray):
            yield
        return
    threads = thread_budget(search.n_jobs, search.worker_threads)
    with joblib.parallel_config(
        backend="loky",
        initializer=init_worker,
        initargs=(search.worker_max_growth_mb, threads),
    ):
        yield
