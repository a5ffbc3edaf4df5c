"""Fused training in a background thread while the search, in this process, restores what is done.

Fused training runs in XLA's threads and leaves the interpreter mostly free (1.5 of 2 cores busy
here); the search's pass over finished fits (restore, score, MLflow fold runs) is Python on one
core. Run one behind the other: each fit waits for its group's keys (:class:`PendingFits`) and the
search's pass fills the cores training leaves idle (docs/performance.md).

What the two threads must not share, and how:

* Keras models are built only in the search's thread: the executor builds every member before
  training starts (:meth:`FusedExecutor.prepare`), as scikeras seeds the global generators around
  every build and an interleaved build would draw other initial weights.
* TensorFlow's op determinism is process-wide, and scikeras switches it around every build:
  a compiled program's first call (its trace and compile) and a model build in the search's thread
  hold :data:`BUILD_LOCK`, so no compile sees another thread's setting.
* The fit store's entries are written atomically and read whole; the outputs the search takes are
  handed over under a lock (execution/outputs.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mnist_hpo.execution.fused import FusedExecutor, FusedReport, Group
    from mnist_hpo.execution.plan import FitPlan

log = logging.getLogger(__name__)

BUILD_LOCK = threading.RLock()  # a Keras model build, or a compiled program's first call
WAIT_POLL_S = 1.0  # how often a waiting fit checks that the training thread still runs
CANCEL_NOTICE_S = 2.0  # a cancelled run still training after this says why the stop waits


class PendingFits:
    """Fit keys a background run has yet to store: a fit waits for its key before it looks in the store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}
        self.thread: threading.Thread | None = None

    def expect(self, keys: Iterable[str], thread: threading.Thread) -> None:
        """``thread`` will store (or give up on) each of ``keys``."""
        with self.lock:
            self.thread = thread
            for key in keys:
                self.events.setdefault(key, threading.Event())

    def settle(self, keys: Iterable[str]) -> None:
        """``keys`` are stored, or will not be: their fits stop waiting."""
        with self.lock:
            events = [self.events.pop(key) for key in keys if key in self.events]
        for event in events:
            event.set()

    def settle_all(self) -> None:
        """Nothing more will be stored: every waiting fit goes on."""
        with self.lock:
            keys = list(self.events)
        self.settle(keys)

    def running(self) -> bool:
        """Whether a background run is still training."""
        thread = self.thread
        return thread is not None and thread.is_alive()

    def wait(self, key: str | None) -> None:
        """Return once ``key`` is settled (at once when no run expects it, or the run has ended)."""
        event = self.events.get(key) if key is not None else None
        while event is not None and not event.wait(WAIT_POLL_S):
            if not self.running():  # it ended without settling this key: nothing will come
                self.settle([key])


PENDING = PendingFits()  # the process' own: the background run settles, the estimator waits


class TrainingAhead:
    """The fused executor's :meth:`~FusedExecutor.train` running in a background thread."""

    def __init__(self, executor: FusedExecutor, plan: FitPlan, groups: list[Group], X: np.ndarray, y: np.ndarray):
        self.executor, self.plan, self.groups = executor, plan, groups
        self.X, self.y = X, y
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.body, name="mnist-hpo-fused", daemon=True)

    def start(self) -> TrainingAhead:
        """Expect every group's fits, then start training them."""
        PENDING.expect((fit.key for group in self.groups for fit in group.fits), self.thread)
        self.thread.start()
        return self

    def body(self) -> None:
        try:
            self.executor.train(self.groups, self.X, self.y, settle=PENDING.settle, stop=self.stop.is_set)
        except BaseException as error:  # the search trains what is missing alone; the reason is logged
            self.error = error
        finally:
            PENDING.settle_all()

    def finish(self) -> FusedReport:
        """Wait for the training to end (it has, once the search is done) and report it."""
        self.thread.join()
        if self.error is not None:
            log.warning("fused training stopped early (%s); the search trained the rest alone", self.error)
        return self.executor.finish(self.plan)

    def cancel(self) -> None:
        """Stop after the group in training (the search failed or was interrupted) and wait for it.

        Waited for, not abandoned: a daemon thread still in TensorFlow at interpreter exit can crash
        it, and the group's members are stored whole or not at all.
        """
        self.stop.set()
        self.thread.join(CANCEL_NOTICE_S)
        if self.thread.is_alive():
            log.warning("stopping: the fused group in training finishes first (at most one group's time)")
            self.thread.join()
