"""Every bad input, typed on the real command line: one stderr line naming the key, exit 2, nothing run.

Each case runs the CLI's entry point (``mnist_hpo.__main__.cli``) in this process with the user's
arguments, as ``python -m mnist_hpo ARGS`` would, from a fresh folder: the exit code, the whole of
stderr (file descriptor 2, so nothing written below Python escapes), the store and the fit store are
checked. A few cases also run as real subprocesses, where TensorFlow's start-up noise would show.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from mnist_hpo.__main__ import cli
from mnist_hpo.data.loading import IDX_FILES


def tiny_arrays() -> dict[str, np.ndarray]:
    """MNIST-shaped arrays, four images of each digit to train on and two to test."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
        "y_train": np.tile(np.arange(10), 4),
        "x_test": rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        "y_test": np.tile(np.arange(10), 2),
    }


def write_npz(path: Path, **changes: np.ndarray) -> Path:
    """A tiny MNIST-shaped .npz, with some arrays replaced."""
    np.savez(path, **(tiny_arrays() | changes))
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as an .npy file's bytes."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` as an IDX file of unsigned bytes: MNIST's distribution format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, damage: str) -> Path:
    """A folder of MNIST's four gzipped IDX files (tiny), one of them damaged as a real one can be."""
    arrays = {IDX_FILES[key]: array for key, array in tiny_arrays().items()}
    folder.mkdir()
    for name, array in arrays.items():
        payload = idx_bytes(array)
        if name == "train-labels-idx1-ubyte" and damage == "one label short":
            payload = idx_bytes(array[:-1])
        if name == "t10k-images-idx3-ubyte" and damage == "dimensions lie":  # 20 images declared as 21
            payload = payload[:4] + (21).to_bytes(4, "big") + payload[8:]
        if name == "t10k-labels-idx1-ubyte" and damage == "float type":  # IDX type 0x0d: 4-byte floats
            payload = payload[:2] + b"\x0d" + payload[3:]
        compressed = gzip.compress(payload)
        if name == "train-images-idx3-ubyte" and damage == "download cut short":
            compressed = compressed[: len(compressed) // 2]
        (folder / f"{name}.gz").write_bytes(compressed)
    return folder


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
        ["+grid.activaton=[relu]"],
        "grid.activaton: not an estimator parameter; valid:",
    ),
    "grid key the estimator keeps for how it runs": (
        ["+grid.fit_store=[true]"],
        "grid.fit_store: not a hyperparameter (it says how a fit runs, not what it learns); valid: conv_filters,",
    ),
    "grid value": (
        ["grid.activation=[relu,swishy]"],
        "grid.activation: unknown value 'swishy'",
    ),
    "strategy": (
        ["search.strategy=bayes"],
        "search.strategy: unknown value 'bayes'; valid: grid, random, halving, optuna",
    ),
    "Optuna sampler": (
        ["search.strategy=optuna", "search.sampler=bohb"],
        "search.sampler: unknown value 'bohb'; valid: tpe, gp, cmaes, random",
    ),
    "Optuna trials": (["search.strategy=optuna", "search.n_iter=0"], "search.n_iter: 0 must be an integer >= 1"),
    "Optuna batch": (
        ["search.strategy=optuna", "search.trials_per_batch=0"],
        "search.trials_per_batch: 0 must be an integer >= 1",
    ),
    "CMA-ES over a list": (
        [
            "search.strategy=optuna",
            "search.sampler=cmaes",
            "grid=empty",
            "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.01}",
            "+grid.activation=[relu,tanh]",
        ],
        "grid.activation: search.sampler=cmaes samples numeric distributions only "
        "(uniform, loguniform, randint); use search.sampler=tpe, gp or random for lists",
    ),
    "CMA-ES on one axis": (
        [
            "search.strategy=optuna",
            "search.sampler=cmaes",
            "grid=empty",
            "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.01}",
        ],
        "search.sampler: cmaes needs two or more numeric axes, the grid has 1; use tpe, gp or random",
    ),
    "Optuna over a bad distribution": (
        ["search.strategy=optuna", "grid=empty", "+grid.learning_rate={dist: loguniform, low: 0, high: 1}"],
        "grid.learning_rate: loguniform from 0 to 1; it needs numbers with 0 < low < high",
    ),
    "study with Optuna": (
        ["study=smoke", "search.strategy=optuna"],
        "search.strategy: optuna cannot run a study's stage 1",
    ),
    "missing path": (["data.path=/no/such/mnist.npz"], "data.path: /no/such/mnist.npz does not exist"),
    "path as a source": (["data.source=path"], "data.source: path is not a source; set data.path"),
    "wrong shape": (["data.path=<wrong_shape>"], "data.path: <wrong_shape>: x_train has shape (40, 28, 27)"),
    "unseen test labels": (
        ["data.path=<bad_labels>"],
        "data.path: <bad_labels>: y_test has labels [11] that y_train lacks",
    ),
    "not npz": (["data.path=<not_npz>"], "data.path: <not_npz> is not a readable .npz file"),
    "npz cut short": (
        ["data.path=<cut_npz>"],
        "data.path: <cut_npz> is not a readable .npz file: no zip directory in its",
    ),
    "npz with a changed byte": (
        ["data.path=<flipped_npz>"],
        "data.path: <flipped_npz>: x_train.npy is damaged (Bad CRC-32 for file 'x_train.npy')",
    ),
    "npz whose array header lies": (
        ["data.path=<lying_npz>"],
        "data.path: <lying_npz>: x_test.npy is cut short: (20, 28, 28) uint8 is 15,680 bytes, it holds 15,000",
    ),
    "npz holding a pickle": (
        ["data.path=<pickle_npz>"],
        "data.path: <pickle_npz>: y_test.npy holds Python objects (object); data arrays hold numbers, never pickles",
    ),
    "npz with a label short": (
        ["data.path=<short_npz>"],
        "data.path: <short_npz>: y_train has 39 labels and x_train 40 images; each image needs one label",
    ),
    "gzipped IDX download cut short": (
        ["data.path=<idx_cut>"],
        "data.path: <idx_cut>/train-images-idx3-ubyte.gz is cut short: its gzip stream ends before its end marker",
    ),
    "IDX dimensions that lie": (
        ["data.path=<idx_dims>"],
        "data.path: <idx_dims>/t10k-images-idx3-ubyte.gz is cut short: its header declares 21 x 28 x 28 = 16,464 "
        "bytes, it holds 15,680",
    ),
    "IDX of floats": (
        ["data.path=<idx_float>"],
        "data.path: <idx_float>/t10k-labels-idx1-ubyte.gz holds IDX type 0x0d; images and labels must be unsigned",
    ),
    "IDX labels one short": (
        ["data.path=<idx_short>"],
        "data.path: <idx_short>/train-labels-idx1-ubyte.gz has 39 labels and <idx_short>/train-images-idx3-ubyte.gz "
        "40 images; each image needs one label",
    ),
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
            "+grid.learning_rate={dist: loguniform, low: 0.1, high: 0.001}",
        ],
        "grid.learning_rate: loguniform from 0.1 to 0.001; it needs numbers with 0 < low < high",
    ),
    "randint low above high": (
        ["search.strategy=random", "grid=empty", "+grid.batch_size={dist: randint, low: 64, high: 16}"],
        "grid.batch_size: randint from 64 to 16; it needs numbers with low <= high",
    ),
    "empty choice": (
        ["search.strategy=random", "grid=empty", "+grid.activation={dist: choice, values: []}"],
        "grid.activation: a choice takes exactly dist and values, a non-empty list",
    ),
    "scorer": (["search.scoring=acuracy"], "search.scoring: unknown value 'acuracy'; valid: accuracy"),
    "seed": (["seed=-1"], "seed: -1 must be an integer >= 0 and < 4294967296"),
    "empty experiment": (["tracking.experiment=' '"], "tracking.experiment: the experiment name is empty"),
    "kernel beyond the image": (
        ["model.kernel_size=40", "model.padding=valid"],
        "model.kernel_size: kernel 40 with padding valid, pooling 2 and 1 conv block(s) leaves no pixel",
    ),
    "drawn kernel beyond the feature map": (
        ["search.strategy=random", "+grid.kernel_size={dist: randint, low: 3, high: 40}", "model.padding=valid"],
        "grid.kernel_size: kernel 40 with padding valid, pooling 2 and 1 conv block(s) leaves no pixel",
    ),
    "fractional kernel drawn": (
        ["search.strategy=random", "+grid.kernel_size={dist: uniform, low: 2, high: 5}"],
        "grid.kernel_size: 2.0 must be an integer >= 1",
    ),
    "grid kernel beyond the feature map": (
        ["+grid.kernel_size=[3,15]", "model.padding=valid", "model.conv_filters=[4,4]"],
        "grid.kernel_size: kernel 15 with padding valid, pooling 2 and 2 conv block(s) leaves no pixel",
    ),
    "NaN pixels": (["data.path=<nan_pixels>"], "data.path: <nan_pixels>: x_train holds NaN or infinite pixels"),
    "one class": (
        ["data.path=<one_class>"],
        "data.path: <one_class>: y_train has one class only (3); a classifier needs two",
    ),
    "pixels out of range": (
        ["data.path=<negative>"],
        "data.path: <negative>: x_train must hold pixels in [0, 1] or 0-255",
    ),
    "refit rule": (
        ["search.refit=fastest"],
        "search.refit: unknown value 'fastest'; valid: true, false, best, one_se, tied_fastest",
    ),
    "repeats": (["search.cv_repeats=0"], "search.cv_repeats: 0 must be an integer >= 1"),
    "alpha": (["search.alpha=1.5"], "search.alpha: 1.5 must be a number > 0 and < 1"),
    "rope": (["search.rope=-0.1"], "search.rope: -0.1 must be a number >= 0"),
    "halving beyond the data": (
        ["search.strategy=halving", "search.min_resources=100000"],
        "search.min_resources: 100000 training images at the first iteration, more than the 600 training images "
        "there are; the largest value allowed is 600",
    ),
    "halving beyond the epochs": (
        ["search.strategy=halving", "search.resource=epochs", "search.min_resources=7", "model.epochs=3"],
        "search.min_resources: 7 epochs at the first iteration, more than model.epochs=3; the largest value allowed "
        "is 3",
    ),
    "halving fits too small to learn every class": (
        ["search.strategy=halving", "search.min_resources=12"],
        "search.min_resources: 12 of the 600 training images leave a first-iteration fit 6 images to train on and "
        "6 to score, for 10 classes; the smallest value allowed is",
    ),
    "halving with candidates and resources both exhausted": (
        [
            "search.strategy=halving",
            "grid=empty",
            "+grid.learning_rate={dist: loguniform, low: 1e-4, high: 1e-2}",
        ],
        "search.n_candidates: exhaust counts candidates from search.min_resources, which is exhaust too",
    ),
    "halving's smallest start beyond the data": (
        ["search.strategy=halving", "search.cv=5", "data.train_size=90"],
        "search.min_resources: exhaust starts at 100 training images (2 x 5 splits x 10 classes), more than the 90 "
        "there are; raise data.train_size or lower search.cv",
    ),
    "experiment name beyond MLflow's limit": (
        [f"tracking.experiment={'x' * 600}"],
        "tracking.experiment: the name has 600 characters; MLflow takes at most 500",
    ),
    "registered model name MLflow refuses": (
        ["tracking.registered_model_name=team/cnn"],
        "tracking.registered_model_name: 'team/cnn'; MLflow model names are non-empty and contain no '/' or ':'",
    ),
    "worker threads on Ray": (
        ["execution.backend=ray", "execution.worker_threads=2"],
        "execution.worker_threads: 2 applies to loky's worker processes, not to execution.backend=ray; size Ray's "
        "actors with execution.ray.ray_remote_args",
    ),
    "worker memory ceiling on Ray": (
        ["execution.backend=ray", "execution.worker_max_growth_mb=500"],
        "execution.worker_max_growth_mb: 500 applies to loky's worker processes, not to execution.backend=ray",
    ),
    "GPU share on Ray": (
        ["execution.backend=ray", "execution.gpu_memory_fraction=0.5"],
        "execution.gpu_memory_fraction: 0.5 applies to loky's worker processes, not to execution.backend=ray",
    ),
    "study with halving": (
        ["study=smoke", "search.strategy=halving"],
        "search.strategy: halving cannot run a study's stage 1",
    ),
    "fit store not writable": (
        ["execution.fit_store_dir=<a_file>/fits"],
        "execution.fit_store_dir: <a_file>/fits is not writable (part of the path is a file, not a directory)",
    ),
    "Optuna study folder not writable": (
        [
            "search.strategy=optuna",
            "grid=empty",
            "+grid.activation=[relu,tanh]",
            "tracking=off",
            "tracking.store_dir=<a_file>",
            "execution.fit_store=false",
        ],
        "tracking.store_dir: <a_file>/optuna is not writable (part of the path is a file, not a directory); "
        "the Optuna study is kept there; choose a writable folder",
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
    "grid axis without +": (["grid.dense_units=[8]"], "grid.dense_units: no such key; to append"),
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
    "own config folder that does not exist": (
        ["--config-dir", "/no/such/my-configs", "experiment=mine"],
        "--config-dir: /no/such/my-configs is not a folder; give the folder holding your own config groups",
    ),
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
    files["cut_npz"] = write_npz(folder / "cut.npz")
    files["cut_npz"].write_bytes(files["cut_npz"].read_bytes()[:20000])  # a download cut short
    files["flipped_npz"] = write_npz(folder / "flipped.npz")  # one byte of x_train's pixels changed
    flipped = bytearray(files["flipped_npz"].read_bytes())
    flipped[5000] ^= 0xFF
    files["flipped_npz"].write_bytes(bytes(flipped))
    files["lying_npz"] = folder / "lying.npz"  # a zip whose x_test.npy holds 680 bytes fewer than its header says
    with np.load(write_npz(folder / "whole.npz")) as arrays, zipfile.ZipFile(files["lying_npz"], "w") as archive:
        for key in arrays.files:
            data = npy_bytes(arrays[key])
            archive.writestr(f"{key}.npy", data[:-680] if key == "x_test" else data)
    files["pickle_npz"] = write_npz(folder / "pickle.npz", y_test=np.array([3, "three", None], dtype=object))
    files["short_npz"] = write_npz(folder / "short.npz", y_train=np.tile(np.arange(10), 4)[:-1])
    for name, damage in (
        ("idx_cut", "download cut short"),
        ("idx_dims", "dimensions lie"),
        ("idx_float", "float type"),
        ("idx_short", "one label short"),
    ):
        files[name] = write_idx_set(folder / name, damage)
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


# An Optuna sampler whose package is not installed here (torch for gp, cmaes for cmaes: neither is in
# the dev extra) stops in one line; where one is installed, that sampler is not a bad input.
MISSING_SAMPLER_PACKAGES = {
    f"Optuna {sampler} without {package}": (
        [
            "search.strategy=optuna",
            f"search.sampler={sampler}",
            "grid=empty",
            "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.01}",
            "+grid.dense_units={dist: randint, low: 8, high: 64}",
        ],
        f"search.sampler: {sampler} needs the {package} package, which is not installed: {hint}, "
        "or use search.sampler=tpe",
    )
    for sampler, package, hint in [
        ("gp", "torch", "pip install 'mnist-hpo[torch]'"),
        ("cmaes", "cmaes", "pip install cmaes"),
    ]
    if importlib.util.find_spec(package) is None
}
CASES = {
    name: ("experiment=smoke", *overrides, message)
    for name, (overrides, message) in (BAD_INPUTS | MISSING_SAMPLER_PACKAGES).items()
}
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
