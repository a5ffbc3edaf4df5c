"""Loads MNIST, or any data set in its formats (.npz, IDX files), as prepared arrays; embedded subset or Keras cache."""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import math
import re
import socket
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from mnist_hpo.configuration.schema import ConfigError, DataConfig
from mnist_hpo.environment.quiet import chatter_to_log

log = logging.getLogger(__name__)

# MNIST's own file names; Fashion-MNIST and KMNIST use them too.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SPLITS = tuple(IDX_FILES)
# Any IDX file name: a set's prefix (EMNIST ships six sets in one folder, ``emnist-balanced-...``),
# the split (MNIST's test split is ``t10k``, EMNIST's ``test``), kind, ``.idx3-ubyte`` as some
# mirrors spell it, and an optional ``.gz``.
IDX_NAME = re.compile(
    r"(?P<set>.*?)(?P<split>train|t10k|test)[-_.](?P<kind>images|labels)[-_.]idx[13][-_.]ubyte(?:\.gz)?"
)
IDX_KEYS = {"images": "x", "labels": "y"}


@dataclass(frozen=True)
class MnistData:
    """Prepared data: float32 images in [0, 1] shaped N x H x W x C (MNIST: 28 x 28 x 1), int64 labels.

    The labels are the data set's own (EMNIST letters: 1-26); the estimator encodes them for Keras
    and predicts them back, so classes need not be 0..K-1.
    """

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
    """Read one IDX file (raw or gzipped) into a uint8 array of its declared shape.

    Checked against the format's own records: gzip's end marker, CRC and length, then the IDX header
    (two zero bytes, type 0x08 for unsigned bytes, the dimension count, each dimension), whose
    product must be exactly the bytes that follow.
    """
    where = f"data.path: {path}"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except EOFError:
        raise ConfigError(f"{where} is cut short: its gzip stream ends before its end marker") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ConfigError(f"{where} is not a valid gzip file ({error})") from None
    except OSError as error:
        raise ConfigError(f"{where} cannot be read ({error.strerror or error})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ConfigError(f"{where} is not an IDX file: it does not start with an IDX magic number")
    if raw[2] != 0x08:
        raise ConfigError(f"{where} holds IDX type 0x{raw[2]:02x}; images and labels must be unsigned bytes (0x08)")
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if ndim == 0 or len(raw) < offset:
        raise ConfigError(f"{where} is cut short: its IDX header declares {ndim} dimensions and ends early")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    declared, held = math.prod(dims), len(raw) - offset
    if held != declared:
        state = "is cut short" if held < declared else "holds more than its header declares"
        raise ConfigError(
            f"{where} {state}: its header declares {' x '.join(map(str, dims))} = {declared:,} bytes, it holds {held:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def idx_sets(folder: Path) -> dict[str, dict[str, Path]]:
    """The IDX files in ``folder`` by set prefix ('' for MNIST's own names), then by array (x_train ...)."""
    sets: dict[str, dict[str, Path]] = {}
    for file in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = IDX_NAME.fullmatch(file.name)
        if match and file.is_file():
            split = "train" if match["split"] == "train" else "test"
            # Sorted names put a raw file before its .gz: the raw one is read.
            sets.setdefault(match["set"].rstrip("-_."), {}).setdefault(f"{IDX_KEYS[match['kind']]}_{split}", file)
    return sets


def find_idx_files(path: Path) -> dict[str, Path]:
    """The four IDX files of one data set: in folder ``path``, or those of set ``path.name`` in its parent.

    A folder holding several sets (EMNIST's) is ambiguous: name the set, ``data.path=FOLDER/emnist-balanced``.
    """
    folder, name = (path, None) if path.is_dir() else (path.parent, path.name)
    sets = idx_sets(folder)
    if name is None and len(sets) > 1:
        named = sorted(set_name for set_name in sets if set_name)
        listed = ", ".join([*named, *(["MNIST's own names"] if "" in sets else [])])
        raise ConfigError(
            f"data.path: {folder} holds {len(sets)} IDX sets ({listed}); name one, e.g. data.path={folder / named[0]}"
        )
    files = sets.get(name if name is not None else next(iter(sets), ""), {})
    missing = [IDX_FILES[key] for key in SPLITS if key not in files]
    if missing:
        raise ConfigError(
            f"data.path: {path} has no {missing[0]}[.gz]; a folder needs the four IDX files "
            "(MNIST's names, or a set's such as emnist-balanced-test-images-idx3-ubyte.gz)"
        )
    return files


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays (x_train, y_train, x_test, y_test) from an ``.npz`` file.

    An ``.npz`` is a zip of ``.npy`` files, each checked against the format's own records before
    its bytes are trusted: the zip's directory (at the end of the file: one cut short has none), each
    member's ``.npy`` header (shape and dtype, whose product must be the member's size) and zip's
    CRC-32 of its bytes. Object arrays are refused: they would be pickles.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        size = path.stat().st_size
        raise ConfigError(
            f"data.path: {path} is not a readable .npz file: no zip directory in its {size:,} bytes "
            "(cut short, or not an .npz)"
        ) from None
    except OSError as error:
        raise ConfigError(f"data.path: {path} cannot be read ({error.strerror or error})") from None
    with archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist() if name.endswith(".npy")}
        missing = [key for key in SPLITS if key not in members]
        if missing:
            raise ConfigError(f"data.path: {path} lacks arrays {missing}; it needs {list(SPLITS)}")
        return {key: read_npy_member(archive, members[key], path) for key in SPLITS}


def read_npy_member(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    """One ``.npy`` member of an ``.npz``, its header checked against its size and its bytes by CRC."""
    where = f"data.path: {path}: {name}"
    info = archive.getinfo(name)
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ConfigError(f"{where} is .npy format {version[0]}.{version[1]}; this reader takes 1.0 and 2.0")
            shape, fortran_order, dtype = readers[version](member)
            if dtype.hasobject:
                raise ConfigError(f"{where} holds Python objects ({dtype}); data arrays hold numbers, never pickles")
            declared, held = math.prod(shape) * dtype.itemsize, info.file_size - member.tell()
            if held != declared:
                state = "is cut short" if held < declared else "holds more than its header declares"
                raise ConfigError(f"{where} {state}: {shape} {dtype} is {declared:,} bytes, it holds {held:,}")
            raw = member.read()  # reading to the end checks the member's CRC-32
    except ConfigError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as error:
        raise ConfigError(f"{where} is damaged ({error})") from None
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran_order else "C")


def read_path(path: Path) -> tuple[dict[str, np.ndarray], str, dict[str, str]]:
    """Read an ``.npz`` file, a folder of the four IDX files, or one IDX set of a folder (``FOLDER/SET``).

    Returns the arrays and, for messages, the key and file they came from and each array's name.
    """
    if path.is_file():
        return read_npz(path), f"data.path: {path}", {}
    if not path.is_dir() and path.name not in idx_sets(path.parent):
        raise ConfigError(f"data.path: {path} does not exist; give an .npz, a folder of IDX files or FOLDER/SET")
    files = find_idx_files(path)
    return {key: read_idx(file) for key, file in files.items()}, "data.path", {k: str(f) for k, f in files.items()}


def download_failure(error: BaseException) -> str:
    """Why a download failed, from the root of ``error``'s chain: Keras wraps it in a bare ``Exception``."""
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        reason = getattr(link, "reason", None)  # urllib's URLError holds the socket error as its reason
        link = reason if isinstance(reason, BaseException) else link.__cause__ or link.__context__
    for cause in reversed(chain):  # the root first: its words are the most specific
        text = str(cause)
        if isinstance(cause, socket.gaierror) or "name resolution" in text or "Name or service not known" in text:
            return f"no network: the download host's name does not resolve ({text})"
        if isinstance(cause, ConnectionRefusedError):
            return f"the connection was refused ({text})"
        if isinstance(cause, TimeoutError):
            return f"the connection timed out ({text})"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return f"no network: the download host cannot be reached ({text})"
        if "hash does not match" in text or "corrupted file" in text:
            return "the download is corrupted: its checksum does not match"
    root = chain[-1]
    return f"{type(root).__name__}: {str(root) or 'no reason given'}"


def read_keras_cache() -> dict[str, np.ndarray]:
    """Read MNIST through the Keras download cache (``~/.keras/datasets/mnist.npz``)."""
    with chatter_to_log():  # imported here: only this source needs Keras, and the backend is set first
        import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:
        raise ConfigError(
            "data.source=keras: MNIST is not in the Keras cache and cannot be downloaded "
            f"({download_failure(error)}); set data.path to an MNIST .npz or IDX folder"
        ) from error
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def read_embedded() -> dict[str, np.ndarray]:
    """Read the stratified real-MNIST subset that ships inside the package."""
    with resources.as_file(resources.files("mnist_hpo") / "assets" / "mnist_subset.npz") as path:
        return read_npz(path)


def check_arrays(arrays: dict[str, np.ndarray], where: str, names: dict[str, str] | None = None) -> None:
    """Fail with a ``data.*`` error unless the arrays are images and labels a classifier can learn.

    Any image size and channel count work (the builder reads them from the data), so do any integer
    labels, provided every test label is a class of the training split. ``names`` say where each
    array came from (its file), for the message.
    """
    names = {key: (names or {}).get(key, key) for key in SPLITS}
    shapes = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        x_name, y_name = names[f"x_{split}"], names[f"y_{split}"]
        if x.ndim not in (3, 4) or 0 in x.shape[1:]:
            raise ConfigError(f"{where}: {x_name} has shape {x.shape}, expected N x H x W or N x H x W x C")
        shapes[split] = x.shape[1:] if x.ndim == 4 else (*x.shape[1:], 1)
        if y.ndim == 1 and len(y) != len(x):
            raise ConfigError(
                f"{where}: {y_name} has {len(y):,} labels and {x_name} {len(x):,} images; each image needs one label"
            )
        if y.shape != (len(x),):
            raise ConfigError(f"{where}: {y_name} has shape {y.shape}, expected ({len(x)},)")
        if y.dtype.kind not in "iu":
            raise ConfigError(f"{where}: {y_name} holds {y.dtype} labels; labels must be integers (class indices)")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ConfigError(f"{where}: {x_name} holds NaN or infinite pixels; images must be finite")
        if x.dtype.kind not in "uif" or (x.size and (x.min() < 0 or x.max() > 255)):
            raise ConfigError(f"{where}: {x_name} must hold pixels in [0, 1] or 0-255, got {x.dtype} in a wider range")
    if shapes["train"] != shapes["test"]:
        raise ConfigError(
            f"{where}: {names['x_train']} has shape {arrays['x_train'].shape} and {names['x_test']} "
            f"{arrays['x_test'].shape}; "
            "both splits need one image shape"
        )
    classes = np.unique(arrays["y_train"])
    if len(classes) < 2:
        raise ConfigError(f"{where}: {names['y_train']} has one class only ({classes[0]}); a classifier needs two")
    unseen = np.setdiff1d(arrays["y_test"], classes)
    if unseen.size:
        raise ConfigError(
            f"{where}: {names['y_test']} has labels {unseen[:5].tolist()} that {names['y_train']} lacks; "
            "a classifier predicts "
            f"only the {len(classes)} classes it trained on"
        )


def prepare_images(images: np.ndarray, name: str) -> np.ndarray:
    """Scale pixels to [0, 1] as float32 and give N x H x W images their channel axis, once per run.

    Integers are 0-255; floats above 1 are taken for 0-255 too, scaled, and the log says so.
    """
    images = images[..., np.newaxis] if images.ndim == 3 else images
    if images.dtype.kind == "f" and images.size and images.max() > 1:
        log.warning("%s: float pixels up to %.0f taken for 0-255 and scaled to [0, 1]", name, images.max())
    elif images.dtype.kind == "f":
        return images.astype(np.float32)
    return images.astype(np.float32) / np.float32(255.0)


def stratified_subset(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int, key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Keep ``size`` samples with the class balance of ``y`` (all of them when ``size`` is None).

    A stratified split puts every class on both sides: each side holds at least one image per class.
    """
    if size is None or size == len(y):
        return x, y
    classes, counts = np.unique(y, return_counts=True)
    if not len(classes) <= size <= len(y) - len(classes):
        raise ConfigError(
            f"{key}: {size} must be between {len(classes)} and {len(y) - len(classes)} (one image per class "
            f"kept and one left out, of the {len(y)} available)"
        )
    if counts.min() < 2:
        raise ConfigError(
            f"{key}: class {classes[counts.argmin()]} has one image only, so no subset keeps the class "
            f"balance; use all {len(y)} images ({key}=null)"
        )
    x_kept, _, y_kept, _ = train_test_split(x, y, train_size=size, stratify=y, random_state=seed)
    return x_kept, y_kept


def load_data(config: DataConfig, seed: int) -> MnistData:
    """Load, check, subset and prepare the data the ``data`` config group describes."""
    names = None
    if config.path:
        arrays, where, names = read_path(Path(config.path).expanduser())
    elif config.source == "keras":
        where, arrays = "data.source", read_keras_cache()
    else:
        where, arrays = "data.source", read_embedded()
    check_arrays(arrays, where, names)
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
