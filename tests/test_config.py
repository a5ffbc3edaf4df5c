"""Config composition: every preset composes and validates, and overrides reach every group."""

from __future__ import annotations

import pytest
from conftest import CONF, compose_config

from mnist_hpo.checks.validation import validate_config

PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = compose_config(f"experiment={preset}")
    validate_config(cfg)
    assert cfg.study.coarse if cfg.study.enabled else cfg.grid


def test_challenge_staged_covers_the_seed_hyperparameters():
    cfg = compose_config("experiment=challenge_staged")
    assert cfg.study.enabled and cfg.data.source == "keras" and list(cfg.model.conv_filters) == [32, 64]
    assert set(cfg.study.coarse) == {
        "conv_filters",
        "kernel_size",
        "dense_units",
        "dropout_conv",
        "dropout_dense",
        "batch_size",
        "epochs",
        "kernel_initializer",
        "activation",
        "optimizer",
        "learning_rate",
    }


def test_leohoji_is_the_published_grid():
    cfg = compose_config("experiment=leohoji")
    assert list(cfg.model.conv_filters) == [1] and cfg.model.kernel_size == 5 and cfg.model.padding == "same"
    assert cfg.model.dense_units == 0 and cfg.model.epochs == 5 and cfg.model.optimizer == "adam"
    assert cfg.model.validation_split == 0.1 and cfg.search.cv == 3 and cfg.seed == 42
    assert cfg.search.return_train_score and cfg.data.source == "keras" and cfg.data.train_size is None
    grid = {key: list(values) for key, values in cfg.grid.items()}
    assert grid == {
        "activation": ["sigmoid", "relu", "leaky_relu", "prelu", "tanh"],
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
