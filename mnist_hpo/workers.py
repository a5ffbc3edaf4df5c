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


def gpu_share(n_jobs: int, fraction: float | None) -> float:
    """The fraction of each GPU's memory one worker may take: ``fraction``, else an equal share."""
    if fraction:
        return fraction
    workers = joblib.cpu_count() if n_jobs < 0 else n_jobs
    return round(0.9 / max(1, workers), 3)


def init_worker(max_growth_mb: int, threads: int, gpu_fraction: float) -> None:
    """Run once in each new worker process, before its first fit."""
    from joblib.externals.loky import process_executor

    # loky checks this after every task (it needs psutil) and restarts a worker past it.
    process_executor._MAX_MEMORY_LEAK_SIZE = max_growth_mb * 2**20
    set_backend_threads(threads)
    limit_gpu_memory(gpu_fraction)


def limit_gpu_memory(fraction: float) -> None:
    """Cap this process' share of GPU memory where the backend allows a cap after start-up.

    JAX reads ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (set before the workers start); torch takes a
    per-process fraction; TensorFlow grows its allocation on demand (``TF_FORCE_GPU_ALLOW_GROWTH``).
    """
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        if torch.cuda.is_available():
            for device in range(torch.cuda.device_count()):
                torch.cuda.set_per_process_memory_fraction(fraction, device)


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
    fraction = gpu_share(search.n_jobs, search.gpu_memory_fraction)
    if search.n_jobs != 1:
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(fraction))
    with joblib.parallel_config(
        backend="loky",
        initializer=init_worker,
        initargs=(search.worker_max_growth_mb, threads, fraction),
    ):
        yield
