"""Executors: what makes a search's planned fits present before scikit-learn asks for them.

The search itself always runs as scikit-learn runs it (``search.fit``), in loky or Ray workers
(execution/workers.py). With ``execution.fusion`` (the default) the fused executor trains the plan's
missing fits in groups into the fit store, ahead of the search (in a background thread while the
search restores what is done), so every fit the search makes is a restore.
Where fusion does not apply, nothing is trained ahead and the workers train each fit alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mnist_hpo.configuration.schema import ExecutionConfig
from mnist_hpo.execution.ahead import TrainingAhead
from mnist_hpo.execution.fit_store import FitStore
from mnist_hpo.execution.fused import FusedExecutor, FusedReport
from mnist_hpo.execution.plan import FitPlan, plan_splits
from mnist_hpo.search.bayesian import OptunaSearchCV
from mnist_hpo.search.strategies import SearchCV, is_halving


def fusion_skipped(search: SearchCV, execution: ExecutionConfig) -> str | None:
    """Why the fused executor does not run for ``search`` (None: it does)."""
    if not execution.fusion:
        return "execution.fusion=false"
    if is_halving(search):
        return "successive halving picks each iteration's candidates from the last one's scores"
    if execution.backend == "ray":  # fused groups train in the search process, which would leave the cluster idle
        return "execution.backend=ray trains each fit on the cluster; fused groups run in the search process only"
    return None


@contextmanager
def temporary_fit_store() -> Iterator[Path]:
    """A fit store folder for one search, removed after it: where fused members go with the store off."""
    with tempfile.TemporaryDirectory(prefix="mnist-hpo-fused-") as folder:
        yield Path(folder)


def train_ahead(
    search: SearchCV,
    X: np.ndarray,
    y: np.ndarray,
    execution: ExecutionConfig,
    store: Path,
    on_batch: Callable[[FusedReport], None] | None = None,
) -> FusedReport | TrainingAhead | str | None:
    """Train the search's missing fits in fused groups into ``store``; the reason when fusion does not apply.

    When the fused groups train every missing fit, they train in a background thread while the search
    restores, in this process, each fit once its group is stored (execution/ahead.py): the
    :class:`TrainingAhead` returned reports when finished. When some fits train alone, the groups
    train first and the search's workers train the rest: the :class:`FusedReport` is returned.
    A search that asks for its candidates in batches (Optuna) trains each batch ahead when it asks
    (``before_batch``), reporting each to ``on_batch``; then this returns None. The search's
    estimator must already carry ``fit_store=store`` and a ``search_token``.
    """
    reason = fusion_skipped(search, execution)
    if reason is not None:
        return reason
    fit_store = FitStore(store, execution.fit_store_budget_mb * 2**20)
    executor = FusedExecutor(search.estimator, fit_store, execution.fused_group_mb, search.estimator.search_token)
    if isinstance(search, OptunaSearchCV):
        splits = plan_splits(search, X, y)  # each split's rows hashed once per search, not per batch

        def train_batch(candidates: list[dict[str, Any]]) -> None:
            report = executor.run(FitPlan.of(search, X, y, candidates, splits), X, y)
            if on_batch is not None:
                on_batch(report)

        search.set_params(before_batch=train_batch)
        return None
    plan = FitPlan.of(search, X, y)
    groups = executor.prepare(plan, X, y)
    if executor.report.unfused or not groups:
        executor.train(groups, X, y)
        return executor.finish(plan)
    return TrainingAhead(executor, plan, groups, X, y).start()
