"""The names a user may choose from, kept free of Keras so configs validate before it loads."""

from __future__ import annotations

ACTIVATIONS = ("sigmoid", "relu", "leaky_relu", "prelu", "tanh", "elu", "selu", "gelu", "swish")
LOSSES = ("categorical_crossentropy", "mse", "sparse_categorical_crossentropy")
ONE_HOT_LOSSES = ("categorical_crossentropy", "mse")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "uniform",
    "normal",
    "orthogonal",
)
PADDINGS = ("same", "valid")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DATA_SOURCES = ("embedded", "keras")  # a file or folder is data.path, which takes precedence
STRATEGIES = ("grid", "random", "halving", "optuna")
SAMPLERS = ("tpe", "gp", "cmaes", "random")
HALVING_RESOURCES = ("n_samples", "epochs")
FIT_BACKENDS = ("loky", "ray")
BACKENDS = ("tensorflow", "jax", "torch")
DEVICES = ("auto", "cpu", "gpu")
