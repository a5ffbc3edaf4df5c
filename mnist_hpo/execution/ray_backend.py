"""Sends a search's (candidate, fold) fits to a Ray cluster through Ray's own joblib backend."""

from __future__ import annotations

import _thread
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import joblib

from mnist_hpo.configuration.schema import ConfigError, RayConfig
from mnist_hpo.environment.quiet import chatter_to_log
from mnist_hpo.environment.runtime import BACKEND_ENV

# What Ray's workers must inherit to build the same Keras on the same device as this process (the
# backend's settings, as local workers inherit them) and to reach the tracking store as it does.
FORWARDED_ENV = (
    *BACKEND_ENV,
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
)

# Ray's joblib backend runs fits on a pool of actors, which by default die for good with their node
# and fail the search. Restarted instead, wherever Ray finds room, they run the lost fit again. Task
# retries are unbounded because Ray spends them while it is still deciding that a node is dead
# (seconds of "actor unavailable"); the restarts bound a fit that keeps killing its worker.
FAULT_TOLERANCE: dict[str, Any] = {"max_restarts": 5, "max_task_retries": -1}
WATCH_SIGNAL = signal.SIGUSR1  # how the placement watch stops the main thread (never sent to the process)


def remote_args(config: RayConfig) -> dict[str, Any]:
    """The options of every Ray actor that runs fits: :data:`FAULT_TOLERANCE`, overridden by ``ray_remote_args``."""
    return FAULT_TOLERANCE | dict(config.ray_remote_args)


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local one when it is empty."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("execution.backend: ray needs Ray; pip install -e '.[ray]'") from error
    if ray.is_initialized():
        return
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    try:
        # Starting a local cluster, Ray's start-up lines ("Started a local Ray instance", its token note) and
        # what its processes print go to the job's log, as the backends' start-up lines do. Joining one, its
        # lines stay on the terminal: its retries are all a user sees of a cluster that does not answer.
        with nullcontext() if address else chatter_to_log():
            ray.init(
                address=address or None, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False
            )
    except ConnectionError as error:
        raise ConfigError(f"execution.ray.address: cannot reach a Ray cluster at {address!r} ({error})") from error


class PlacementError(Exception):
    """The alive nodes of the cluster have had no room for all of the search's workers for too long."""


def room(nodes: list[dict[str, Any]], demand: dict[str, float]) -> int:
    """How many workers asking ``demand`` (Ray resource name -> amount) the alive ``nodes`` can host at once."""
    total = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fits = [math.floor(have.get(name, 0.0) / amount + 1e-9) for name, amount in demand.items() if amount > 0]
        total += min(fits) if fits else 0
    return total


def worker_demand(args: dict[str, Any]) -> dict[str, float]:
    """What one worker (a Ray actor) reserves for its life: a CPU unless told otherwise, GPUs, custom resources."""
    demand = {"CPU": float(args.get("num_cpus", 1)), "GPU": float(args.get("num_gpus", 0) or 0)}
    return demand | {name: float(amount) for name, amount in (args.get("resources") or {}).items()}


@contextmanager
def placement_watch(workers: int, demand: dict[str, float], timeout_s: float, every_s: float = 2.0) -> Iterator[None]:
    """Stop the search, as a signal stops it, once the alive nodes have lacked room for its workers ``timeout_s``.

    A Ray actor holds its resources for life. When a node dies, Ray restarts its actors elsewhere,
    and the fit one was running waits for it; with no room left on the alive nodes it would wait for
    ever, silently. A daemon thread compares the workers with the room on the alive nodes (Ray's
    public ``ray.nodes()``); a shortfall that outlasts ``timeout_s`` (a node may join again) raises
    :class:`PlacementError` in the main thread, which ends the search's runs FAILED with the reason.
    """
    import ray

    stopped = threading.Event()
    reason: list[str] = []

    def raise_in_main(signum: int, frame: object) -> None:
        raise PlacementError(reason[0])

    def watch() -> None:
        short_since: float | None = None
        while not stopped.wait(every_s):
            nodes = ray.nodes()
            hosted = room(nodes, demand)
            if hosted >= workers:
                short_since = None
                continue
            short_since = short_since if short_since is not None else time.monotonic()
            if time.monotonic() - short_since >= timeout_s:
                alive = sum(bool(node.get("Alive")) for node in nodes)
                asked = {name: amount for name, amount in demand.items() if amount}
                reason.append(
                    f"for {timeout_s:g} s the cluster's {alive} alive node(s) had room for {hosted} of the "
                    f"search's {workers} workers ({asked} each), so the fits waiting for a worker could not be "
                    "placed (a node lost, or execution.n_jobs beyond the cluster)"
                )
                _thread.interrupt_main(WATCH_SIGNAL)
                return

    before = signal.signal(WATCH_SIGNAL, raise_in_main)
    thread = threading.Thread(target=watch, name="ray-placement-watch", daemon=True)
    thread.start()
    try:
        yield
    except BaseException as error:
        # joblib's abort, on the way out, may fail in turn (Ray refuses a new pool larger than the cluster):
        # the reason the search stopped is the placement's.
        if reason and not isinstance(error, PlacementError):
            raise PlacementError(reason[0]) from error
        raise
    finally:
        stopped.set()
        thread.join()
        signal.signal(WATCH_SIGNAL, before)


@contextmanager
def ray_workers(config: RayConfig, n_jobs: int) -> Iterator[None]:
    """Run joblib work (the search's fits) on Ray actors made with :func:`remote_args`, watched for room."""
    connect(config.address)
    from ray.util.joblib import register_ray

    register_ray()
    args = remote_args(config)
    with joblib.parallel_config(backend="ray", ray_remote_args=args):
        workers = joblib.effective_n_jobs(n_jobs)
        with placement_watch(workers, worker_demand(args), config.placement_timeout_s):
            yield
