"""The terminal shows the tool's own lines: framework start-up chatter goes to the job's log file.

* TensorFlow writes its start-up lines (``oneDNN custom operations are on``, ``Could not find cuda
  drivers``, absl's ``All log messages before absl::InitializeLog()``) from C++ while it is imported,
  before absl's logging is set up, so no setting reaches them (``TF_CPP_MIN_LOG_LEVEL`` does not):
  the import runs with file descriptor 2 pointed at the job's log file.
* The tracking writer process (tracking/writer.py) writes its stderr to the job's log.
* Ray's start of a local cluster (``ray.init``: its "Started a local Ray instance", the cluster's
  processes) runs with descriptor 2 at the job's log too (execution/ray_backend.py); joining a cluster
  at an address does not, so its connection retries stay in sight.
* MLflow (its store migrations, alembic's, the model signature check) and matplotlib (its font cache)
  log INFO lines through Python's logging: MLflow's own ``MLFLOW_LOGGING_LEVEL`` and matplotlib's
  logger start at WARNING, so their warnings still reach the user; TensorFlow's Python logger at ERROR
  (its retracing notes are about the tool's model reuse); MLflow's artifact progress bar is off
  (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``).

``hydra.verbose=true`` (any value) leaves all of it as the libraries print it, for debugging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_ENV = "MNIST_HPO_JOB_LOG"  # the job's log file, where the chatter goes; worker processes inherit it
VERBOSE_ENV = "MNIST_HPO_VERBOSE"  # "1" when the job asked for the chatter


def route_chatter(log: Path, verbose: bool) -> None:
    """Send this job's start-up chatter to ``log`` (or leave it all, ``verbose``); before Keras or MLflow load.

    Environment variables, so every worker process the job starts does the same: MLflow's own
    ``MLFLOW_LOGGING_LEVEL`` (WARNING: its and alembic's INFO lines go), and where TensorFlow's go.
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return
    os.environ[LOG_ENV] = str(log)
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:  # a level the user set stands
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
        for name in ("mlflow", "alembic"):  # MLflow set them at its import, which may have come first
            logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its bar when the model is logged
    quiet_loggers()


def quiet_loggers() -> None:
    """This process' chatty Python loggers at the level where they speak to the user (unless verbose).

    matplotlib's "generated new fontManager" (INFO, on first use); TensorFlow's "triggered
    tf.function retracing" notes (WARNING) are about the tool's own model reuse, not the user's run;
    Ray's pool warns (WARNING) that joblib's ``context`` argument does not apply to it, at every search.
    """
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("ray.util.multiprocessing.pool").setLevel(logging.ERROR)


def job_log(output_dir: Path) -> Path:
    """The job's log file: Hydra's, else ``<output_dir>/mnist_hpo.log``."""
    files = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.FileHandler)]
    return Path(files[0].baseFilename) if files else output_dir / "mnist_hpo.log"


def routed_log() -> Path | None:
    """The job's log file where chatter goes (:func:`route_chatter`), or None (a library use, ``hydra.verbose``)."""
    log = os.environ.get(LOG_ENV)
    return Path(log) if log and os.environ.get(VERBOSE_ENV) != "1" else None


@contextmanager
def chatter_to_log() -> Iterator[None]:
    """Point file descriptor 2 at the job's log for the block (a C++ library's import), then back.

    Python's own ``sys.stderr`` is flushed first and keeps its object, so nothing the tool writes is
    lost or reordered; only what C++ writes to the descriptor meanwhile lands in the log. Without a
    routed log (a library use, ``hydra.verbose``) the block runs as it is.
    """
    log = routed_log()
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log, "ab") as file:
            os.dup2(file.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_backend() -> None:
    """Import Keras (and its backend) with the backend's start-up lines going to the job's log."""
    with chatter_to_log():
        import keras  # noqa: F401 - the import is the point: TensorFlow prints while it loads
