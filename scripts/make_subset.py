"""Cut the stratified MNIST subset that ships inside the package from a full mnist.npz."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mnist_hpo" / "assets" / "mnist_subset.npz"


def stratified_take(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` samples of ``(x, y)`` with the class proportions of ``y``."""
    x_take, _, y_take, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=seed)
    return x_take, y_take


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path, help="full MNIST .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with np.load(args.source) as full:
        x_train, y_train = stratified_take(full["x_train"], full["y_train"], args.train, args.seed)
        x_test, y_test = stratified_take(full["x_test"], full["y_test"], args.test, args.seed)
    np.savez_compressed(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(y_train)} train, {len(y_test)} test images")


if __name__ == "__main__":
    main()
