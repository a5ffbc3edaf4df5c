"""Shared fixtures: composed configs, a CLI runner, and one smoke search reused by many tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mnist_hpo.configuration.schema import Config, register_configs, typed

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SMOKE_EPOCHS = 3
SMOKE_FOLDS = 2
SMOKE_CANDIDATES = 2

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
register_configs()


def compose_config(*overrides: str) -> Config:
    """The typed config ``python -m mnist_hpo <overrides>`` would run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return typed(compose("config", overrides=list(overrides)))


def run_cli(
    *args: str, cwd: Path, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_hpo ARGS`` in ``cwd`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mnist_hpo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


# Runs the real CLI and signals its own process the moment the N-th call of a method has returned
# (KILL_TARGET, "module:Class.method"; by default a fit, saved and its fold run closed): the kill
# point is exact however fast the machine is.
KILL_AFTER_CALLS = """
import importlib, os, signal, sys
from mnist_hpo import __main__ as cli_module

module, _, attribute = os.environ["KILL_TARGET"].partition(":")
owner_name, method_name = attribute.split(".")
owner = getattr(importlib.import_module(module), owner_name)
method = getattr(owner, method_name)
returned = []
# A terminal delivers Ctrl-C to a process whose SIGINT is at its default; a shell that starts the
# test run in the background (``pytest &``) hands it down ignored, and Python then keeps ignoring it.
signal.signal(signal.SIGINT, signal.default_int_handler)


def call_then_die(self, *args, **kwargs):
    result = method(self, *args, **kwargs)
    returned.append(self)
    if len(returned) == int(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL")))
    return result


setattr(owner, method_name, call_then_die)
sys.argv = ["mnist_hpo", *sys.argv[1:]]
cli_module.cli()
"""
FIT = "mnist_hpo.execution.estimator:MnistCNNClassifier.fit"


def run_code(code: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``python -c CODE ARGS`` in ``cwd`` with ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )


def run_cli_killed_after(
    calls: int, *args: str, cwd: Path, signal_name: str = "SIGKILL", target: str = FIT
) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_hpo ARGS`` in ``cwd`` until it signals itself after ``calls`` calls of ``target``.

    ``target`` is "module:Class.method" (default: a fit, in-process). SIGKILL (the default) ends it at
    once, as ``kill -9`` does; SIGINT is a Ctrl-C.
    """
    env = {"KILL_TARGET": target, "KILL_AFTER": str(calls), "KILL_SIGNAL": signal_name}
    process = run_code(KILL_AFTER_CALLS, *args, cwd=cwd, env=env)
    if signal_name == "SIGKILL":
        assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    return process


# What the libraries print on their own at start-up (TensorFlow's C++ and absl, MLflow's and alembic's INFO,
# matplotlib's font cache, TensorFlow's retracing notes): none of it may reach a user's terminal.
CHATTER = (
    "absl::InitializeLog",
    "I0000 ",
    "W0000 ",
    "oneDNN custom operations",
    "cuda drivers",
    "cpu_feature_guard",
    "INFO mlflow",
    "INFO alembic",
    "fontManager",
    "triggered tf.function retracing",
)


def chatter_lines(output: str) -> list[str]:
    """The lines of ``output`` that are a library's start-up chatter, not the tool's."""
    return [line for line in output.splitlines() if any(mark in line for mark in CHATTER)]


def store_uri(folder: Path) -> str:
    """The default local store URI for a launch from ``folder``."""
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """The CLI runner."""
    return run_cli


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real smoke search through the CLI, launched from a fresh folder."""
    folder = tmp_path_factory.mktemp("smoke")
    result = run_cli("experiment=smoke", "hydra.run.dir=outputs/smoke", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result
