"""Whether a folder can be written: proved by making it and a file in it, as the stores will."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def probe_writable(folder: Path) -> None:
    """Create ``folder`` (and parents) and a file in it, then remove the file; any failing step raises its OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
    os.close(handle)
    os.unlink(probe)
