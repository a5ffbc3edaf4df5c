"""What every fit will meet, derived from the config and the data before any fit trains.

Folds per class (StratifiedKFold needs every class in every fold) and the feature-map sizes of
every architecture a search can build (a kernel or pooling window larger than the map it meets
fails inside Keras, once per fit, after the search has started).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from mnist_hpo.config import Config, ConfigError
from mnist_hpo.data import stratified_subset
from mnist_hpo.params import CONFIG_KEYS, estimator_params

ARCHITECTURE = ("model__conv_filters", "model__kernel_size", "model__padding", "model__pool_size")


def check_folds(cv: int, y: np.ndarray, images_key: str) -> None:
    """Every class must have at least ``cv`` images, or a stratified fold would miss it."""
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < cv:
        raise ConfigError(
            f"search.cv: {cv} folds need at least {cv} images of every class; class {classes[smallest]} has "
            f"{counts[smallest]} of the {len(y)} training images; lower search.cv or raise {images_key}"
        )


def feature_map(size: int, conv_filters: list[int], kernel_size: int, padding: str, pool_size: int) -> int | None:
    """The side of the last feature map ``build_cnn`` makes from ``size`` x ``size`` images; None if one vanishes."""
    for _ in conv_filters:
        size = size if padding == "same" else size - kernel_size + 1
        if size < 1:
            return None
        if pool_size:
            size = math.ceil(size / pool_size) if padding == "same" else (size - pool_size) // pool_size + 1
            if size < 1:
                return None
    return size


def check_feature_maps(base: dict[str, Any], grid: dict[str, list[Any]], size: int, where: str) -> None:
    """Every architecture the grid can combine must keep a feature map of at least 1 x 1 pixel."""
    axes = [name for name in ARCHITECTURE if isinstance(grid.get(name), list)]
    for values in itertools.product(*(grid[name] for name in axes)):
        params = base | dict(zip(axes, values, strict=True))
        arguments = {name.removeprefix("model__"): params[name] for name in ARCHITECTURE}
        if feature_map(size, **arguments) is None:
            key = f"{where}.model__kernel_size" if "model__kernel_size" in axes else CONFIG_KEYS["model__kernel_size"]
            raise ConfigError(
                f"{key}: kernel {params['model__kernel_size']} with padding {params['model__padding']}, pooling "
                f"{params['model__pool_size']} and {len(params['model__conv_filters'])} conv block(s) leaves no "
                f"pixel of the {size} x {size} images; use a smaller kernel, padding=same or fewer blocks"
            )


def preflight(cfg: Config, x_train: np.ndarray, y_train: np.ndarray) -> None:
    """Check what the search, or each stage of the study, will meet on this data."""
    base = estimator_params(cfg.model)
    size = x_train.shape[1]
    if cfg.study.enabled:
        _, y_stage1 = stratified_subset(
            y_train, y_train, cfg.study.stage1_train_size, cfg.seed, "study.stage1_train_size"
        )
        check_folds(cfg.search.cv, y_stage1, "study.stage1_train_size")
        for name, values in cfg.study.coarse.items():
            check_feature_maps(base, {name: list(values)}, size, "study.coarse")
    else:
        check_feature_maps(base, cfg.grid, size, "grid")
    check_folds(cfg.search.cv, y_train, "data.train_size")
