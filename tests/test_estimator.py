"""The estimator and model: classifier tags, one-hot targets, every activation, failures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import StratifiedKFold, check_cv

from mnist_hpo.configuration.choices import ACTIVATIONS, INITIALIZERS
from mnist_hpo.configuration.schema import DataConfig, ExecutionConfig, ModelConfig
from mnist_hpo.data.loading import load_data
from mnist_hpo.execution.candidate_costs import parameter_counts
from mnist_hpo.execution.estimator import MnistCNNClassifier, TrainingDivergedError, build_estimator
from mnist_hpo.model.cnn import build_cnn

UNCACHED = ExecutionConfig(model_cache_mb=0)


@pytest.fixture(scope="module")
def digits():
    """300 real training images and labels."""
    data = load_data(DataConfig(train_size=300, test_size=100), seed=0)
    return data.x_train, data.y_train


def test_sklearn_recognises_a_classifier_so_integer_cv_is_stratified():
    estimator = build_estimator(ModelConfig(), UNCACHED, seed=0)
    assert is_classifier(estimator)
    assert isinstance(check_cv(3, np.arange(30) % 10, classifier=is_classifier(estimator)), StratifiedKFold)


def test_clone_keeps_every_routed_parameter():
    estimator = build_estimator(ModelConfig(epochs=7, activation="prelu", learning_rate=0.01), UNCACHED, seed=0)
    cloned = clone(estimator)
    assert cloned.epochs == 7 and cloned.activation == "prelu" and cloned.learning_rate == 0.01
    assert isinstance(cloned, MnistCNNClassifier)


@pytest.mark.parametrize("loss", ["mse", "categorical_crossentropy"])
def test_mse_and_cross_entropy_train_on_one_hot_targets(digits, loss):
    x, y = digits
    estimator = build_estimator(ModelConfig(loss=loss, epochs=1), UNCACHED, seed=0).fit(x, y)
    encoded = estimator.target_encoder_.transform(y[:5])
    assert encoded.shape == (5, 10)
    np.testing.assert_array_equal(encoded.argmax(axis=1), y[:5])
    assert set(estimator.predict(x[:20])) <= set(range(10))


@pytest.mark.parametrize("rows", [None, 7])
def test_predicting_in_whole_chunks_gives_what_keras_predict_gives(digits, rows):
    x, y = digits
    config = ModelConfig(epochs=1) if rows is None else ModelConfig(epochs=1, predict_batch_size=rows)
    estimator = build_estimator(config, UNCACHED, seed=0).fit(x, y)
    keras_says = estimator.model_.predict(x, batch_size=32, verbose=0)
    np.testing.assert_allclose(estimator.predict_proba(x), keras_says, atol=1e-6)
    np.testing.assert_array_equal(estimator.predict(x), keras_says.argmax(axis=1))
    with pytest.raises(ValueError, match="rows of shape"):
        estimator.predict(x[:, :27])


def test_sparse_cross_entropy_trains_on_integer_targets(digits):
    x, y = digits
    estimator = build_estimator(ModelConfig(loss="sparse_categorical_crossentropy", epochs=1), UNCACHED, seed=0).fit(
        x, y
    )
    assert estimator.target_encoder_.transform(y[:5]).shape in ((5,), (5, 1))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_model_builds_for_every_activation(activation):
    model = build_cnn(conv_filters=[2], dense_units=4, activation=activation, dropout_conv=0.1, dropout_dense=0.1)
    assert model.output_shape == (None, 10)
    prelu_weights = [layer for layer in model.layers if type(layer).__name__ == "PReLU"]
    assert bool(prelu_weights) == (activation == "prelu")
    if activation == "prelu":
        assert prelu_weights[0].trainable_weights


@pytest.mark.parametrize("initializer", INITIALIZERS)
def test_model_builds_for_every_initializer(initializer):
    assert build_cnn(conv_filters=[1], dense_units=0, kernel_initializer=initializer).count_params() > 0


def test_leohoji_architecture():
    model = build_cnn(conv_filters=[1], kernel_size=5, padding="same", pool_size=2, dense_units=0)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Conv2D", "ReLU", "MaxPooling2D", "Flatten", "Dense"]
    assert model.layers[1].filters == 1 and model.layers[1].kernel_size == (5, 5)


def test_parameter_counts_build_each_candidate_on_the_datas_image_shape():
    estimator = build_estimator(ModelConfig(conv_filters=[2], dense_units=0), UNCACHED, seed=0)
    twelve = np.arange(12)
    on_mnist = parameter_counts(estimator, [{}], twelve)
    on_32 = parameter_counts(estimator, [{}], twelve, X=np.zeros((1, 32, 32, 1), np.float32))
    # 2 maps of 14 x 14 (MNIST) or 16 x 16 after pooling, each pixel weighted once per class
    assert on_32[0] - on_mnist[0] == (2 * 16 * 16 - 2 * 14 * 14) * 12


def test_sgd_gets_momentum_and_adam_does_not(digits):
    x, y = digits
    sgd = build_estimator(ModelConfig(optimizer="sgd", momentum=0.8, epochs=1), UNCACHED, seed=0).fit(x, y)
    adam = build_estimator(ModelConfig(optimizer="adam", momentum=0.8, epochs=1), UNCACHED, seed=0).fit(x, y)
    assert float(sgd.model_.optimizer.momentum) == pytest.approx(0.8)
    assert not hasattr(adam.model_.optimizer, "momentum")


def test_diverging_training_raises(digits):
    x, y = digits
    estimator = build_estimator(ModelConfig(optimizer="sgd", learning_rate=1e9, epochs=2), UNCACHED, seed=0)
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        estimator.fit(x, y)
    assert estimator.fit_error_.startswith("TrainingDivergedError")


REUSE_MODEL = ModelConfig(epochs=2, dropout_dense=0.3, activation="prelu", validation_split=0.1)


def fitted(digits, model_cache_mb: int, batch_size: int = 32) -> MnistCNNClassifier:
    """A fit of ``REUSE_MODEL`` (dropout and PReLU: seeded and trainable state to restore)."""
    config = ModelConfig(**{**vars(REUSE_MODEL), "batch_size": batch_size})
    return build_estimator(config, ExecutionConfig(model_cache_mb=model_cache_mb), seed=3).fit(*digits)


def test_a_reused_compiled_model_learns_exactly_what_a_fresh_one_does(digits):
    x, _ = digits
    fresh = [fitted(digits, model_cache_mb=0, batch_size=size) for size in (32, 16)]
    expected = [(estimator.history_["loss"], estimator.predict_proba(x)) for estimator in fresh]
    first = fitted(digits, model_cache_mb=64)
    model = first.model_
    del first  # a finished fold: its estimator is gone, so the next fit may take its model
    for batch_size, (loss, probabilities) in zip((32, 16), expected, strict=True):
        reused = fitted(digits, model_cache_mb=64, batch_size=batch_size)
        assert reused.model_ is model  # the traced functions were reused, not rebuilt
        assert reused.history_["loss"] == loss
        np.testing.assert_array_equal(reused.predict_proba(x), probabilities)
        del reused


def test_a_live_estimator_never_has_its_model_reset_under_it(digits):
    x, _ = digits
    kept = fitted(digits, model_cache_mb=64)
    before = kept.predict_proba(x)
    later = fitted(digits, model_cache_mb=64)
    assert later.model_ is not kept.model_
    np.testing.assert_array_equal(kept.predict_proba(x), before)
