"""The package as a user installs it: a wheel, a fresh environment, an empty folder outside the checkout.

The wheel is built from this checkout (``pip wheel``, no network) and installed into a new virtual
environment; the project comes only from the wheel, its dependencies from this environment (a path
entry to its site-packages: there is no network to install them from, and its editable install of
the project is not activated there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from conftest import chatter_lines, compose_config

from mnist_hpo.dispatch import run
from mnist_hpo.session import JobContext

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh virtual environment with the project installed from its wheel."""
    dist = tmp_path_factory.mktemp("dist")
    # Built from a copy: setuptools writes build/ and egg-info into the tree it builds.
    source = tmp_path_factory.mktemp("source") / "mnist-hpo"
    ignored = (".git", ".venv", "build", "dist", "mlruns", "outputs", "multirun", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*ignored))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("mnist_hpo-*.whl")
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    Path(purelib.decode().strip(), "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = subprocess.check_output(
        [str(python), "-c", "import mnist_hpo; print(mnist_hpo.__file__)"], cwd=venv, text=True
    )
    assert where.startswith(str(venv)), where  # the wheel's copy, not this checkout
    return python


def run_installed(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mnist_hpo ARGS`` with the installed package, from ``cwd``."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"} | {"COLUMNS": "160"}
    return subprocess.run(
        [str(python), "-m", "mnist_hpo", *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )


def scores(path: Path) -> dict[str, float]:
    frame = pd.read_csv(path)
    return dict(zip(frame["params"], frame["mean_test_score"], strict=True))


def test_the_default_job_runs_from_an_installed_wheel_in_an_empty_folder(wheel_python, tmp_path):
    # Given an empty folder outside the checkout, and the default job run from the checkout for reference
    folder = tmp_path / "empty"
    folder.mkdir()
    reference = tmp_path / "reference"
    run(compose_config(), JobContext(launch_dir=reference, output_dir=reference / "out"))
    # When the installed package runs its default job there
    result = run_installed(wheel_python, cwd=folder)
    # Then it succeeds with the same scores, its store and outputs in that folder
    assert result.returncode == 0, result.stderr[-3000:]
    assert chatter_lines(result.stdout + result.stderr) == []  # the first lines the user sees are the tool's
    (csv,) = (folder / "outputs").rglob("cv_results.csv")
    assert scores(csv) == pytest.approx(scores(reference / "out" / "cv_results.csv"), abs=1e-9)
    assert (folder / "mlruns" / "mlflow.db").is_file()


def test_a_users_own_grid_and_preset_plug_into_the_installed_package(wheel_python, tmp_path):
    # Given a folder of the user's own configs: a new grid and a new experiment preset using it
    mine = tmp_path / "my-configs"
    (mine / "grid").mkdir(parents=True)
    (mine / "experiment").mkdir()
    (mine / "grid" / "mine.yaml").write_text("batch_size: [16, 48]\n")
    (mine / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - override /model: small_cnn\n"
        "  - override /grid: mine\n"
        "model: {conv_filters: [4], dense_units: 16, epochs: 1}\n"
        "data: {train_size: 300, test_size: 100}\n"
        "search: {cv: 2}\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    # When the installed package runs the preset, the folder given by Hydra's --config-dir
    result = run_installed(wheel_python, "--config-dir", str(mine), "experiment=mine", cwd=work)
    # Then the search ran the user's grid
    assert result.returncode == 0, result.stderr[-3000:]
    (csv,) = (work / "outputs").rglob("cv_results.csv")
    assert sorted(pd.read_csv(csv)["param_batch_size"]) == [16, 48]
