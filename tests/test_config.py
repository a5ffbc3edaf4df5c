"""Config composition and every bad input: one line naming the key, before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.config import ConfigError
from mnist_hpo.dispatch import run
from mnist_hpo.session import JobContext
from mnist_hpo.validation import validate_config

PRESETS = ["smoke", "leohoji", "challenge", "challenge_staged"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = compose_config(f"experiment={preset}")
    validate_config(cfg)
    assert cfg.study.coarse if cfg.study.enabled else cfg.grid


def test_challenge_staged_covers_the_seed_hyperparameters():
    cfg = compose_config("experiment=challenge_staged")
    assert cfg.study.enabled and cfg.data.source == "keras" and list(cfg.model.conv_filters) == [32, 64]
    assert set(cfg.study.coarse) == {
        "model__conv_filters",
        "model__kernel_size",
        "model__dense_units",
        "model__dropout_conv",
        "model__dropout_dense",
        "batch_size",
        "epochs",
        "model__kernel_initializer",
        "model__activation",
        "optimizer",
        "optimizer__learning_rate",
    }


def test_leohoji_is_the_published_grid():
    cfg = compose_config("experiment=leohoji")
    assert list(cfg.model.conv_filters) == [1] and cfg.model.kernel_size == 5 and cfg.model.padding == "same"
    assert cfg.model.dense_units == 0 and cfg.model.epochs == 5 and cfg.model.optimizer == "adam"
    assert cfg.model.validation_split == 0.1 and cfg.search.cv == 3 and cfg.seed == 42
    assert cfg.search.return_train_score and cfg.data.source == "keras" and cfg.data.train_size is None
    grid = {key: list(values) for key, values in cfg.grid.items()}
    assert grid == {
        "model__activation": ["sigmoid", "relu", "leaky_relu", "prelu", "tanh"],
        "loss": ["mse", "categorical_crossentropy"],
        "batch_size": [8, 32, 128],
    }


def test_challenge_is_the_published_best_cnn():
    model = compose_config("experiment=challenge").model
    assert list(model.conv_filters) == [32, 64] and model.kernel_size == 5 and model.dense_units == 128
    assert (model.dropout_conv, model.dropout_dense) == (0.25, 0.5)
    assert (model.activation, model.kernel_initializer, model.optimizer, model.batch_size) == (
        "relu", "uniform", "adam", 64,
    )  # fmt: skip


def test_command_line_overrides_reach_every_group():
    cfg = compose_config("model.dense_units=64", "grid=leohoji", "search.cv=5", "tracking.experiment=x")
    assert (cfg.model.dense_units, cfg.search.cv, cfg.tracking.experiment) == (64, 5, "x")
    assert "loss" in cfg.grid


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
    "bad labels": (["data.path=<bad_labels>"], "data.path: y_train has labels outside 0-9"),
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


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stops_before_training_and_leaves_no_run(case, tmp_path):
    files = {
        "wrong_shape": write_npz(tmp_path / "shape.npz", x_train=np.zeros((40, 28, 27), np.uint8)),
        "bad_labels": write_npz(tmp_path / "labels.npz", y_train=np.full(40, 11)),
        "not_npz": tmp_path / "garbage.npz",
        "corrupt_db": tmp_path / "corrupt.db",
        "a_file": tmp_path / "a_file",
        "nan_pixels": write_npz(tmp_path / "nan.npz", x_train=np.full((40, 28, 28), np.nan, np.float32)),
        "one_class": write_npz(tmp_path / "one.npz", y_train=np.full(40, 3)),
        "negative": write_npz(tmp_path / "negative.npz", x_train=np.full((40, 28, 28), -1.0, np.float32)),
    }
    files["a_file"].write_text("not a folder")
    files["not_npz"].write_bytes(b"not a zip file")
    files["corrupt_db"].write_bytes(b"this is not an sqlite database" * 100)
    overrides, message = BAD_INPUTS[case]
    cfg = compose_config("experiment=smoke", *(fill(item, files) for item in overrides))
    job = JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out")
    with pytest.raises(ConfigError) as raised:
        run(cfg, job)
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(fill(message, files))
    assert runs_by_level(store_uri(tmp_path)).get("search") is None
    assert not (tmp_path / "out" / "cv_results.csv").exists()
