"""What produced a result: package versions, the code's git commit, the job and its data."""

from __future__ import annotations

import functools
import platform
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

PROJECT = "mnist-hpo"
# The libraries whose versions decide results, by the module they are imported as: each is recorded
# under the distribution that installed it (tensorflow, tensorflow-cpu or tensorflow-macos alike).
MODULES = ("keras", "tensorflow", "jax", "torch", "sklearn", "scikeras", "mlflow", "hydra", "optuna")


def package_versions() -> dict[str, str]:
    """Installed versions, by distribution: this project, then those providing :data:`MODULES` (if installed)."""
    return dict(installed_versions())


@functools.cache
def installed_versions() -> dict[str, str]:
    """:func:`package_versions`, read once per process: finding each module's distribution reads every
    installed distribution's file list (0.9 s here), and installs do not change under a running search.
    """
    versions = {}
    with suppress(PackageNotFoundError):
        versions[PROJECT] = version(PROJECT)
    providers = packages_distributions()
    for module in MODULES:
        for name in providers.get(module, []):
            versions[name] = version(name)
    return versions


def model_requirements(versions: dict[str, str]) -> list[str]:
    """A logged model's pip requirements: each recorded library pinned, this project left out.

    mnist-hpo is on no package index, so a pin on it could not be installed; the model loads where
    the package is installed (README, "Browse the results").
    """
    return [f"{name}=={installed}" for name, installed in versions.items() if name != PROJECT]


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
