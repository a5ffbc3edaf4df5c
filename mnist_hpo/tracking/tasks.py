"""Where a callback stands in scikit-learn's task tree: the one reader of its task names and ids.

scikit-learn's callback contexts (``sklearn.callback``) name the tasks of a search with strings its
search classes choose, and number a search's evaluations candidate-major over the splits. The
estimator adds an ``epoch`` task per Keras epoch, the Optuna search a task per batch of trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mnist_hpo.search.tasks import BATCH_TASK, EPOCH_TASK

# scikit-learn's own task names (sklearn/model_selection/_search.py and _search_successive_halving.py).
SEARCH_TASK = "search"
EVALUATION_TASK = "candidate-split-evaluation"
REFIT_TASK = "refit-with-best-params"
HALVING_TASK = "halving-iteration"


@dataclass(frozen=True)
class Task:
    """One task of a search fit, as the project's tracking reads it."""

    kind: str  # "search", "batch", "fold", "refit", "epoch", or "" for any other
    path: tuple[int, ...]  # task ids from the root down: unique within one search fit
    split: int = 0  # a fold's split index in cv_results_ (repeat * folds + fold)
    iteration: int = 0  # a fold's halving iteration


def task_path(context: Any) -> tuple[int, ...]:
    """The ids from the root task down to ``context``."""
    path = []
    while context is not None:
        path.append(context.task_id)
        context = context.parent
    return tuple(reversed(path))


def task_of(context: Any, splits: int) -> Task:
    """The task ``context`` is, for a search of ``splits`` splits (folds x repeats)."""
    path = task_path(context)
    parent = context.parent
    if context.task_name == SEARCH_TASK and parent is not None and parent.parent is None:
        return Task("search", path)
    if context.task_name == BATCH_TASK:
        return Task("batch", path)
    if context.source_task_name == EVALUATION_TASK:
        iteration = parent.task_id if parent is not None and parent.task_name == HALVING_TASK else 0
        return Task("fold", path, split=context.task_id % splits, iteration=iteration)
    if context.source_task_name == REFIT_TASK:
        return Task("refit", path)
    if context.task_name == EPOCH_TASK and parent is not None:
        return Task("epoch", path)
    return Task("", path)
