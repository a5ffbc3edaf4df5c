"""A persistent store of finished (candidate, fold) fits as data-only ``.npz`` files, so no fit is trained twice."""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import logging
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from mnist_hpo.configuration.schema import STORE_DIR, ConfigError
from mnist_hpo.environment.folders import probe_writable

# Logging, not ``warnings``: one line with no echoed source line, never deduplicated, into Hydra's job
# log in the main process, and on stderr in loky workers through logging's last-resort handler.
log = logging.getLogger(__name__)
UNSAVED_FOLDERS: set[Path] = set()  # fit store folders this process failed to save into (warned once each)

FITS_SUBDIR = "fits"  # the store's folder inside the tracking store folder
FORMAT = 1
KEY = re.compile(r"[0-9a-f]{64}")
ENTRY = re.compile(r"([0-9a-f]{64})\.npz")
TEMPORARY = re.compile(r"\.[0-9a-f]{64}\..+\.tmp")
STALE_TEMPORARY_S = 3600  # a write takes milliseconds: an older temporary file is a killed writer's
NUMERIC_KINDS = frozenset("biufc")
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class StoredFit:
    """One finished fit: what rebuilds the fitted estimator, and nothing that could run code."""

    weights: list[np.ndarray]
    history: dict[str, list[float]]
    meta: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class EntryInfo:
    """One entry on disk, as its file system metadata tells it (the file is not opened)."""

    key: str
    path: Path
    bytes: int
    last_used: datetime
    created: datetime


@dataclass(frozen=True)
class StoreSummary:
    """The store at a glance: how many fits, how many bytes, the oldest and newest fit."""

    fits: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None


class BadEntryError(Exception):
    """An entry file that is not what this store writes; its message is the one-line reason."""


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def _read_entry(file: IO[bytes], key: str) -> StoredFit:
    """Parse and verify one open entry file; anything unexpected raises :class:`BadEntryError`."""
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        raise BadEntryError("not a regular file")
    magic = file.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        raise BadEntryError("empty file" if not magic else "not an npz archive")
    file.seek(0)
    try:
        # allow_pickle=False: an object array raises instead of unpickling, whatever the file says.
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # a damaged archive fails in many ways (zipfile, zlib, numpy, EOF)
        raise BadEntryError(f"unreadable archive ({type(error).__name__}: {error})") from error
    weights = sorted(name for name in arrays if name.startswith("weight_"))
    expected = {"meta", "checksum", *(f"weight_{index:03d}" for index in range(len(weights)))}
    if set(arrays) != expected:
        raise BadEntryError(f"unexpected arrays {sorted(set(arrays) ^ expected)}")
    if any(array.dtype.kind not in NUMERIC_KINDS for array in arrays.values()):
        raise BadEntryError("holds a non-numeric array")
    stored = arrays.pop("checksum")
    if stored.dtype != np.uint8 or stored.tobytes() != _checksum(arrays).encode("ascii"):
        raise BadEntryError("checksum mismatch")
    try:
        envelope = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if envelope["format"] != FORMAT or envelope["key"] != key:
            raise ValueError(f"format {envelope['format']!r}, key {envelope['key']!r}")
        history = {str(name): [float(value) for value in values] for name, values in envelope["history"].items()}
        return StoredFit(
            weights=[arrays[f"weight_{index:03d}"] for index in range(len(weights))],
            history=history,
            meta=dict(envelope["meta"]),
            created=datetime.fromisoformat(envelope["created"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BadEntryError(f"bad metadata ({type(error).__name__}: {error})") from error


def _os_reason(error: OSError) -> str:
    """A short reason for a file system error, in the user's words."""
    reasons = {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOTDIR: "part of the path is a file, not a directory",
        errno.EEXIST: "it exists and is not a directory",
        errno.ENOSPC: "no space left on the device",
        errno.ELOOP: "it is a symbolic link",
        errno.ENOENT: "the folder cannot be created there",
    }
    return reasons.get(error.errno or 0, error.strerror or str(error))


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


class FitStore:
    """The folder of finished fits that every search, study and sweep of one tracking store shares.

    Each entry is ``<folder>/<key[:2]>/<key>.npz``; its access time is its last use and its
    modification time its creation (both set here), so listing, pruning and eviction never open a file.
    """

    def __init__(
        self, folder: str | Path, budget_bytes: int | None = None, key_name: str = "execution.fit_store_dir"
    ) -> None:
        """Open (not create) a store.

        Args:
            folder: The fits folder, usually ``<tracking store folder>/fits``.
            budget_bytes: Evict least-recently-used entries past this many bytes; None: no limit.
            key_name: The config key that names ``folder``, for :meth:`check_writable`'s error.
        """
        if budget_bytes is not None and budget_bytes <= 0:
            # 0 would mean "write, then evict at once": switching the store off is the caller's job.
            raise ValueError(f"budget_bytes: {budget_bytes} must be positive, or None for no limit")
        self.folder = Path(folder)
        self.budget_bytes = budget_bytes
        self.key_name = key_name
        self.save_error: str | None = None  # why the last save failed

    def path(self, key: str) -> Path:
        """Where ``key``'s entry lives; a key is 64 hex digits, so it can never name another path."""
        if not KEY.fullmatch(key):
            raise ValueError(f"fit store key {key!r} is not 64 lowercase hex digits")
        return self.folder / key[:2] / f"{key}.npz"

    def check_writable(self) -> None:
        """Prove the folder can be written by creating and removing a file; else a one-line ConfigError."""
        check_writable(self.folder, self.key_name, "the fit store needs a folder it can write, or switch the store off")

    def load(self, key: str) -> StoredFit | None:
        """The fit saved under ``key``, or None; a bad entry is logged once, removed and never raised."""
        path = self.path(key)
        try:
            # O_NOFOLLOW: an entry is a file this store wrote, never a link to somewhere else.
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            self._discard(path, None, _os_reason(error))
            return None
        with os.fdopen(descriptor, "rb") as file:
            opened = os.fstat(file.fileno())
            try:
                fit = _read_entry(file, key)
            except (BadEntryError, OSError) as error:
                reason = str(error) if isinstance(error, BadEntryError) else _os_reason(error)
                self._discard(path, opened, reason)
                return None
            # Mark the inode just read as used, keeping its creation time; another's file is not ours to judge.
            with suppress(OSError):
                os.utime(file.fileno(), ns=(time.time_ns(), opened.st_mtime_ns))
        return fit

    def save(
        self, key: str, weights: Sequence[np.ndarray], history: Mapping[str, Sequence[float]], meta: Mapping[str, Any]
    ) -> bool:
        """Save one finished fit atomically, then evict past the budget.

        Args:
            key: The fit's :func:`fit_key`.
            weights: ``keras.Model.get_weights()``: numeric arrays only.
            history: Per-epoch values of each metric.
            meta: JSON-able facts about the fit, kept as given (the estimator writes its classes, sample count and
                fit time; the fused executor also its group and the search that trained it).

        Returns:
            Whether it was written: a file system error is logged, not raised, as the fit itself succeeded.
        """
        path = self.path(key)
        arrays = {f"weight_{index:03d}": np.asarray(weight) for index, weight in enumerate(weights)}
        if any(array.dtype.kind not in NUMERIC_KINDS for array in arrays.values()):
            raise TypeError("fit store weights must be numeric arrays")
        envelope = {
            "format": FORMAT,
            "key": key,
            "created": datetime.now(UTC).isoformat(),
            "history": {str(name): [float(value) for value in values] for name, values in history.items()},
            "meta": dict(meta),
        }
        arrays["meta"] = np.frombuffer(json.dumps(envelope, sort_keys=True).encode(), dtype=np.uint8)
        arrays["checksum"] = np.frombuffer(_checksum(arrays).encode("ascii"), dtype=np.uint8)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    np.savez(file, **arrays)  # uncompressed: 8% smaller compressed, but 18x slower to write
                    file.flush()
                    os.fsync(file.fileno())
                    # Explicit times: the kernel's file clock ticks too coarsely to order quick saves.
                    now = time.time_ns()
                    os.utime(file.fileno(), ns=(now, now))
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            self.save_error = _os_reason(error)
            # Once per process and folder: a full disk fails every later fit the same way, and the search's
            # end line counts them (tracking/search_run.py); the rest go to the log at debug level.
            first = self.folder not in UNSAVED_FOLDERS
            UNSAVED_FOLDERS.add(self.folder)
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "fit store: could not save %s (%s); the fit stands, but is not stored%s",
                path,
                self.save_error,
                "; later fits that cannot be saved are counted at the end" if first else "",
            )
            return False
        self._evict()
        return True

    def entries(self) -> list[EntryInfo]:
        """Every entry, by file system metadata alone: no file is opened, whatever its name."""
        return list(self._scan())

    def summary(self) -> StoreSummary:
        """How many fits and bytes the store holds, and when its oldest and newest fit were made."""
        entries = self.entries()
        created = [entry.created for entry in entries]
        return StoreSummary(
            len(entries), sum(entry.bytes for entry in entries), min(created, default=None), max(created, default=None)
        )

    def prune(self, older_than: datetime | None = None) -> list[EntryInfo]:
        """Remove the entries last used before ``older_than`` (naive means local time), or all for None; return them."""
        limit = None if older_than is None else older_than.timestamp()
        removed = []
        for entry in self._scan(clean_temporaries=True):
            if limit is None or entry.last_used.timestamp() < limit:
                with suppress(FileNotFoundError):
                    entry.path.unlink()
                    removed.append(entry)
        return removed

    def _discard(self, path: Path, opened: os.stat_result | None, reason: str) -> None:
        """Log one line for a bad entry and remove it, unless another process has replaced it since."""
        try:
            current = os.stat(path, follow_symlinks=False)
            if opened is not None and (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                outcome = "another process has replaced it since"
            else:
                os.unlink(path)
                outcome = "removed it, so the fit is trained again"
        except FileNotFoundError:
            outcome = "another process has removed it"
        except OSError as error:
            outcome = f"could not remove it ({_os_reason(error)})"
        log.warning("fit store: ignored %s: %s; %s", path, " ".join(reason.split()), outcome)

    def _evict(self) -> None:
        """Remove least-recently-used entries until the store fits its budget."""
        if self.budget_bytes is None:
            return
        entries = sorted(self._scan(clean_temporaries=True), key=lambda entry: (entry.last_used, entry.created))
        total = sum(entry.bytes for entry in entries)
        for entry in entries:
            if total <= self.budget_bytes:
                break
            # Another process may have evicted or replaced it meanwhile: gone either way, or fresh and retrained.
            with suppress(OSError):
                entry.path.unlink()
            total -= entry.bytes

    def _scan(self, clean_temporaries: bool = False) -> Iterator[EntryInfo]:
        """Yield the entries (``stat`` only), tolerating files that vanish while it looks."""
        try:
            shards = [item for item in os.scandir(self.folder) if re.fullmatch(r"[0-9a-f]{2}", item.name)]
        except (FileNotFoundError, NotADirectoryError):
            return
        stale = time.time() - STALE_TEMPORARY_S
        for shard in shards:
            try:
                files = list(os.scandir(shard.path))
            except OSError:
                continue
            for file in files:
                try:
                    info = file.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if clean_temporaries and TEMPORARY.fullmatch(file.name) and info.st_mtime < stale:
                    with suppress(OSError):
                        os.unlink(file.path)
                match = ENTRY.fullmatch(file.name)
                if match and match.group(1).startswith(shard.name) and stat.S_ISREG(info.st_mode):
                    yield EntryInfo(
                        match.group(1), Path(file.path), info.st_size, _utc(info.st_atime_ns), _utc(info.st_mtime_ns)
                    )


def human_bytes(count: int) -> str:
    """``1821726`` as ``1.8 MB`` (decimal units, as disk sizes are sold)."""
    size = float(count)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def check_writable(folder: Path, key_name: str, remedy: str) -> None:
    """Prove ``folder`` can be written by creating and removing a file; else a ConfigError naming ``key_name``."""
    try:
        probe_writable(folder)
    except OSError as error:
        raise ConfigError(f"{key_name}: {folder} is not writable ({_os_reason(error)}); {remedy}") from error


def _iso_date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date such as 2026-11-01") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mnist_hpo.execution.fit_store``: list the fit store or prune it."""
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(prog="python -m mnist_hpo.execution.fit_store", description=main.__doc__)
    parser.add_argument("--store-dir", default=STORE_DIR, help=f"the tracking store folder (default: {STORE_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="how many fits the store holds, their size and age")
    prune = commands.add_parser("prune", help="remove stored fits")
    which = prune.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="remove every fit")
    which.add_argument("--older-than", type=_iso_date, metavar="DATE", help="remove fits last used before DATE")
    args = parser.parse_args(argv)

    folder = Path(args.store_dir) / FITS_SUBDIR
    if folder.exists() and not folder.is_dir():
        parser.error(f"--store-dir: {folder} is not a directory")
    store = FitStore(folder)
    console = Console()
    if args.command == "list":
        summary = store.summary()
        if not summary.fits:
            console.print(f"The fit store {folder} is empty.")
            return 0
        table = Table(title=f"Fit store {folder}")
        for column in ("fits", "size", "oldest", "newest"):
            table.add_column(column, justify="right" if column in ("fits", "size") else "left")
        when = [moment.astimezone().strftime("%Y-%m-%d %H:%M") for moment in (summary.oldest, summary.newest) if moment]
        table.add_row(str(summary.fits), human_bytes(summary.bytes), *when)
        console.print(table)
        return 0
    removed = store.prune(None if args.all else args.older_than)
    scope = "" if args.all else f" last used before {args.older_than:%Y-%m-%d %H:%M}"
    fits = f"{len(removed)} fit{'' if len(removed) == 1 else 's'}"
    console.print(f"Removed {fits}{scope} ({human_bytes(sum(entry.bytes for entry in removed))}) from {folder}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
