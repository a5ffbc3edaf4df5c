"""Time the same grid several ways: the runner unfused and fused, plain scikeras + GridSearchCV, bare model.fit.

    python scripts/benchmark.py --data PATH_TO_MNIST_NPZ [--out benchmark.json] [--full] [--set KEY=VALUE ...]

Default workload: the published activation x loss x batch-size grid (30 candidates), 3-fold
stratified CV, 1 epoch, on a fixed stratified 6,000-image subset of the training set. ``--full``
runs the published workload instead (60,000 images, 5 epochs). All three ways fit the same
candidates on the same folds with the same model and epochs; none refits at the end or scores
the training folds (the runner is told so: ``search.refit=false search.return_train_score=false``):

1. runner   - ``mnist_hpo.runner.run`` with MLflow tracking on (a temporary store) and the
              project's defaults but ``execution.fusion=false``: every fit one Keras ``fit``;
              ``--set`` passes config overrides (e.g. ``execution.n_jobs=1``).
   fused    - the same with ``execution.fusion=true``: the grid's fits trained in fused groups.
2. baseline - a plain scikeras ``KerasClassifier`` in ``GridSearchCV`` with library defaults,
              as the seed notebooks wrote it (model compiled in the build function, one-hot targets).
3. floor    - the same fits as bare ``model.fit`` calls in a loop: no sklearn, scikeras or MLflow.

It prints wall times, the ratios runner/baseline and runner/floor, the mean CV scores of the three
ways side by side, the machine, backend and versions, and writes them all to ``--out`` as JSON;
the libraries' start-up lines go to a log file beside it (``benchmark.log``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
Key = tuple[str, str, int]
Scores = dict[Key, float]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (x_train, y_train, x_test, y_test) or IDX folder")
    parser.add_argument("--out", default="benchmark.json", help="JSON results file (default: ./benchmark.json)")
    parser.add_argument("--full", action="store_true", help="the published workload: 60,000 images, 5 epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="runner config override")
    parser.add_argument("--ways", default="runner,fused,baseline,floor", help="comma-separated subset to run")
    return parser.parse_args()


def compose(overrides: list[str]) -> Any:
    """The runner's config for the published grid with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mnist_hpo.configuration.schema import register_configs, typed

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return typed(hydra_compose("config", overrides=overrides))


def configured(overrides: list[str], out: str) -> Any:
    """The composed config, with the libraries' start-up lines (here and in workers) in a log beside ``out``.

    Keras and its backend load here, untimed: otherwise the first way timed pays their ~4 s import.
    """
    cfg = compose(overrides)
    from mnist_hpo.environment.quiet import import_backend, route_chatter
    from mnist_hpo.environment.runtime import configure_backend

    route_chatter(Path(out).resolve().with_suffix(".log"), verbose=False)
    configure_backend(cfg.backend, cfg.device)
    import_backend()
    return cfg


def key_of(params: dict[str, Any]) -> Key:
    """A candidate's identity, whatever its parameters are called in one way or another."""
    loss = params.get("loss", params.get("model__loss"))  # plain scikeras routes by prefix, the runner does not
    return (str(params.get("activation", params.get("model__activation"))), str(loss), int(params["batch_size"]))


def argmax_accuracy(probabilities: Any, labels: Any) -> float:
    import numpy as np

    return float(np.mean(np.asarray(probabilities).argmax(axis=1) == labels))


def timed(way: Callable[[], Scores]) -> tuple[float, Scores]:
    start = time.perf_counter()
    scores = way()
    return time.perf_counter() - start, scores


def run_runner(cfg: Any) -> Scores:
    """The project's runner, tracking on, into a temporary store."""
    import pandas as pd
    from rich.console import Console

    from mnist_hpo.dispatch import run
    from mnist_hpo.session import JobContext

    with tempfile.TemporaryDirectory() as folder:
        job = JobContext(launch_dir=Path(folder), output_dir=Path(folder) / "out")
        run(cfg, job, Console(file=open(os.devnull, "w")))  # noqa: SIM115 - quiet for the timing
        frame = pd.read_csv(Path(folder) / "out" / "cv_results.csv")
    params = frame["params"].map(ast.literal_eval)
    return {key_of(p): float(score) for p, score in zip(params, frame["mean_test_score"], strict=True)}


def run_baseline(cfg: Any, data: Any, folds: list) -> Scores:
    """Plain scikeras in GridSearchCV, library defaults, model compiled in its build function."""
    import keras
    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV

    from mnist_hpo.model.cnn import build_cnn

    def create_model(activation: str = "relu", loss: str = "categorical_crossentropy") -> keras.Model:
        model = build_cnn(
            conv_filters=list(cfg.model.conv_filters),
            kernel_size=cfg.model.kernel_size,
            padding=cfg.model.padding,
            pool_size=cfg.model.pool_size,
            dense_units=cfg.model.dense_units,
            activation=activation,
        )
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        return model

    grid = {
        "model__activation": list(cfg.grid["activation"]),
        "model__loss": list(cfg.grid["loss"]),
        "batch_size": list(cfg.grid["batch_size"]),
    }
    classifier = KerasClassifier(
        model=create_model,
        epochs=cfg.model.epochs,
        validation_split=cfg.model.validation_split,
        random_state=cfg.seed,
        verbose=0,
    )
    search = GridSearchCV(
        classifier,
        grid,
        cv=folds,
        refit=False,
        scoring=lambda estimator, x, y: argmax_accuracy(estimator.predict_proba(x), y.argmax(axis=1)),
    )
    search.fit(data.x_train, keras.utils.to_categorical(data.y_train, 10))
    results = search.cv_results_
    return {key_of(p): float(s) for p, s in zip(results["params"], results["mean_test_score"], strict=True)}


def run_floor(cfg: Any, data: Any, folds: list) -> Scores:
    """The same fits as bare ``model.fit`` calls: the least any tool can spend."""
    import keras
    import numpy as np
    from sklearn.model_selection import ParameterGrid

    from mnist_hpo.model.cnn import build_cnn

    targets = keras.utils.to_categorical(data.y_train, 10)
    scores: Scores = {}
    grid = {name: list(values) for name, values in cfg.grid.items()}
    for params in ParameterGrid(grid):
        fold_scores = []
        for train, test in folds:
            keras.backend.clear_session(free_memory=False)  # no forced gc: ~0.4 s a fit here
            keras.utils.set_random_seed(cfg.seed)
            model = build_cnn(
                conv_filters=list(cfg.model.conv_filters),
                kernel_size=cfg.model.kernel_size,
                padding=cfg.model.padding,
                pool_size=cfg.model.pool_size,
                dense_units=cfg.model.dense_units,
                activation=params["activation"],
            )
            model.compile(optimizer="adam", loss=params["loss"], metrics=["accuracy"])
            model.fit(
                data.x_train[train],
                targets[train],
                epochs=cfg.model.epochs,
                batch_size=params["batch_size"],
                validation_split=cfg.model.validation_split,
                verbose=0,
            )
            fold_scores.append(argmax_accuracy(model.predict(data.x_train[test], verbose=0), data.y_train[test]))
        scores[key_of(params)] = float(np.mean(fold_scores))
    return scores


def machine() -> dict[str, Any]:
    import keras

    from mnist_hpo.environment.provenance import package_versions

    versions = package_versions()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras_backend": keras.backend.backend(),
        "versions": versions,
    }


def main() -> int:
    args = parse_args()
    overrides = [
        "experiment=leohoji",
        f"data.path={Path(args.data).resolve()}",
        "search.refit=false",
        "search.return_train_score=false",
        "execution.progress=false",
        *([] if args.full else ["data.train_size=6000", "model.epochs=1"]),
        *args.set,
    ]
    cfg = configured(overrides, args.out)
    from rich.console import Console
    from rich.table import Table
    from sklearn.model_selection import ParameterGrid, StratifiedKFold

    from mnist_hpo.data.loading import load_data

    data = load_data(cfg.data, cfg.seed)
    folds = list(StratifiedKFold(cfg.search.cv, shuffle=True, random_state=cfg.seed).split(data.x_train, data.y_train))
    unfused = replace(cfg, execution=replace(cfg.execution, fusion=False))
    fused = replace(cfg, execution=replace(cfg.execution, fusion=True))
    ways: dict[str, Callable[[], Scores]] = {
        "runner": lambda: run_runner(unfused),
        "fused": lambda: run_runner(fused),
        "baseline": lambda: run_baseline(cfg, data, folds),
        "floor": lambda: run_floor(cfg, data, folds),
    }
    chosen = [way for way in args.ways.split(",") if way]
    console = Console()
    workload = {
        "grid": {name: list(values) for name, values in cfg.grid.items()},
        "candidates": len(ParameterGrid({name: list(values) for name, values in cfg.grid.items()})),
        "folds": cfg.search.cv,
        "epochs": cfg.model.epochs,
        "train_images": len(data.y_train),
        "runner_overrides": args.set,
    }
    console.print(f"Workload: {workload}")
    results: dict[str, Any] = {}
    for way in chosen:
        console.print(f"running {way} ...")
        wall, scores = timed(ways[way])
        results[way] = {
            "wall_s": round(wall, 2),
            "mean_cv_score": sum(scores.values()) / len(scores),
            "scores": {" / ".join(map(str, key)): value for key, value in sorted(scores.items())},
        }
        console.print(f"{way}: {wall:.1f} s, mean CV score {results[way]['mean_cv_score']:.4f}")
    ratios = {}
    for way in ("runner", "fused"):
        for other in ("runner", "baseline", "floor"):
            if way in results and other in results and other != way:
                ratios[f"{way}/{other}"] = round(results[way]["wall_s"] / results[other]["wall_s"], 3)
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": machine(),
        "workload": workload,
        **results,
        "ratios": ratios,
    }
    table = Table(title="Same grid, side by side")
    for column in ("way", "wall s", "mean CV score", "runner s / way s"):
        table.add_column(column, justify="left" if column == "way" else "right")
    for way, result in results.items():
        speedup = results["runner"]["wall_s"] / result["wall_s"] if "runner" in results else None
        table.add_row(
            way, f"{result['wall_s']:.1f}", f"{result['mean_cv_score']:.4f}", f"{speedup:.2f}x" if speedup else ""
        )
    console.print(table)
    if len(results) > 1:
        keys = set.intersection(*(set(result["scores"]) for result in results.values()))
        spread = max(
            max(result["scores"][key] for result in results.values())
            - min(result["scores"][key] for result in results.values())
            for key in keys
        )
        report["max_score_difference"] = spread
        console.print(f"largest difference of one candidate's mean CV score between ways: {spread:.4f}")
    console.print(f"machine: {report['machine']}")
    Path(args.out).write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
