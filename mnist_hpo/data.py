"""Loads MNIST (embedded subset, .npz, IDX files or the Keras cache) as prepared arrays."""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from mnist_hpo.config import ConfigError, DataConfig

log = logging.getLogger(__name__)

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SPLITS = tuple(IDX_FILES)


@dataclass(frozen=True)
class MnistData:
    """Prepared MNIST: float32 images in [0, 1] shaped N x 28 x 28 x 1, int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def fingerprint(self) -> str:
        """A short hash of every array, to tell whether two runs saw the same data."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ConfigError(f"data.path: {path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ConfigError(f"data.path: {path} is truncated ({body.size} of {np.prod(dims)} bytes)")
    return body.reshape(dims)


def find_idx_file(folder: Path, stem: str) -> Path:
    """Return the raw or gzipped IDX file named ``stem`` in ``folder``."""
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), f"{stem.replace('-idx', '.idx')}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"data.path: {folder} has no {stem}[.gz]; a folder needs the four MNIST IDX files")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four MNIST arrays from an ``.npz`` file."""
    try:
        with np.load(path) as archive:
            missing = [key for key in SPLITS if key not in archive.files]
            if missing:
                raise ConfigError(f"data.path: {path} lacks arrays {missing}; it needs {list(SPLITS)}")
            return {key: archive[key] for key in SPLITS}
    except (OSError, ValueError, EOFError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"data.path: {path} is not a readable .npz file ({error})") from error


def read_path(path: Path) -> dict[str, np.ndarray]:
    """Read MNIST from an ``.npz`` file or a folder of the four IDX files."""
    if not path.exists():
        raise ConfigError(f"data.path: {path} does not exist; give an MNIST .npz or a folder of IDX files")
    if path.is_dir():
        return {key: read_idx(find_idx_file(path, stem)) for key, stem in IDX_FILES.items()}
    return read_npz(path)


def read_keras_cache() -> dict[str, np.ndarray]:
    """Read MNIST through the Keras download cache (``~/.keras/datasets/mnist.npz``)."""
    import keras  # imported here: only this source needs Keras, and the backend is set first

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:
        raise ConfigError(
            "data.source=keras: MNIST is not in the Keras cache and cannot be downloaded "
            f"({type(error).__name__}); set data.path to an MNIST .npz or IDX folder"
        ) from error
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def read_embedded() -> dict[str, np.ndarray]:
    """Read the stratified real-MNIST subset that ships inside the package."""
    with resources.as_file(resources.files("mnist_hpo") / "assets" / "mnist_subset.npz") as path:
        return read_npz(path)


def check_mnist(arrays: dict[str, np.ndarray], where: str) -> None:
    """Fail with a ``data.*`` error unless the arrays look like MNIST."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4) or x.shape[1:3] != (28, 28) or (x.ndim == 4 and x.shape[3] != 1):
            raise ConfigError(f"{where}: x_{split} has shape {x.shape}, expected N x 28 x 28")
        if y.shape != (len(x),):
            raise ConfigError(f"{where}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise ConfigError(f"{where}: y_{split} has labels outside 0-9")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ConfigError(f"{where}: x_{split} holds NaN or infinite pixels; images must be finite")
        if x.dtype.kind not in "uif" or (x.size and (x.min() < 0 or x.max() > 255)):
            raise ConfigError(f"{where}: x_{split} must hold pixels in [0, 1] or 0-255, got {x.dtype} in a wider range")
    if len(np.unique(arrays["y_train"])) < 2:
        raise ConfigError(f"{where}: y_train has one class only ({arrays['y_train'][0]}); a classifier needs two")


def prepare_images(images: np.ndarray, name: str) -> np.ndarray:
    """Scale pixels to [0, 1] as float32 and add the channel axis, once per run.

    Integers are 0-255; floats above 1 are taken for 0-255 too, scaled, and the log says so.
    """
    images = images.reshape(len(images), 28, 28, 1)
    if images.dtype.kind == "f" and images.size and images.max() > 1:
        log.warning("%s: float pixels up to %.0f taken for 0-255 and scaled to [0, 1]", name, images.max())
    elif images.dtype.kind == "f":
        return images.astype(np.float32)
    return images.astype(np.float32) / np.float32(255.0)


def stratified_subset(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``size`` samples with the class balance of ``y`` (all of them when ``size`` is None)."""
    if size is None or size == len(y):
        return x, y
    if not 10 <= size < len(y):
        raise ConfigError(f"{key}: {size} must be between 10 and {len(y)} (the available images)")
    x_kept, _, y_kept, _ = train_test_split(x, y, train_size=size, stratify=y, random_state=seed)
    return x_kept, y_kept


def load_data(config: DataConfig, seed: int) -> MnistData:
    """Load, check, subset and prepare MNIST as the ``data`` config group describes."""
    if config.path:
        where, arrays = "data.path", read_path(Path(config.path).expanduser())
    elif config.source == "keras":
        where, arrays = "data.source", read_keras_cache()
    else:
        where, arrays = "data.source", read_embedded()
    check_mnist(arrays, where)
    x_train, y_train = stratified_subset(
        arrays["x_train"], arrays["y_train"], config.train_size, seed, "data.train_size"
    )
    x_test, y_test = stratified_subset(arrays["x_test"], arrays["y_test"], config.test_size, seed, "data.test_size")
    return MnistData(
        x_train=prepare_images(x_train, "x_train"),
        y_train=y_train.astype(np.int64),
        x_test=prepare_images(x_test, "x_test"),
        y_test=y_test.astype(np.int64),
        source=str(config.path) if config.path else config.source,
    )
