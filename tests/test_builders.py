"""Bring your own network and your own MNIST-format data: builders by dotted path, shapes and classes from the data."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, compose_config, store_uri
from mlflow_tree import runs_by_level
from rich.console import Console
from test_data import write_idx

from mnist_hpo.configuration.schema import ConfigError, DataConfig, ExecutionConfig, ModelConfig
from mnist_hpo.data.loading import load_data, read_idx
from mnist_hpo.dispatch import run
from mnist_hpo.execution.estimator import MnistCNNClassifier, build_estimator
from mnist_hpo.model.cnn import build_cnn
from mnist_hpo.model.params import CNN_ARGUMENTS, WRAPPER_ARGUMENTS
from mnist_hpo.runner import run_search
from mnist_hpo.session import JobContext, open_session

EXAMPLES = ROOT / "examples"
# The README's command, with absolute paths so a test can launch it from its own folder.
EXAMPLE = [f"hydra.searchpath=[file://{EXAMPLES / 'conf'}]", "model=depthwise_cnn"]
TWELVE = range(1, 13)  # 1-based, as EMNIST letters' labels are
ALL_IMAGES = ["data.train_size=null", "data.test_size=null"]


def ten_outputs(meta: dict[str, Any], **ignored: Any) -> keras.Model:
    """A builder that ignores the data's class count: ten outputs, whatever the data holds."""
    inputs = keras.Input(shape=tuple(meta["X_shape_"][1:]))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def takes_loss(meta: dict[str, Any], loss: str = "mse", **ignored: Any) -> keras.Model:
    """A builder with an argument named like the estimator's own ``loss``, which scikeras never passes it."""
    return ten_outputs(meta)


def needs_width(meta: dict[str, Any], width: int, **ignored: Any) -> keras.Model:
    """A builder with a required argument and no default for it."""
    inputs = keras.Input(shape=tuple(meta["X_shape_"][1:]))
    outputs = keras.layers.Dense(meta["n_classes_"], activation="softmax")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


def write_idx_set(folder: Path, labels: range, side: int = 32, train: int = 8, test: int = 2) -> Path:
    """An EMNIST-style IDX set (``synthetic-{train,test}-...-ubyte.gz``): one bright square per class on noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train), ("test", test)):
        y = np.repeat(np.asarray(labels, dtype=np.uint8), per_class)
        x = rng.integers(0, 60, (len(y), side, side), dtype=np.uint8)
        for image, label in zip(x, y, strict=True):
            row, col = divmod(int(label) - labels[0], side // 8)
            image[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] = 255
        write_idx(folder / f"synthetic-{split}-images-idx3-ubyte", x, compress=True)
        write_idx(folder / f"synthetic-{split}-labels-idx1-ubyte", y, compress=True)
    return folder


def test_the_cnn_arguments_named_without_keras_are_build_cnns_own():
    parameters = set(inspect.signature(build_cnn).parameters) - {"meta"}
    assert set(CNN_ARGUMENTS) == parameters


def test_the_names_no_builder_argument_may_take_are_the_estimators_constructor_keywords():
    from scikeras.wrappers import KerasClassifier

    wrapper = inspect.signature(KerasClassifier.__init__).parameters
    keywords = {*wrapper, *inspect.signature(MnistCNNClassifier).parameters}
    assert keywords - {"self", "kwargs"} == WRAPPER_ARGUMENTS


def test_build_cnn_reads_image_shape_and_classes_from_the_data():
    model = build_cnn(conv_filters=[2], dense_units=0, meta={"X_shape_": (5, 32, 32, 1), "n_classes_": 12})
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 12)
    assert build_cnn(conv_filters=[2]).output_shape == (None, 10)  # a direct call builds for MNIST


USER_NET = """
import keras


def build(meta, width=8):
    inputs = keras.Input(shape=tuple(meta["X_shape_"][1:]))
    hidden = keras.layers.Dense(width, activation="{activation}")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(meta["n_classes_"], activation="softmax")(hidden))
"""


def test_an_edited_builder_trains_again_instead_of_restoring_the_old_ones_fit(tmp_path, monkeypatch):
    # Given a user's builder module on the path, and a fit store
    module = tmp_path / "user_net.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within the same second must be re-read
    data = load_data(DataConfig(train_size=40, test_size=10), seed=0)

    def fit(activation: str) -> MnistCNNClassifier:
        module.write_text(USER_NET.format(activation=activation))
        monkeypatch.delitem(sys.modules, "user_net", raising=False)
        model = ModelConfig(builder="user_net.build", epochs=1)
        estimator = build_estimator(model, ExecutionConfig(model_cache_mb=0), seed=0, fit_store=tmp_path / "fits")
        return estimator.fit(data.x_train, data.y_train)

    # When the same builder fits twice, then once more after an edit
    first, again, edited = fit("relu"), fit("relu"), fit("tanh")
    # Then the unchanged code is restored and the edited code trains
    assert not first.fit_reused_ and again.fit_reused_ and not edited.fit_reused_


def test_a_12_class_32_pixel_idx_set_trains_scores_and_predicts_its_own_labels(tmp_path):
    # Given a 12-class IDX set of 32 x 32 images, labelled 1-12, found in its folder by its set's names
    folder = write_idx_set(tmp_path / "data", TWELVE)
    cfg = compose_config(
        "experiment=smoke", f"data.path={folder}", *ALL_IMAGES,
        "model.epochs=1", "execution.progress=false",
    )  # fmt: skip
    job = JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out")
    # When a real search runs on it with the package's CNN
    outcome = run_search(cfg, job, open_session(cfg, job), Console(quiet=True))
    # Then it trained and scored every candidate, and the logged model predicts the data's own labels
    scores = pd.read_csv(outcome.csv_path)["mean_test_score"]
    assert len(scores) == 2 and np.isfinite(scores).all()
    assert np.isfinite(outcome.result.test.accuracy)
    # and the confusion matrix is the data's 12 x 12, every test image counted once
    assert outcome.result.test.classes == tuple(TWELVE)
    assert outcome.result.test.confusion.shape == (12, 12) and outcome.result.test.confusion.sum() == 24
    (search,) = runs_by_level(store_uri(tmp_path))["search"]
    mlflow.set_tracking_uri(store_uri(tmp_path))
    images = read_idx(folder / "synthetic-test-images-idx3-ubyte.gz")[..., None].astype(np.float32) / 255
    predicted = np.asarray(mlflow.pyfunc.load_model(search.data.tags["mnist_hpo.model_uri"]).predict(images))
    assert predicted.shape == (24,) and set(predicted.tolist()) <= set(TWELVE)


def test_the_example_builder_searches_its_own_arguments_as_documented(cli, tmp_path):
    # Given the README's command: the example's folder on PYTHONPATH, its configs on Hydra's search path
    result = cli(
        *EXAMPLE, "grid=depthwise_cnn", "grid.activation=[relu]", "model.epochs=1", "data.train_size=100",
        "data.test_size=50", "search.cv=2", "execution.progress=false", "hydra.run.dir=out",
        cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    # Then both depth multipliers trained and scored, under the names the grid gave them
    assert result.returncode == 0, result.stderr[-3000:]
    results = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    assert results["param_depth_multiplier"].tolist() == [1, 2]
    assert np.isfinite(results["mean_test_score"]).all()
    (search,) = runs_by_level(store_uri(tmp_path))["search"]
    assert search.data.params["blocks"] == "2" and search.data.params["activation"] == "relu"
    # And its model loads and predicts in a process that has not got the example's folder on its path
    load = (
        "import sys, mlflow, numpy as np; mlflow.set_tracking_uri(sys.argv[1]); "
        "model = mlflow.pyfunc.load_model(sys.argv[2]); "
        "print(np.asarray(model.predict(np.zeros((3, 28, 28, 1), np.float32))).tolist())"
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    loaded = subprocess.run(
        [sys.executable, "-c", load, store_uri(tmp_path), search.data.tags["mnist_hpo.model_uri"]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert len(json.loads(loaded.stdout.strip().splitlines()[-1])) == 3


BAD_BUILDERS = {
    "unknown builder": (
        ["model.builder=no_such_module.build"],
        "model.builder: cannot load 'no_such_module.build' (No module named 'no_such_module'); give the dotted "
        "path of a function returning an uncompiled keras.Model",
    ),
    "not a function": (
        ["model.builder=mnist_hpo.configuration.choices.LOSSES"],
        "model.builder: cannot load 'mnist_hpo.configuration.choices.LOSSES' (Expected a callable target",
    ),
    "typed key the builder does not take": (
        [*EXAMPLE, "model.conv_filters=[8]"],
        "model.conv_filters: [8] is not an argument of the builder; valid: blocks, filters, "
        "depth_multiplier, activation, dropout_dense (the keyword arguments of "
        "depthwise_cnn.build_depthwise_cnn)",
    ),
    "grid axis the builder does not take": (
        [*EXAMPLE, "+grid.kernel_size=[3,5]"],
        "grid.kernel_size: not an estimator parameter; valid: blocks, filters,",
    ),
    "builder argument it does not take": (
        [*EXAMPLE, "+model.builder_args.width=3"],
        "model.builder_args.width: 3 is not an argument of the builder; valid: blocks,",
    ),
    "a typed key under builder_args": (
        [*EXAMPLE, "+model.builder_args.activation=gelu"],
        "model.builder_args.activation: set model.activation instead",
    ),
    "grid axis of the package's CNN unknown to it": (
        ["+grid.filters=[8]"],
        "grid.filters: not an estimator parameter; valid: conv_filters, kernel_size,",
    ),
    "an architecture too deep for the images": (
        [*EXAMPLE, "grid=empty", "+grid.blocks=[2,5]"],
        "grid.blocks: 5 fails on 28 x 28 x 1 images of 10 classes: ValueError: Computed output size would be",
    ),
    "a base architecture too deep": (
        [*EXAMPLE, "model.builder_args.blocks=6"],
        "model.builder: depthwise_cnn.build_depthwise_cnn fails on 28 x 28 x 1 images of 10 classes: ValueError: "
        "Computed output size would be",
    ),
    "outputs fixed at ten for twelve classes": (
        ["model.builder=test_builders.ten_outputs", "data.path=<twelve>", *ALL_IMAGES],
        "model.builder: test_builders.ten_outputs fails on 32 x 32 x 1 images of 12 classes: it outputs (10,) per "
        "image, the data has 12 classes; size the last layer from meta['n_classes_']",
    ),
    "an argument named like the estimator's own": (
        ["model.builder=test_builders.takes_loss"],
        "model.builder: test_builders.takes_loss takes 'loss', a name the estimator keeps for itself",
    ),
    "a grid axis a **kwargs builder is never given": (
        ["model.builder=test_builders.ten_outputs", "grid=empty", "+grid.units=[4,8]"],
        "grid.units: test_builders.ten_outputs takes **kwargs, so the estimator has only the arguments the config",
    ),
    "a required argument left unset": (
        ["model.builder=test_builders.needs_width"],
        "model.builder_args.width: test_builders.needs_width needs it (it has no default)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BUILDERS))
def test_a_builder_mistake_stops_before_training_in_one_line(case, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as PYTHONPATH=examples does for the CLI
    overrides, message = BAD_BUILDERS[case]
    twelve = str(write_idx_set(tmp_path / "twelve", TWELVE)) if "data.path=<twelve>" in overrides else ""
    # The smoke preset sets the package CNN's own keys, so the example's cases start from the plain config.
    preset = [] if overrides[0] == EXAMPLE[0] else ["experiment=smoke"]
    cfg = compose_config(*preset, *(item.replace("<twelve>", twelve) for item in overrides))
    with pytest.raises(ConfigError) as raised:
        run(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out"))
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(message)
    assert not (tmp_path / "mlruns").exists()
