"""Time bare Keras fits of the published 1-filter CNN under different speed settings.

    KERAS_BACKEND=tensorflow python scripts/fit_settings.py --data mnist.npz graph xla spe8
    KERAS_BACKEND=jax python scripts/fit_settings.py --data mnist.npz graph jit spe8

Settings: ``graph`` (jit_compile=False), ``xla``/``jit`` (jit_compile=True), ``eager``
(run_eagerly=True), ``speN`` (steps_per_execution=N, no jit). Each is timed three times per batch
size (8, 32, 128) on 4,000 training images, 1 epoch, validation_split=0.1: the numbers behind
the speed defaults in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from mnist_hpo.model.cnn import build_cnn


def compile_kwargs(setting: str) -> dict:
    """Keras ``compile`` arguments for one named setting."""
    if setting == "eager":
        return {"run_eagerly": True}
    if setting.startswith("spe"):
        return {"jit_compile": False, "steps_per_execution": int(setting[3:])}
    return {"jit_compile": setting in ("xla", "jit")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz")
    parser.add_argument("settings", nargs="+")
    args = parser.parse_args()
    arrays = np.load(args.data)
    x = (arrays["x_train"][:4000, ..., None] / 255).astype("float32")
    y = keras.utils.to_categorical(arrays["y_train"][:4000], 10)
    print(f"backend {keras.backend.backend()}, seconds per fit (3 repeats)")
    for setting in args.settings:
        for batch_size in (8, 32, 128):
            times = []
            for _ in range(3):
                keras.backend.clear_session(free_memory=False)
                model = build_cnn(conv_filters=[1], kernel_size=5, dense_units=0, activation="relu")
                model.compile("adam", "categorical_crossentropy", metrics=["accuracy"], **compile_kwargs(setting))
                start = time.perf_counter()
                model.fit(x, y, epochs=1, batch_size=batch_size, validation_split=0.1, verbose=0)
                times.append(time.perf_counter() - start)
            print(setting, batch_size, " ".join(f"{t:.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
