"""The key of one fit in the fit store: a hash of everything that decides what the fit learns."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from importlib import metadata
from typing import Any

import joblib
import numpy as np

KEY_FORMAT = 1  # bump when what goes into a key changes: every older entry then misses, never collides
# Backend distributions whose version changes numerics; TensorFlow ships under several names.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tensorflow-intel", "tf-nightly")}


def describe(value: Any) -> str:
    """A stable text for a parameter value, the same in every process and for equal values.

    Callables go by ``module.qualname`` (a repr holds an address), NumPy scalars as Python ones (a
    sampled 0.001 and a grid's 0.001 train alike), lists and tuples alike, mappings by sorted key.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return f"array({value.dtype.str}, {value.shape}, {digest_arrays(value)})"
    if isinstance(value, Mapping):
        return "{" + ", ".join(sorted(f"{describe(k)}: {describe(v)}" for k, v in value.items())) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "[" + ", ".join(describe(item) for item in value) + "]"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def digest_arrays(*arrays: np.ndarray | None) -> str:
    """SHA-256 over each array's dtype, shape and bytes (a header fixes its length, so no two collide)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none\n")
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"array {contiguous.dtype.str} {contiguous.shape}\n".encode())
        # Object arrays hold pointers; joblib hashes their pickled values instead (hashing, never loading).
        data = joblib.hash(contiguous).encode() if contiguous.dtype.hasobject else contiguous.reshape(-1).view(np.uint8)
        digest.update(data)
    return digest.hexdigest()


class KnownRows:
    """The latest fit plan's splits: a fit on rows equal to a split's takes its digest instead of hashing again.

    Comparing a fit's rows with a split's costs a tenth of hashing them (0.7 against 7 ms for 4,000
    images here), and the fit plan hashed every split once. Only references are held: the search's
    ``X`` and ``y`` and each split's row indices; rows compare in chunks, never copied whole.
    """

    CHUNK = 4096  # rows compared at a time

    def __init__(self) -> None:
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.splits: list[tuple[np.ndarray, str]] = []  # (training row indices, their digest)

    def remember(self, X: np.ndarray, y: np.ndarray, splits: Sequence[tuple[np.ndarray, str]]) -> None:
        """Know ``splits`` of ``(X, y)``, each as (row indices, ``digest_arrays(X[rows], y[rows], None)``)."""
        self.x, self.y, self.splits = X, y, list(splits)

    def digest(self, X: np.ndarray, y: np.ndarray) -> str | None:
        """``digest_arrays(X, y, None)`` when ``(X, y)`` equal a known split's rows (dtype and shape too), else None."""
        if self.x is None or self.y is None or not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray):
            return None
        if (X.dtype, X.shape[1:], y.dtype, y.shape[1:]) != (
            self.x.dtype,
            self.x.shape[1:],
            self.y.dtype,
            self.y.shape[1:],
        ):
            return None
        for rows, digest in self.splits:
            if len(rows) != len(X) or not np.array_equal(self.y[rows], y):
                continue
            if all(
                np.array_equal(self.x[rows[at : at + self.CHUNK]], X[at : at + self.CHUNK])
                for at in range(0, len(rows), self.CHUNK)
            ):
                return digest
        return None


KNOWN_ROWS = KnownRows()  # the process' own: the fit plan remembers, the estimator asks


def fit_key(params: Mapping[str, Any], backend: str, versions: Mapping[str, str], *arrays: np.ndarray | None) -> str:
    """The store key of one fit: SHA-256 of everything that decides what it learns.

    hashlib rather than ``joblib.hash``: on a 60000x28x28x1 float32 array sha256 took 125 ms here
    and ``joblib.hash`` (md5) 294 ms.

    Args:
        params: The result-deciding estimator parameters only; the caller filters out the rest.
        backend: The Keras backend name.
        versions: Versions that change numerics, major.minor (see :func:`numerics_versions`).
        *arrays: The exact training arrays (X, y, sample_weight or None), dtype and shape included.

    Returns:
        64 lowercase hex digits.
    """
    return key_from_digest(params, backend, versions, digest_arrays(*arrays))


def key_from_digest(params: Mapping[str, Any], backend: str, versions: Mapping[str, str], data_digest: str) -> str:
    """:func:`fit_key` with the training arrays already digested (:func:`digest_arrays`), for many keys per split."""
    header = {
        "format": KEY_FORMAT,
        "backend": backend,
        "versions": sorted((str(name), str(version)) for name, version in versions.items()),
        "params": [[name, describe(params[name])] for name in sorted(params)],
    }
    return hashlib.sha256(f"{json.dumps(header)}\n{data_digest}".encode()).hexdigest()


def numerics_versions(backend: str) -> dict[str, str]:
    """Major.minor of Keras and the backend's packages: a new release may train to other weights.

    Read from package metadata, so no backend is imported. A package that is not installed is "none".
    """
    return dict(installed_numerics(backend))


@functools.cache
def installed_numerics(backend: str) -> tuple[tuple[str, str], ...]:
    """:func:`numerics_versions` as read once per process: every fit key needs it, and packages do not change."""
    versions = {}
    for package in ("keras", *BACKEND_PACKAGES.get(backend, (backend,))):
        found = "none"
        for distribution in DISTRIBUTIONS.get(package, (package,)):
            with suppress(metadata.PackageNotFoundError):
                found = metadata.version(distribution)
                break
        match = re.match(r"\d+\.\d+", found)
        versions[package] = match.group() if match else found
    return tuple(versions.items())
