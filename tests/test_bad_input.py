"""Every bad input, typed on the real command line: one stderr line naming the key, exit 2, nothing run.

Each case runs the CLI's entry point (``mnist_hpo.__main__.cli``) in this process with the user's
arguments, as ``python -m mnist_hpo ARGS`` would, from a fresh folder: the exit code, the whole of
stderr (file descriptor 2, so nothing written below Python escapes), the store and the fit store are
checked. A few cases also run as real subprocesses, where TensorFlow's start-up noise would show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from mnist_hpo.__main__ import cli


def write_npz(path: Path, **changes: np.ndarray) -> Path:
    """A tiny MNIST-shaped .npz, with some arrays replaced."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
        "y_train": np.tile(np.arange(10), 4),
        "x_test": rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        "y_test": np.tile(np.arange(10), 2),
    } | changes
    np.savez(path, **arrays)
    return path


def fill(text: str, files: dict[str, Path]) -> str:
    """Replace ``<name>`` placeholders with the test's file paths."""
    for name, path in files.items():
        text = text.replace(f"<{name}>", str(path))
    return text


BAD_INPUTS = {
    "study top_m": (["study=smoke", "study.top_m=4"], "study.top_m: 4 must be an integer >= 1 and < 4"),
    "study coarse key": (["study=smoke", "+study.coarse.filters=[1]"], "study.coarse.filters: not an estimator"),
    "fit backend": (["execution.backend=dask"], "execution.backend: unknown value 'dask'; valid: loky, ray"),
    "activation": (
        ["model.activation=softplusx"],
        "model.activation: unknown value 'softplusx'; valid: sigmoid",
    ),
    "loss": (["model.loss=hinge"], "model.loss: unknown value 'hinge'; valid: categorical_crossentropy"),
    "optimizer": (["model.optimizer=adagrad"], "model.optimizer: unknown value 'adagrad'; valid: adam, sgd"),
    "initializer": (["model.kernel_initializer=zeros"], "model.kernel_initializer: unknown value 'zeros'"),
    "batch size": (["model.batch_size=0"], "model.batch_size: 0 must be an integer >= 1"),
    "epochs": (["model.epochs=-1"], "model.epochs: -1 must be an integer >= 1"),
    "folds": (["search.cv=1"], "search.cv: 1 must be an integer >= 2"),
    "empty grid": (["grid=empty"], "grid: the search space is empty"),
    "grid key": (
        ["+grid.model__activaton=[relu]"],
        "grid.model__activaton: not an estimator parameter; valid:",
    ),
    "grid value": (
        ["grid.model__activation=[relu,swishy]"],
        "grid.model__activation: unknown value 'swishy'",
    ),
    "strategy": (
        ["search.strategy=bayes"],
        "search.strategy: unknown value 'bayes'; valid: grid, random, halving",
    ),
    "missing path": (["data.path=/no/such/mnist.npz"], "data.path: /no/such/mnist.npz does not exist"),
    "wrong shape": (["data.path=<wrong_shape>"], "data.path: x_train has shape (40, 28, 27)"),
    "unseen test labels": (["data.path=<bad_labels>"], "data.path: y_test has labels [11] that y_train lacks"),
    "not npz": (["data.path=<not_npz>"], "data.path: <not_npz> is not a readable .npz file"),
    "unreachable store": (["tracking.uri=http://127.0.0.1:9"], "tracking.uri: cannot use the tracking store"),
    "folds beyond the smallest class": (
        ["search.cv=100"],
        "search.cv: 100 folds need at least 100 images of every class; class 5 has 54 of the 600 training images; "
        "lower search.cv or raise data.train_size",
    ),
    "folds on ten images": (["data.train_size=10", "search.cv=2"], "search.cv: 2 folds need at least 2 images"),
    "folds on the study's stage-1 subset": (
        ["study=smoke", "study.stage1_train_size=10", "search.cv=2"],
        "search.cv: 2 folds need at least 2 images of every class; class 0 has 1 of the 10 training images; "
        "lower search.cv or raise study.stage1_train_size",
    ),
    "loguniform low above high": (
        [
            "search.strategy=random",
            "grid=empty",
            "+grid.optimizer__learning_rate={dist: loguniform, low: 0.1, high: 0.001}",
        ],
        "grid.optimizer__learning_rate: loguniform from 0.1 to 0.001; it needs numbers with 0 < low < high",
    ),
    "randint low above high": (
        ["search.strategy=random", "grid=empty", "+grid.batch_size={dist: randint, low: 64, high: 16}"],
        "grid.batch_size: randint from 64 to 16; it needs numbers with low <= high",
    ),
    "empty choice": (
        ["search.strategy=random", "grid=empty", "+grid.model__activation={dist: choice, values: []}"],
        "grid.model__activation: a choice takes exactly dist and values, a non-empty list",
    ),
    "scorer": (["search.scoring=acuracy"], "search.scoring: unknown value 'acuracy'; valid: accuracy"),
    "seed": (["seed=-1"], "seed: -1 must be an integer >= 0 and < 4294967296"),
    "empty experiment": (["tracking.experiment=' '"], "tracking.experiment: the experiment name is empty"),
    "kernel beyond the image": (
        ["model.kernel_size=40", "model.padding=valid"],
        "model.kernel_size: kernel 40 with padding valid, pooling 2 and 1 conv block(s) leaves no pixel",
    ),
    "drawn kernel beyond the feature map": (
        ["search.strategy=random", "+grid.model__kernel_size={dist: randint, low: 3, high: 40}", "model.padding=valid"],
        "grid.model__kernel_size: kernel 40 with padding valid, pooling 2 and 1 conv block(s) leaves no pixel",
    ),
    "fractional kernel drawn": (
        ["search.strategy=random", "+grid.model__kernel_size={dist: uniform, low: 2, high: 5}"],
        "grid.model__kernel_size: 2.0 must be an integer >= 1",
    ),
    "grid kernel beyond the feature map": (
        ["+grid.model__kernel_size=[3,15]", "model.padding=valid", "model.conv_filters=[4,4]"],
        "grid.model__kernel_size: kernel 15 with padding valid, pooling 2 and 2 conv block(s) leaves no pixel",
    ),
    "NaN pixels": (["data.path=<nan_pixels>"], "data.path: x_train holds NaN or infinite pixels"),
    "one class": (["data.path=<one_class>"], "data.path: y_train has one class only (3); a classifier needs two"),
    "pixels out of range": (["data.path=<negative>"], "data.path: x_train must hold pixels in [0, 1] or 0-255"),
    "refit rule": (
        ["search.refit=fastest"],
        "search.refit: unknown value 'fastest'; valid: true, false, best, one_se, tied_fastest",
    ),
    "repeats": (["search.cv_repeats=0"], "search.cv_repeats: 0 must be an integer >= 1"),
    "alpha": (["search.alpha=1.5"], "search.alpha: 1.5 must be a number > 0 and < 1"),
    "rope": (["search.rope=-0.1"], "search.rope: -0.1 must be a number >= 0"),
    "study with halving": (
        ["study=smoke", "search.strategy=halving"],
        "search.strategy: halving cannot run a study's stage 1",
    ),
    "fit store not writable": (
        ["execution.fit_store_dir=<a_file>/fits"],
        "execution.fit_store_dir: <a_file>/fits is not writable (part of the path is a file, not a directory)",
    ),
    "fit store budget": (
        ["execution.fit_store_budget_mb=0"],
        "execution.fit_store_budget_mb: 0 must be an integer >= 1",
    ),
    "store folder where no lock can be made": (
        ["tracking.uri=sqlite:////proc/forbidden.db"],
        "tracking.uri: cannot write the store's folder /proc (No such file or directory)",
    ),
    "corrupted store": (
        ["tracking.uri=sqlite:///<corrupt_db>"],
        "tracking.uri: the store <corrupt_db> is corrupted",
    ),
}


# Mistakes Hydra meets while composing (a key, a type, an option, the override grammar), keys that
# moved, and a multirun whose later job has a bad value: all stop before the first job.
BAD_COMMAND_LINES = {
    "mistyped key": (["model.activaton=relu"], "model.activaton: no such key in model; valid: builder, builder_args,"),
    "unknown top-level key": (["sede=1"], "sede: no such key in the config; valid: model, data, grid,"),
    "grid axis without +": (["grid.model__dense_units=[8]"], "grid.model__dense_units: no such key; to append"),
    "text for a number": (["search.cv=three"], "search.cv: Value 'three' of type 'str' could not be converted to Int"),
    "fraction for an integer seed": (["seed=1.5"], "seed: Value '1.5' of type 'float' could not be converted to Int"),
    "number for a list": (
        ["model.conv_filters=8"],
        "model.conv_filters: 8 is not a list; write",
    ),
    "text for a boolean": (
        ["execution.progress=sometimes"],
        "execution.progress: Value 'sometimes' is not a valid",
    ),
    "unknown model option": (["model=resnet"], "model: unknown option 'resnet'; valid: challenge, leohoji, small_cnn"),
    "unknown preset": (["experiment=leohoj"], "experiment: unknown option 'leohoj'; valid: challenge,"),
    "unclosed list": (["model.conv_filters=[8"], "model.conv_filters=[8: not a valid override"),
    "key without a value": (["model.activation"], "model.activation: not a valid override"),
    "speed key in search": (["search.n_jobs=2"], "search.n_jobs: moved to execution.n_jobs"),
    "journal key": (["search.journal_dir=/tmp/j"], "search.journal_dir: replaced by execution.fit_store_dir"),
    "multirun with a bad later value": (
        ["-m", "model.activation=relu,swishy"],
        "model.activation: unknown value 'swishy'; valid: sigmoid",
    ),
    "multirun with a bad later type": (["-m", "search.cv=2,x"], "search.cv: Value 'x' of type 'str' could not be"),
    "unknown backend": (["backend=mxnet"], "backend: unknown value 'mxnet'; valid: tensorflow, jax, torch"),
    "unknown device": (["device=tpu"], "device: unknown value 'tpu'; valid: auto, cpu, gpu"),
    "no workers": (["execution.n_jobs=0"], "execution.n_jobs: 0 must be a non-zero integer (-1 = all cores)"),
    "negative learning rate": (["model.learning_rate=-0.1"], "model.learning_rate: -0.1 must be a number > 0"),
    "dropout of one": (["model.dropout_dense=1.0"], "model.dropout_dense: 1.0 must be a number >= 0 and < 1"),
    "validation split of one": (["model.validation_split=1.0"], "model.validation_split: 1.0 must be a number"),
    "train size of zero": (["data.train_size=0"], "data.train_size: 0 must be"),
}


def data_files(folder: Path) -> dict[str, Path]:
    """The bad files the cases name: broken data sets, a corrupted store, a file where a folder belongs."""
    files = {
        "wrong_shape": write_npz(folder / "shape.npz", x_train=np.zeros((40, 28, 27), np.uint8)),
        "bad_labels": write_npz(folder / "labels.npz", y_test=np.full(20, 11)),
        "not_npz": folder / "garbage.npz",
        "corrupt_db": folder / "corrupt.db",
        "a_file": folder / "a_file",
        "nan_pixels": write_npz(folder / "nan.npz", x_train=np.full((40, 28, 28), np.nan, np.float32)),
        "one_class": write_npz(folder / "one.npz", y_train=np.full(40, 3)),
        "negative": write_npz(folder / "negative.npz", x_train=np.full((40, 28, 28), -1.0, np.float32)),
    }
    files["a_file"].write_text("not a folder")
    files["not_npz"].write_bytes(b"not a zip file")
    files["corrupt_db"].write_bytes(b"this is not an sqlite database" * 100)
    return files


def assert_nothing_ran(folder: Path) -> None:
    """No store (so no run), no fit in the fit store, no results file."""
    assert not (folder / "mlruns" / "mlflow.db").exists()
    fits = folder / "mlruns" / "fits"
    assert not fits.exists() or not any(path.is_file() for path in fits.rglob("*"))
    assert not list(folder.rglob("cv_results.csv"))


CASES = {name: ("experiment=smoke", *overrides, message) for name, (overrides, message) in BAD_INPUTS.items()}
CASES |= {name: (*overrides, message) for name, (overrides, message) in BAD_COMMAND_LINES.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_naming_the_key_and_nothing_runs(case, tmp_path, monkeypatch, capfd):
    *overrides, message = CASES[case]
    files = data_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    # Hydra's logging set-up (logging.config.dictConfig) would close pytest's own capture handlers
    # in this process; the subprocess test below runs with it.
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", ["mnist_hpo", *(fill(item, files) for item in overrides), *quiet])
    with pytest.raises(SystemExit) as exited:
        cli()
    stderr = capfd.readouterr().err
    assert exited.value.code == 2, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"error: {fill(message, files)}"), stderr
    assert_nothing_ran(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [["model.activaton=relu"], ["experiment=smoke", "data.path=<nan_pixels>"], ["-m", "model.activation=relu,swishy"]],
)
def test_a_real_process_prints_one_line_and_exits_2(overrides, tmp_path):
    files = data_files(tmp_path)
    finished = run_cli(*(fill(item, files) for item in overrides), cwd=tmp_path, timeout=120)
    assert finished.returncode == 2
    assert len(finished.stderr.splitlines()) == 1 and finished.stderr.startswith("error: "), finished.stderr
    assert_nothing_ran(tmp_path)
