"""Bayesian search inside the scikit-learn search: an Optuna study asks for candidates in batches.

:class:`OptunaSearchCV` is a scikit-learn search like grid or random search: it implements
``_run_search``, the hook scikit-learn documents for new strategies, and evaluates each batch of
trials with ``evaluate_candidates``, so every trial is a candidate with its folds in ``cv_results_``,
in MLflow and in the fit store, and the trials of a batch train together in fused groups. The
study lives in an Optuna RDB storage (SQLite under the tracking store's folder, one file per
search identity), so a killed search resumes its study: finished trials are not asked again, and
their fits, like a killed batch's, come back from the fit store.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from sklearn.model_selection._search import BaseSearchCV  # scikit-learn's documented base for new strategies

from mnist_hpo.configuration.schema import ConfigError
from mnist_hpo.search.space import distribution, is_distribution
from mnist_hpo.search.tasks import BATCH_TASK

# Optuna's own progress lines ("Trial 3 finished with value ...") would repeat what the search prints.
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Samplers' keyword arguments are settled API; Optuna still marks some as experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
PLAIN = (str, int, float, bool, type(None))  # what an Optuna categorical choice may be
STUDIES_SUBDIR = "optuna"  # the studies' folder inside the tracking store folder


@dataclass(frozen=True)
class StudyStorage:
    """Where a search's study lives: an RDB storage URL and the study's name (the search's resume identity)."""

    url: str
    name: str
    fresh: bool = False  # start the study over (execution.resume=false)

    @classmethod
    def beside(cls, store_dir: Path, name: str, fresh: bool = False) -> StudyStorage:
        """One SQLite file per study under ``<store_dir>/optuna/``, named after it."""
        folder = store_dir / STUDIES_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{folder / f'{name}.db'}", name, fresh)


def choice_text(value: Any) -> Any:
    """A categorical value as Optuna can store it: itself when plain, else its JSON text."""
    return value if isinstance(value, PLAIN) else json.dumps(value)


def optuna_space(grid: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The ``grid`` config group as Optuna distributions: lists categorical, ``{dist: ...}`` numeric.

    ``uniform`` and ``loguniform`` become float distributions (``log=True`` for the latter), ``randint``
    an integer one with both ends included, as in random search.
    """
    space: dict[str, BaseDistribution] = {}
    for key, value in grid.items():
        if is_distribution(value):
            distribution(key, value)  # the same checks, and messages, as random search's
            if value["dist"] == "choice":
                value = list(value["values"])
            elif value["dist"] == "randint":
                space[key] = IntDistribution(int(value["low"]), int(value["high"]))
                continue
            else:
                space[key] = FloatDistribution(
                    float(value["low"]), float(value["high"]), log=value["dist"] == "loguniform"
                )
                continue
        if not isinstance(value, list) or not value:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {value!r}")
        space[key] = CategoricalDistribution([choice_text(choice) for choice in value])
    return space


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),  # a batch's trials differ
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


class OptunaSearchCV(BaseSearchCV):
    """Cross-validated search whose candidates an Optuna study asks for, a batch of trials at a time.

    Each batch is ``trials_per_batch`` trials asked together (TPE lies constant about the running
    ones, so they differ), evaluated in one ``evaluate_candidates`` call, then told their mean CV
    score (``mean_test_score``; a trial whose folds all failed is told FAIL). ``cv_results_`` holds one
    row per trial in trial order, with its trial number in the ``trial`` column.

    Args:
        estimator: The estimator each candidate clones.
        param_distributions: The ``grid`` config group: lists, ``{dist: ...}`` entries (:func:`optuna_space`).
        n_iter: Trials in the study when the search ends.
        trials_per_batch: Trials asked, trained and told together.
        sampler: One of :data:`SAMPLERS`, seeded by ``random_state`` and the trials already in the study.
        storage: Where the study lives; None: in memory, for this fit only.
        before_batch: Called with a batch's candidates before they are evaluated (fused training ahead).
        The rest: as for scikit-learn's ``RandomizedSearchCV``.
    """

    def __init__(
        self,
        estimator: Any,
        param_distributions: Mapping[str, Any],
        *,
        n_iter: int = 10,
        trials_per_batch: int = 1,
        sampler: str = "tpe",
        random_state: int = 0,
        storage: StudyStorage | None = None,
        before_batch: Callable[[list[dict[str, Any]]], None] | None = None,
        scoring: Any = None,
        n_jobs: int | None = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: str = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
    ) -> None:
        super().__init__(
            estimator=estimator,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.trials_per_batch = trials_per_batch
        self.sampler = sampler
        self.random_state = random_state
        self.storage = storage
        self.before_batch = before_batch

    def __getstate__(self) -> dict[str, Any]:
        """The search as scikit-learn sends it to workers (the caller of each fit): without ``before_batch``.

        Batches train ahead in the search's own process; the hook holds its compiled trainers.
        """
        return {**super().__getstate__(), "before_batch": None}

    def open_study(self) -> optuna.Study:
        """The search's study, created or resumed; its sampler seeded past the trials it already holds.

        A resumed study's sampler is seeded with ``random_state`` plus its trial count, so it does
        not draw again the random start-up points its first run drew.
        """
        storage = optuna.storages.RDBStorage(self.storage.url) if self.storage is not None else None
        name = self.storage.name if self.storage is not None else None
        if self.storage is not None and self.storage.fresh:
            with contextlib.suppress(KeyError):  # KeyError: no such study yet
                optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
        held = len(study.get_trials(deepcopy=False))
        study.sampler = SAMPLERS[self.sampler](self.random_state + held)
        return study

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's parameters as the estimator takes them: categorical texts back to the grid's values."""
        return {name: self.choices_.get(name, {}).get(value, value) for name, value in params.items()}

    def _run_search(self, evaluate_candidates: Callable[..., dict[str, Any]], *, callback_ctx: Any = None) -> None:
        """Replay the study's trials (a resumed search), then ask, evaluate and tell batches up to ``n_iter``."""
        self.distributions_ = optuna_space(self.param_distributions)
        self.choices_ = {
            name: {choice_text(choice): choice for choice in values}
            for name, values in self.param_distributions.items()
            if isinstance(values, list)
        }
        study = self.open_study()
        held = sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number)
        replay = [trial for trial in held if trial.state.is_finished() or trial.state == TrialState.RUNNING]
        replay = replay[: self.n_iter]
        left = self.n_iter - len(replay)
        batches = (1 if replay else 0) + math.ceil(left / self.trials_per_batch)
        search_ctx = callback_ctx.subcontext(task_name="search", max_subtasks=batches).call_on_fit_task_begin(
            estimator=self
        )
        if replay:  # finished trials come back from the fit store; a killed batch's are told now
            self.evaluate_batch(study, replay, evaluate_candidates, search_ctx)
        while left > 0:
            count = min(self.trials_per_batch, left)
            trials = [study.ask(self.distributions_) for _ in range(count)]
            self.evaluate_batch(study, trials, evaluate_candidates, search_ctx)
            left -= count
        search_ctx.call_on_fit_task_end(estimator=self)

    def evaluate_batch(
        self,
        study: optuna.Study,
        trials: Sequence[optuna.Trial | FrozenTrial],
        evaluate_candidates: Callable[..., dict[str, Any]],
        search_ctx: Any,
    ) -> None:
        """Evaluate one batch of trials as candidates and tell the study each running trial's mean CV score."""
        candidates = [self.decode(trial.params) for trial in trials]
        self.batch_trials_ = [trial.number for trial in trials]
        self.batch_candidates_ = candidates
        if self.before_batch is not None:
            self.before_batch(candidates)
        batch_ctx = search_ctx.subcontext(
            task_name=BATCH_TASK, max_subtasks=len(candidates) * self.n_splits_, sequential_subtasks=False
        ).call_on_fit_task_begin(estimator=self)
        results = evaluate_candidates(candidates, more_results={"trial": self.batch_trials_}, callback_ctx=batch_ctx)
        batch_ctx.call_on_fit_task_end(estimator=self)
        scores = results["mean_test_score"][-len(candidates) :]
        for trial, score in zip(trials, scores, strict=True):
            if isinstance(trial, FrozenTrial) and trial.state != TrialState.RUNNING:
                continue  # told when it first finished
            if np.isfinite(score):
                study.tell(trial.number, float(score))
            else:
                study.tell(trial.number, state=TrialState.FAIL)
