"""MNIST loading: embedded subset, .npz, IDX folders (raw and gzipped), prepared once."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from mnist_hpo.configuration.schema import ConfigError, DataConfig
from mnist_hpo.data.loading import IDX_FILES, load_data, read_embedded


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` (uint8) as an IDX file, the MNIST distribution format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def real_arrays() -> dict[str, np.ndarray]:
    """A slice of the embedded real MNIST."""
    arrays = read_embedded()
    return {key: value[:200] for key, value in arrays.items()}


def test_embedded_subset_is_real_stratified_mnist():
    arrays = read_embedded()
    assert arrays["x_train"].shape == (6000, 28, 28) and arrays["x_test"].shape == (1000, 28, 28)
    assert np.bincount(arrays["y_train"]).min() >= 540  # every digit, near the MNIST balance
    data = load_data(DataConfig(), seed=0)
    assert data.x_train.dtype == np.float32 and data.x_train.shape == (6000, 28, 28, 1)
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_folder_loads_like_npz(tmp_path, compress):
    arrays = real_arrays()
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / stem, arrays[key], compress)
    np.savez(tmp_path / "mnist.npz", **arrays)
    from_idx = load_data(DataConfig(path=str(tmp_path)), seed=0)
    from_npz = load_data(DataConfig(path=str(tmp_path / "mnist.npz")), seed=0)
    np.testing.assert_array_equal(from_idx.x_train, from_npz.x_train)
    np.testing.assert_array_equal(from_idx.y_test, from_npz.y_test)
    assert from_idx.fingerprint() == from_npz.fingerprint()


def test_subsets_are_stratified_and_seeded():
    config = DataConfig(train_size=500, test_size=100)
    first, second = load_data(config, seed=3), load_data(config, seed=3)
    assert len(first.y_train) == 500 and len(first.y_test) == 100
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert np.bincount(first.y_train, minlength=10).min() >= 40


def test_truncated_idx_file_names_the_key(tmp_path):
    arrays = real_arrays()
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / stem, arrays[key], compress=False)
    stem = IDX_FILES["x_train"]
    (tmp_path / stem).write_bytes((tmp_path / stem).read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"data\.path: .*train-images-idx3-ubyte is cut short: its header declares"):
        load_data(DataConfig(path=str(tmp_path)), seed=0)


def test_folder_without_idx_files_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path: .* has no train-images-idx3-ubyte"):
        load_data(DataConfig(path=str(tmp_path)), seed=0)


def test_float_pixels_in_0_255_are_scaled_and_the_log_says_so(tmp_path, caplog):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.uniform(0, 255, (40, 28, 28)).astype(np.float32),
        "y_train": np.tile(np.arange(10), 4),
        "x_test": rng.uniform(0, 255, (20, 28, 28)).astype(np.float32),
        "y_test": np.tile(np.arange(10), 2),
    }
    np.savez(tmp_path / "floats.npz", **arrays)
    with caplog.at_level(logging.WARNING, logger="mnist_hpo.data.loading"):
        data = load_data(DataConfig(path=str(tmp_path / "floats.npz")), seed=0)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    np.testing.assert_allclose(data.x_train[..., 0], arrays["x_train"][: len(data.x_train)] / 255, rtol=1e-6)
    assert "x_train: float pixels up to 255 taken for 0-255 and scaled to [0, 1]" in caplog.text


def write_arrays(path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Path:
    """An .npz of the four arrays, as data.path takes it."""
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_an_emnist_folder_needs_its_set_named_then_loads_that_sets_own_labels(tmp_path):
    # Given a folder holding two EMNIST-named IDX sets, letters labelled from 1 as EMNIST's are
    rng = np.random.default_rng(0)
    for name, labels in (("emnist-balanced", np.arange(0, 4)), ("emnist-letters", np.arange(1, 5))):
        for split, per_class in (("train", 3), ("test", 1)):
            y = np.repeat(labels, per_class).astype(np.uint8)
            write_idx(tmp_path / f"{name}-{split}-labels-idx1-ubyte", y, compress=True)
            x = rng.integers(0, 255, (len(y), 28, 28), dtype=np.uint8)
            write_idx(tmp_path / f"{name}-{split}-images-idx3-ubyte", x, compress=True)
    # Then the folder alone is ambiguous, and FOLDER/SET reads that set
    with pytest.raises(ConfigError, match=r"data\.path: .* holds 2 IDX sets \(emnist-balanced, emnist-letters\)"):
        load_data(DataConfig(path=str(tmp_path)), seed=0)
    data = load_data(DataConfig(path=str(tmp_path / "emnist-letters")), seed=0)
    assert data.x_train.shape == (12, 28, 28, 1) and sorted(set(data.y_train.tolist())) == [1, 2, 3, 4]


@pytest.mark.parametrize("shape", [(32, 32), (16, 20, 3)], ids=["32x32", "16x20 rgb"])
def test_any_image_size_and_channel_count_loads_with_a_channel_axis(tmp_path, shape):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 2)
    images = rng.integers(0, 255, (24, *shape), dtype=np.uint8)
    data = load_data(DataConfig(path=str(write_arrays(tmp_path / "d.npz", images, y, images, y))), 0)
    assert data.x_train.shape == (24, *shape[:2], shape[2] if len(shape) == 3 else 1)


BAD_ARRAYS = {
    "test label unseen in training": (
        {"y_test": np.array([0, 1, 11, 3])},
        "data.path: <npz>: y_test has labels [11] that y_train lacks; a classifier predicts only the 4 classes",
    ),
    "splits of two image shapes": (
        {"x_test": np.zeros((4, 30, 30), np.uint8)},
        "data.path: <npz>: x_train has shape (8, 28, 28) and x_test (4, 30, 30); both splits need one image shape",
    ),
    "float labels": ({"y_train": np.repeat(np.arange(4.0), 2)}, "data.path: <npz>: y_train holds float64 labels"),
    "fewer labels than images": (
        {"y_train": np.arange(4)},
        "data.path: <npz>: y_train has 4 labels and x_train 8 images; each image needs one label",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_data_a_classifier_cannot_learn_stops_naming_the_array(tmp_path, case):
    changes, message = BAD_ARRAYS[case]
    arrays = {
        "x_train": np.zeros((8, 28, 28), np.uint8),
        "y_train": np.repeat(np.arange(4), 2),
        "x_test": np.zeros((4, 28, 28), np.uint8),
        "y_test": np.arange(4),
    } | changes
    path = write_arrays(tmp_path / "d.npz", **arrays)
    with pytest.raises(ConfigError) as raised:
        load_data(DataConfig(path=str(path)), seed=0)
    assert str(raised.value).startswith(message.replace("<npz>", str(path)))


def test_a_subset_keeps_one_image_of_each_of_the_data_sets_classes(tmp_path):
    y = np.repeat(np.arange(12), 4)
    images = np.zeros((48, 28, 28), np.uint8)
    path = str(write_arrays(tmp_path / "d.npz", images, y, images, y))
    with pytest.raises(ConfigError, match=r"data\.train_size: 11 must be between 12 and 36"):
        load_data(DataConfig(path=path, train_size=11), seed=0)
    assert np.bincount(load_data(DataConfig(path=path, train_size=12), seed=0).y_train).min() == 1


def test_a_download_that_cannot_connect_names_the_cause_in_one_line(tmp_path):
    # Given no MNIST in an empty Keras cache, and a download whose connection is refused (a proxy on a closed port)
    env = {
        "KERAS_HOME": str(tmp_path / "keras"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    result = run_cli("experiment=smoke", "data.source=keras", cwd=tmp_path, timeout=300, env=env)
    # Then it stops before training, naming the cause
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: data.source=keras: MNIST is not in the Keras cache and cannot be downloaded "
            "(the connection was refused ([Errno 111] Connection refused)); set data.path"
        )
    ), result.stderr[-3000:]
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
