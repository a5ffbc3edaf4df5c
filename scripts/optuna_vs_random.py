"""Best CV score after 12, 24 and 48 trials: Optuna (TPE) against random search, same data and folds.

    python scripts/optuna_vs_random.py [--data PATH_TO_MNIST_NPZ] [--out optuna_vs_random.json] [--seeds 0,1,2]

The space: a continuous learning rate (loguniform 1e-4 to 1e-1) and two categorical axes (the
activation, 5 values, and the loss, 2), on the default CNN. Each strategy runs 48 trials per sampler
seed; the folds are the config's (``seed=0``) for every run, only the sampler's seed changes
(``random_state``). Trials run as the tool runs them: fused training, Optuna in batches of
``search.trials_per_batch`` (8 unless ``--set`` says otherwise). "Best after k" is the
best mean CV score among a run's first k trials in the order they were drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmark import configured  # the same composed, quiet set-up (this script's folder is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
CHECKPOINTS = (12, 24, 48)
SPACE = [
    "grid=empty",
    "+grid.learning_rate={dist: loguniform, low: 0.0001, high: 0.1}",
    "+grid.activation=[relu,tanh,sigmoid,elu,leaky_relu]",
    "+grid.loss=[categorical_crossentropy,mse]",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="MNIST .npz (default: the embedded subset)")
    parser.add_argument("--out", default="optuna_vs_random.json", help="JSON results file")
    parser.add_argument("--seeds", default="0,1,2", help="sampler seeds, comma-separated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    return parser.parse_args()


def best_after(scores: list[float]) -> dict[int, float]:
    """The best score among the first k trials, for each checkpoint k."""
    import numpy as np

    return {k: float(np.nanmax(scores[:k])) for k in CHECKPOINTS if len(scores) >= k}


def run_strategy(cfg: Any, strategy: str, sampler_seed: int, data: Any, store: Path) -> tuple[list[float], float]:
    """One search of ``strategy``; its trials' mean CV scores in drawing order, and its wall time."""
    from dataclasses import replace

    from mnist_hpo.execution.ahead import TrainingAhead
    from mnist_hpo.execution.estimator import build_estimator
    from mnist_hpo.execution.executors import train_ahead
    from mnist_hpo.search.space import build_space
    from mnist_hpo.search.strategies import build_search

    search_cfg = replace(cfg.search, strategy=strategy)
    estimator = build_estimator(cfg.model, cfg.execution, cfg.seed, fit_store=store, search_token=uuid.uuid4().hex)
    optuna = strategy == "optuna"
    space = dict(cfg.grid) if optuna else build_space(cfg.grid, allow_distributions=True)
    search = build_search(search_cfg, estimator, space, cfg.seed, refit=False)
    search.set_params(random_state=sampler_seed)  # the folds stay those of cfg.seed
    start = time.perf_counter()
    ahead = train_ahead(search, data.x_train, data.y_train, cfg.execution, store)
    try:
        search.fit(data.x_train, data.y_train)  # in this process (n_jobs=1): each fit waits for its group
    finally:
        if isinstance(ahead, TrainingAhead):
            ahead.cancel()
    wall = time.perf_counter() - start
    results = search.cv_results_
    order = results["trial"] if optuna else range(len(results["mean_test_score"]))
    by_order = dict(zip(order, results["mean_test_score"], strict=True))
    return [float(by_order[index]) for index in sorted(by_order)], wall


def main() -> int:
    args = parse_args()
    data_overrides = [f"data.path={Path(args.data).resolve()}", "data.train_size=3000"] if args.data else []
    overrides = [
        *SPACE,
        "search.n_iter=48",
        "search.return_train_score=false",
        "execution.progress=false",
        "model.epochs=2",
        *data_overrides,
        *args.set,
    ]
    cfg = configured(overrides, args.out)
    from rich.console import Console
    from rich.table import Table

    from mnist_hpo.data.loading import load_data
    from mnist_hpo.environment.runtime import seed_everything

    console = Console()
    data = load_data(cfg.data, cfg.seed)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, dict[int, Any]] = {"optuna": {}, "random": {}}
    with tempfile.TemporaryDirectory(prefix="optuna-vs-random-") as folder:
        for seed in seeds:
            for strategy in runs:
                seed_everything(cfg.seed, cfg.deterministic)
                scores, wall = run_strategy(cfg, strategy, seed, data, Path(folder))
                runs[strategy][seed] = {"scores": scores, "best_after": best_after(scores), "wall_s": round(wall, 1)}
                console.print(f"{strategy} seed {seed}: {runs[strategy][seed]['best_after']} in {wall:.1f} s")
    table = Table(title=f"Best mean CV score after k trials ({len(data.y_train)} training images)")
    table.add_column("strategy")
    table.add_column("sampler seed", justify="right")
    for k in CHECKPOINTS:
        table.add_column(f"after {k}", justify="right")
    table.add_column("wall s", justify="right")
    for strategy, by_seed in runs.items():
        for seed, run in by_seed.items():
            cells = [f"{run['best_after'][k]:.4f}" for k in CHECKPOINTS]
            table.add_row(strategy, str(seed), *cells, f"{run['wall_s']}")
    console.print(table)
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "overrides": overrides,
        "train_images": len(data.y_train),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
