"""A tracking store lost mid-search (its SQLite database deleted, or made read-only) ends the search in one line.

Every MLflow write of a search goes through :func:`guarded`. An error that says the store itself
is gone becomes :class:`TrackingStoreLost`, which stops the search in whatever process met it;
any other error passes unchanged. Fits that finished are already in the fit store, so a rerun
once the store is back restores them instead of training them again.
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

# MLflow's SQL store logs every database error with its traceback before raising it; a lost store
# would print one per write from every worker. The error itself still propagates and is reported.
MLFLOW_DB_LOGGER = "mlflow.store.db.utils"

# SQLite's words for "the other writer holds the lock": contention, which MLflow retries; not a loss.
BUSY = ("database is locked", "database table is locked", "busy")


class TrackingStoreLost(BaseException):
    """The tracking store can no longer be written, so the search cannot record anything more.

    A BaseException, as KeyboardInterrupt is: scikit-learn's per-fit error handling
    (``error_score``) catches every Exception, and would turn each fit's failed write into a NaN
    score while the search went on training with nowhere to record.
    """

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason, details)
        self.reason = reason
        self.details = details

    def __str__(self) -> str:
        return self.reason


def lost_reason(error: BaseException) -> str | None:
    """Why ``error`` means the store is gone, in SQLite's own words, or None if it does not.

    SQLite reports a deleted database file as "attempt to write a readonly database" on an open
    connection and "no such table" on a new one; a read-only file or folder as the former, as
    "unable to open database file", or, when a write's rollback journal can no longer be removed,
    as "disk I/O error".
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, sqlite3.DatabaseError) and not any(word in str(cause).lower() for word in BUSY):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def store_lost(error: BaseException | None) -> bool:
    """Whether ``error`` (a block's exception, or None) means the store is gone: then nothing can be closed."""
    return error is not None and (isinstance(error, TrackingStoreLost) or lost_reason(error) is not None)


def not_a_lost_store(record: logging.LogRecord) -> bool:
    """Logging filter: drop MLflow's traceback record of an error that means the store is gone."""
    return not (record.exc_info and record.exc_info[1] is not None and lost_reason(record.exc_info[1]))


@contextmanager
def guarded() -> Iterator[None]:
    """Run MLflow writes; an error that means the store is gone is re-raised as :class:`TrackingStoreLost`.

    In whichever process the block runs, MLflow's own log record of that error is dropped: the
    one-line report and the job's log file say it once.
    """
    logger = logging.getLogger(MLFLOW_DB_LOGGER)
    if not_a_lost_store not in logger.filters:
        logger.addFilter(not_a_lost_store)
    try:
        yield
    except Exception as error:
        reason = lost_reason(error)
        if reason is None:
            raise
        raise TrackingStoreLost(reason, "".join(traceback.format_exception(error))) from error
