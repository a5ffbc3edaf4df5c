"""Builds the configurable Keras CNN; pure ``keras.*`` so every Keras 3 backend runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from mnist_hpo.configuration.choices import ACTIVATIONS, INITIALIZERS

# What a direct call without ``meta`` builds for; a search always passes the data's own.
MNIST_META = {"X_shape_": (None, 28, 28, 1), "n_classes_": 10}

# Layers rather than strings: PReLU has trainable weights and LeakyReLU a slope argument.
ACTIVATION_LAYERS: dict[str, Callable[..., keras.layers.Layer]] = {
    "sigmoid": lambda **kw: keras.layers.Activation("sigmoid", **kw),
    "relu": keras.layers.ReLU,
    "leaky_relu": keras.layers.LeakyReLU,
    "prelu": keras.layers.PReLU,
    "tanh": lambda **kw: keras.layers.Activation("tanh", **kw),
    "elu": lambda **kw: keras.layers.Activation("elu", **kw),
    "selu": lambda **kw: keras.layers.Activation("selu", **kw),
    "gelu": lambda **kw: keras.layers.Activation("gelu", **kw),
    "swish": lambda **kw: keras.layers.Activation("swish", **kw),
}

# "uniform" and "normal" are the Keras 2 names the published study used.
INITIALIZER_NAMES: dict[str, str] = {name: name for name in INITIALIZERS} | {
    "uniform": "random_uniform",
    "normal": "random_normal",
}

assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS)


def activation_layer(name: str, dtype: str = "float32") -> keras.layers.Layer:
    """Return a fresh activation layer for ``name`` (one of ``choices.ACTIVATIONS``)."""
    return ACTIVATION_LAYERS[name](dtype=dtype)


def build_cnn(
    conv_filters: Sequence[int] = (16,),
    kernel_size: int = 3,
    padding: str = "same",
    pool_size: int = 2,
    dense_units: int = 64,
    dropout_conv: float = 0.0,
    dropout_dense: float = 0.0,
    activation: str = "relu",
    kernel_initializer: str = "glorot_uniform",
    precision: str = "float32",
    meta: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build an uncompiled CNN: conv blocks, optional dense layer, softmax over the data's classes.

    The package's default builder (``model.builder``); any other builder follows the same contract.

    Args:
        conv_filters: Filters of each conv block; one Conv2D (+ pooling) per entry.
        kernel_size: Square kernel size of every Conv2D.
        padding: ``same`` or ``valid``, for convolutions and pooling alike.
        pool_size: Max-pooling window after each conv; 0 disables pooling.
        dense_units: Units of the hidden dense layer; 0 means none.
        dropout_conv: Dropout rate after the conv blocks.
        dropout_dense: Dropout rate before the output layer.
        activation: Hidden-layer activation, one of ``choices.ACTIVATIONS``.
        kernel_initializer: Weight initializer, one of ``choices.INITIALIZERS``.
        precision: Keras dtype policy of the hidden layers: ``float32``, or ``mixed_float16`` /
            ``mixed_bfloat16`` (float16/bfloat16 compute, float32 weights); the softmax stays float32.
        meta: scikeras' description of the training data, filled in by the estimator: the image
            shape from ``X_shape_`` (N x H x W x C), the output width from ``n_classes_``. None
            builds for MNIST (28 x 28 x 1, 10 classes).

    Returns:
        The Keras model, mapping ``N x H x W x C`` images to class probabilities.
    """
    meta = MNIST_META if meta is None else meta
    initializer = INITIALIZER_NAMES[kernel_initializer]
    inputs = keras.Input(shape=tuple(meta["X_shape_"][1:]))
    x = inputs
    for filters in conv_filters:
        x = keras.layers.Conv2D(filters, kernel_size, padding=padding, kernel_initializer=initializer, dtype=precision)(
            x
        )
        x = activation_layer(activation, precision)(x)
        if pool_size:
            x = keras.layers.MaxPooling2D(pool_size, padding=padding, dtype=precision)(x)
    if dropout_conv:
        x = keras.layers.Dropout(dropout_conv, dtype=precision)(x)
    x = keras.layers.Flatten(dtype=precision)(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, kernel_initializer=initializer, dtype=precision)(x)
        x = activation_layer(activation, precision)(x)
    if dropout_dense:
        x = keras.layers.Dropout(dropout_dense, dtype=precision)(x)
    outputs = keras.layers.Dense(
        meta["n_classes_"], activation="softmax", kernel_initializer=initializer, dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
