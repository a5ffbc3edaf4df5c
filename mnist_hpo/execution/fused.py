"""The fused executor: trains a plan's missing fits in groups, each group one model, into the fit store.

Planned fits that share what fixes the step count and the update rule (every result-deciding
parameter but the activation, the loss and the initializer) and a split form a group. A group trains
as one fused model (execution/trainer.py); each member is written to the fit store under its own
fit key as an ordinary fit, with its own per-epoch history. The scikit-learn search then runs as
always and restores every fit, so ``cv_results_``, refit rules, callbacks and MLflow are unchanged;
it scores each restored member from the outputs the group computed on its rows (execution/outputs.py).

Groups that differ only in batch size form a family. Each batch size's program is compiled apart
(~2 s on this CPU), which a small search pays more for than for its training: where a batch size's
training is small (:data:`SHARED_PROGRAM_WORK`), its group runs the family's smallest batch size's
program, each step as micro-steps of that size whose gradients add up (execution/batches.py): the same
updates up to float rounding, one compile fewer, ~35 % more training time (docs/performance.md).

A member that fails (its loss turned non-finite) is not stored: the search trains it alone, where it
fails as it would have unfused. A search killed mid-group keeps every group already stored; its
restart trains only the members not in the store.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np
from sklearn.base import clone

from mnist_hpo.configuration.choices import ONE_HOT_LOSSES
from mnist_hpo.execution.compiled import build_trainer
from mnist_hpo.execution.fit_keys import describe
from mnist_hpo.execution.fit_store import FitStore
from mnist_hpo.execution.fused_model import WideCNN, fused_model
from mnist_hpo.execution.outputs import OUTPUTS
from mnist_hpo.execution.plan import FitPlan, PlannedFit
from mnist_hpo.execution.trainer import Trainer, learning_rate_mixes, unfusable_reason

log = logging.getLogger(__name__)

# Parameters members of one group may differ in: they change neither the step count nor the update rule.
MEMBER_PARAMS = frozenset({"model__activation", "loss", "model__kernel_initializer"})
# And the learning rate, where the optimizer's update is linear in it (trainer.member_rates).
RATE = "optimizer__learning_rate"
# Member-rows a group of a larger batch size may train (members x training rows x epochs, summed over its
# splits) and still share the family's smallest batch size's program: below it, the micro-steps' extra
# training (~35 % of its training time here) costs less than its own compile (docs/performance.md).
SHARED_PROGRAM_WORK = 1_000_000
BYTES_PER_FLOAT = 4
ACTIVATION_COPIES = 4  # forward values, their gradients, and the temporaries of both, per layer output


@dataclass
class FusedReport:
    """What the fused executor did: fits trained per group, failures, and what ran unfused and why."""

    groups: int = 0
    trained: int = 0
    failed: int = 0
    unfused: dict[str, int] = field(default_factory=dict)  # reason -> fits left to the search
    seconds: float = 0.0
    complete: bool = False  # every planned fit is in the store: the search only restores

    def line(self) -> str:
        """One line for the console."""
        parts = [f"fused training: {self.trained} fit(s) in {self.groups} group(s), {self.seconds:.1f} s"]
        if self.failed:
            parts.append(f"{self.failed} failed (trained again alone)")
        parts += [f"{count} unfused: {reason}" for reason, count in self.unfused.items()]
        return "; ".join(parts)


def group_key(params: dict[str, Any]) -> str:
    """What members of one group share: every result-deciding parameter but :data:`MEMBER_PARAMS` (and :data:`RATE`)."""
    rate = params.get(RATE)
    mixes = (
        isinstance(rate, int | float) and not isinstance(rate, bool) and learning_rate_mixes(params.get("optimizer"))
    )
    differ = MEMBER_PARAMS | {RATE} if mixes else MEMBER_PARAMS
    return ";".join(f"{name}={describe(params[name])}" for name in sorted(params) if name not in differ)


def family_key(params: dict[str, Any]) -> str:
    """What groups of one family share: their :func:`group_key` but the batch size."""
    return group_key({name: value for name, value in params.items() if name != "batch_size"})


def shared_micro(work: dict[int, int], can_share: bool) -> dict[int, int | None]:
    """Per batch size of one family, the micro-step size its program runs with (None: its own program).

    ``work`` is each batch size's member-rows; the smallest batch size's program serves each larger
    one it divides whose work is at most :data:`SHARED_PROGRAM_WORK`. ``can_share``: the members'
    forward is row by row (no batch statistics, no random draws), so micro-steps change nothing.
    """
    sizes = sorted(work)
    shared = {size for size in sizes[1:] if can_share and size % sizes[0] == 0 and work[size] <= SHARED_PROGRAM_WORK}
    return {size: sizes[0] if shared and (size in shared or size == sizes[0]) else None for size in sizes}


def member_bytes(model: keras.Model, batch_size: int, chunk: int) -> int:
    """Memory one member needs in a fused step: its layer outputs for a batch (and a validation chunk), weights."""
    values = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers if hasattr(layer, "output"))
    weights = sum(int(np.prod(variable.shape)) for variable in model.trainable_variables)
    return BYTES_PER_FLOAT * (ACTIVATION_COPIES * values * max(batch_size, chunk) + 4 * weights)


class FusedExecutor:
    """Makes every planned fit present in the fit store, training the missing ones in fused groups."""

    def __init__(self, estimator: Any, store: FitStore, budget_mb: int, token: str | None = None) -> None:
        """Args:
        estimator: The search's unfitted estimator; each member is a clone with its candidate's parameters.
        store: The fit store the search restores from.
        budget_mb: Memory one group may take (members beyond it form another group).
        token: Marks stored members as trained by this search (``search_token``); a fresh one if None.
        """
        self.estimator = estimator
        self.store = store
        self.budget = budget_mb * 2**20
        self.token = token or uuid.uuid4().hex
        # By program (the members' parameters, the classes, the micro-step size): the trainer, its members.
        self.trainers: dict[tuple, tuple[Trainer, list[Any]]] = {}
        self.score_train = False  # the plan's: outputs on the training rows are wanted too
        self.test_rows: dict[int, np.ndarray] = {}  # each split's test rows, one array for all its members

    def run(self, plan: FitPlan, X: np.ndarray, y: np.ndarray) -> FusedReport:
        """Train every planned fit the store does not hold; return what was done."""
        started = time.perf_counter()
        report = FusedReport()
        OUTPUTS.clear()
        self.score_train = plan.score_train
        self.test_rows = {split.index: X[split.test] for split in plan.splits}
        pending = [fit for fit in plan.fits if not self.store.path(fit.key).exists()]
        families: dict[str, dict[int, list[PlannedFit]]] = defaultdict(lambda: defaultdict(list))
        for fit in pending:
            params = clone(self.estimator).set_params(**fit.params).result_params()
            families[family_key(params)][int(params["batch_size"])].append(fit)
        for family in families.values():
            work = {size: self.work(fits, X) for size, fits in family.items()}
            micro = shared_micro(work, self.row_by_row(next(iter(family.values()))[0], X, y))
            for size, fits in family.items():
                by_split: dict[int, list[PlannedFit]] = defaultdict(list)
                for fit in fits:
                    by_split[fit.split.index].append(fit)
                for split_fits in by_split.values():
                    # Members with the same activation side by side: the wide form activates each run at once.
                    split_fits.sort(key=lambda fit: describe(fit.params.get("model__activation")))
                    self.train_group(split_fits, X, y, report, micro[size])
            # Let the members go: the model cache hands their compiled models to the next family's members.
            self.trainers.clear()
        report.seconds = time.perf_counter() - started
        report.complete = all(self.store.path(fit.key).exists() for fit in plan.fits)
        return report

    def work(self, fits: Sequence[PlannedFit], X: np.ndarray) -> int:
        """Member-rows of ``fits``: each one's training rows times its epochs."""
        return sum(len(fit.rows) * int(clone(self.estimator).set_params(**fit.params).epochs) for fit in fits)

    def row_by_row(self, fit: PlannedFit, X: np.ndarray, y: np.ndarray) -> bool:
        """Whether ``fit``'s model computes each row alone and draws nothing: micro-steps change no number.

        The wide form's layers (conv, activation, pool, dense) are such; any other model is assumed not.
        """
        (member,) = self.members([fit], X[fit.rows], y[fit.rows])
        fused = fused_model([member.model_])
        return isinstance(fused, WideCNN) and not fused.draws_random

    def members(self, fits: Sequence[PlannedFit], x_train: np.ndarray, y_train: np.ndarray) -> list[Any]:
        """Each fit's estimator, built and compiled as its own fit would start (scikeras' ``initialize``)."""
        return [clone(self.estimator).set_params(**fit.params).prepare(x_train, y_train) for fit in fits]

    def train_group(
        self, fits: list[PlannedFit], X: np.ndarray, y: np.ndarray, report: FusedReport, micro: int | None
    ) -> None:
        """Train the fits of one group on one split (in budget-sized parts) and store each member.

        The trainer and the members it was built from serve every split of the same members (their
        initial weights depend on the seed, the architecture and the classes, not on the rows) and,
        run in micro-steps of ``micro`` rows, every batch size of their family (:func:`shared_micro`):
        the batch size is a fit-time parameter, so their built models are the same (as the model cache
        takes them to be).
        """
        split = fits[0].split
        x_train, y_train = X[split.train], y[split.train]
        classes = tuple(np.unique(y_train).tolist())
        params = [clone(self.estimator).set_params(**fit.params).result_params() for fit in fits]
        batch_size = int(params[0]["batch_size"])
        program = tuple(describe({k: v for k, v in p.items() if micro is None or k != "batch_size"}) for p in params)
        trainer_key = (program, classes, micro)
        if trainer_key not in self.trainers:
            members = self.members(fits, x_train, y_train)
            reason = next((r for r in (unfusable_reason(member.model_) for member in members) if r), None)
            if reason is not None:
                report.unfused[reason] = report.unfused.get(reason, 0) + len(fits)
                return
            size = max(1, int(self.budget // max(member_bytes(members[0].model_, micro or batch_size, 1024), 1)))
            if len(fits) > size:
                for start in range(0, len(fits), size):
                    self.train_group(fits[start : start + size], X, y, report, micro)
                return
            sparse = [member.loss not in ONE_HOT_LOSSES for member in members]
            self.trainers[trainer_key] = (build_trainer([m.model_ for m in members], sparse, micro=micro), members)
        trainer, members = self.trainers[trainer_key]
        order = replace(members[0].batch_order(len(x_train), split.digest), batch_size=batch_size)
        targets = [member.target_encoder_.transform(y_train) for member in members]
        # The rows the search scores each fit on: the group's outputs on them are what it would predict.
        score = [self.test_rows[split.index], *([x_train] if self.score_train else [])]
        started = time.perf_counter()
        results = trainer.fit(x_train, targets, order, members[0].epochs, score)
        share = (time.perf_counter() - started) / len(fits)
        report.groups += 1
        group = f"{self.token[:8]}-{report.groups}"
        for fit, member, result in zip(fits, members, results, strict=True):
            if result.error is not None:
                report.failed += 1
                log.info("fused group %s: candidate %d, split %d: %s", group, fit.candidate, split.index, result.error)
                continue
            meta = {
                "fit_time_s": share,
                "classes": member.classes_.tolist(),
                "samples": len(x_train),
                "fused_group": group,
                "fused_members": len(fits),
                "trained_by": self.token,
            }
            if self.store.save(fit.key, result.weights, result.history, meta):
                report.trained += 1
                for rows, outputs in zip(score, result.outputs, strict=True):
                    OUTPUTS.put(fit.key, rows, outputs)
