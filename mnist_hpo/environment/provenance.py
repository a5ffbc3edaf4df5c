"""What produced a result: package versions, the code's git commit, the job and its data."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The packages whose versions decide results, recorded with every search and model.
PACKAGES = (
    "mnist-hpo",
    "keras",
    "tensorflow",
    "jax",
    "torch",
    "scikit-learn",
    "scikeras",
    "mlflow",
    "hydra-core",
)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES`, by package name (those not installed left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``, when it is a git work tree."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class Provenance:
    """Everything a search run records about where it came from; tracking names the tags."""

    preset: str
    overrides: list[str]
    output_dir: Path
    data_fingerprint: str
    data_source: str
    train_size: int
    test_size: int
    keras_backend: str
    device: str
    versions: dict[str, str]
    git_commit: str | None
    python: str = field(default_factory=platform.python_version)
