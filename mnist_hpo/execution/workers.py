"""Where the search's (candidate, fold) fits run: in-process, in recycled loky workers, or on Ray.

With ``execution.n_jobs`` other than 1, scikit-learn hands fits to joblib. Here joblib's loky
backend gets an initializer that gives each worker its share of the CPU threads and a memory
ceiling: loky replaces a worker whose resident memory has grown by more than
``execution.worker_max_growth_mb`` since its first task (TensorFlow keeps a few MB of every traced
model), so memory stays bounded however long the grid is.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import joblib
import psutil

from mnist_hpo.configuration.schema import ExecutionConfig
from mnist_hpo.environment.quiet import import_backend, quiet_loggers

# loky has no public setting for its per-worker memory ceiling, only this module global, read
# after every task. It is the one private name the project writes; a rename fails loudly here.
LOKY_MEMORY_CEILING = "_MAX_MEMORY_LEAK_SIZE"
EXIT_SEARCH_GONE = 70  # a worker's exit status when the search process it served is gone
DEFAULT_WORKER_GROWTH_MB = 300  # execution.worker_max_growth_mb when unset


def set_memory_ceiling(max_growth_mb: int) -> None:
    """Make loky replace this worker once its memory grew by ``max_growth_mb`` (needs psutil)."""
    from joblib.externals.loky import process_executor

    if not hasattr(process_executor, LOKY_MEMORY_CEILING):
        raise RuntimeError(
            f"joblib {joblib.__version__}: loky no longer has {LOKY_MEMORY_CEILING}, so "
            "execution.worker_max_growth_mb cannot be enforced; pin joblib or update mnist_hpo.execution.workers"
        )
    setattr(process_executor, LOKY_MEMORY_CEILING, max_growth_mb * 2**20)


def thread_budget(n_jobs: int, threads: int | None) -> int:
    """Threads per worker: ``threads`` if given, else the cores shared out between the workers."""
    if threads:
        return threads
    return max(1, joblib.cpu_count() // joblib.effective_n_jobs(n_jobs))


def gpu_share(n_jobs: int, fraction: float | None) -> float:
    """The fraction of each GPU's memory one worker may take: ``fraction``, else an equal share."""
    if fraction:
        return fraction
    return round(0.9 / joblib.effective_n_jobs(n_jobs), 3)  # joblib's own count: -2 is all cores but one


def init_worker(max_growth_mb: int, threads: int, gpu_fraction: float, search_pid: int) -> None:
    """Run once in each new worker process, before its first fit (the watch first: the rest imports the backend)."""
    exit_with(search_pid)
    quiet_loggers()
    import_backend()  # its start-up lines go to the job's log, as in the search process
    set_memory_ceiling(max_growth_mb)
    set_backend_threads(threads)
    limit_gpu_memory(gpu_fraction)


def exit_with(search_pid: int, every_s: float = 1.0) -> None:
    """End this worker within ``every_s`` of the search process ending, however it ended.

    A ``kill -9`` of the search runs no cleanup, and loky's workers went on training (and writing
    fold runs) for a search nobody was running. A daemon thread watches the search process (pid and
    start time, so a reused pid does not count) and exits this process at once when it is gone.
    """
    search = psutil.Process(search_pid)

    def watch() -> None:
        while search.is_running() and search.status() != psutil.STATUS_ZOMBIE:
            time.sleep(every_s)
        os._exit(EXIT_SEARCH_GONE)

    threading.Thread(target=watch, name="exit-with-search", daemon=True).start()


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
def fit_workers(execution: ExecutionConfig) -> Iterator[None]:
    """Run the search's parallel fits in workers configured from the ``execution`` group.

    ``execution.backend=loky`` (default) uses local processes; ``ray`` sends each fit to a Ray
    cluster through Ray's joblib backend (``execution.ray.address``; a local Ray when empty).
    """
    if execution.backend == "ray":
        from mnist_hpo.execution.ray_backend import ray_workers

        with ray_workers(execution.ray, execution.n_jobs):
            yield
        return
    threads = thread_budget(execution.n_jobs, execution.worker_threads)
    fraction = gpu_share(execution.n_jobs, execution.gpu_memory_fraction)
    growth = execution.worker_max_growth_mb or DEFAULT_WORKER_GROWTH_MB
    if execution.n_jobs != 1:
        # Checked here too, so a renamed loky global stops the search before any fit starts.
        set_memory_ceiling(growth)
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(fraction))
    with joblib.parallel_config(
        backend="loky",
        initializer=init_worker,
        initargs=(growth, threads, fraction, os.getpid()),
    ):
        yield
