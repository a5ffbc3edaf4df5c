"""A journal of finished fits, so an interrupted search trains only what it had not finished.

Every successful fit of an estimator that names a journal folder is pickled there under a key
made of everything that decides its result: the estimator's parameters, the Keras backend and
the exact training data. A later fit with the same key loads it instead of training. Writes are
atomic (a temporary file, then a rename), so a ``kill -9`` mid-write leaves no half entry.
The runner deletes a search's journal once the search has finished.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = ".fit.pkl"


def describe(value: Any) -> str:
    """A stable text for a parameter value (functions by their qualified name)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def fit_key(params: dict[str, Any], backend: str, *arrays: np.ndarray | None) -> str:
    """The journal key of one fit: a hash of its result-deciding parameters, backend and training data."""
    digest = hashlib.sha256(backend.encode())
    for name in sorted(params):
        digest.update(f"{name}={describe(params[name])};".encode())
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype}{contiguous.shape}".encode())
        digest.update(memoryview(contiguous).cast("B"))
    return digest.hexdigest()[:32]


class FitJournal:
    """One search's folder of finished fits."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def load(self, key: str) -> Any | None:
        """The fitted estimator saved under ``key``, or None (unreadable entries count as absent)."""
        try:
            with self.path(key).open("rb") as file:
                return pickle.load(file)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    def save(self, key: str, estimator: Any) -> None:
        """Save a fitted estimator under ``key``, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                pickle.dump(estimator, file, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.path(key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def entries(self) -> int:
        """How many finished fits the journal holds."""
        return len(list(self.folder.glob(f"*{SUFFIX}"))) if self.folder.is_dir() else 0

    def clear(self) -> None:
        """Delete the journal: its search has finished and MLflow holds the results."""
        shutil.rmtree(self.folder, ignore_errors=True)
