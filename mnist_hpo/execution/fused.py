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
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np
from sklearn.base import clone

from mnist_hpo.configuration.choices import ONE_HOT_LOSSES
from mnist_hpo.execution.ahead import BUILD_LOCK
from mnist_hpo.execution.compiled import build_trainer
from mnist_hpo.execution.fit_keys import describe
from mnist_hpo.execution.fit_store import FitStore
from mnist_hpo.execution.fused_model import WideCNN, fused_model
from mnist_hpo.execution.outputs import OUTPUTS
from mnist_hpo.execution.plan import FitPlan, PlannedFit
from mnist_hpo.execution.trainer import Trainer, learning_rate_mixes, unfusable_reason

log = logging.getLogger(__name__)

# Parameters members of one group may differ in: they change neither the step count nor the update rule.
MEMBER_PARAMS = frozenset({"activation", "loss", "kernel_initializer"})
# And the learning rate, where the optimizer's update is linear in it (trainer.member_rates).
RATE = "learning_rate"
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


@dataclass
class Group:
    """One fused group on one split: its fits, the members that train them, and the program they run."""

    fits: list[PlannedFit]
    members: list[Any]  # each fit's estimator, built and compiled
    program: tuple  # the trainer's key: members' parameters (less the batch size when shared), classes, micro
    micro: int | None
    batch_size: int


class FusedExecutor:
    """Makes every planned fit present in the fit store, training the missing ones in fused groups.

    Two phases: :meth:`prepare` builds every group's members (Keras models, drawn from the seeds:
    in the calling thread, so no other thread's seeding can interleave), :meth:`train` trains the
    groups and stores their members; it may run in another thread (execution/ahead.py), settling
    each group's fit keys as it goes.
    """

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
        self.report = FusedReport()
        self.score_train = False  # the plan's: outputs on the training rows are wanted too
        self.test_rows: dict[int, np.ndarray] = {}  # each split's test rows, one array for all its members

    def run(self, plan: FitPlan, X: np.ndarray, y: np.ndarray) -> FusedReport:
        """Train every planned fit the store does not hold, here and now; return what was done."""
        self.train(self.prepare(plan, X, y), X, y)
        return self.finish(plan)

    def finish(self, plan: FitPlan) -> FusedReport:
        """The report, with whether every planned fit is now stored."""
        self.report.complete = all(self.store.path(fit.key).exists() for fit in plan.fits)
        return self.report

    def prepare(self, plan: FitPlan, X: np.ndarray, y: np.ndarray) -> list[Group]:
        """The groups that train the plan's missing fits, members built, in the order the search needs them.

        Fits no group can train are counted in ``report.unfused`` (the search trains them alone).
        """
        started = time.perf_counter()
        self.report = FusedReport()
        OUTPUTS.clear()
        self.score_train = plan.score_train
        self.test_rows = {split.index: X[split.test] for split in plan.splits}
        pending = [fit for fit in plan.fits if not self.store.path(fit.key).exists()]
        families: dict[str, dict[int, list[PlannedFit]]] = defaultdict(lambda: defaultdict(list))
        for fit in pending:
            params = clone(self.estimator).set_params(**fit.params).result_params()
            families[family_key(params)][int(params["batch_size"])].append(fit)
        built: dict[tuple, list[Any]] = {}  # members by parameters less the batch size: one set per family
        groups = []
        for family in families.values():
            work = {size: self.work(fits, X) for size, fits in family.items()}
            parts = {size: self.by_split(fits) for size, fits in family.items()}
            first = parts[next(iter(parts))][0]
            members, _ = self.members_of(first, self.shared_params(first)[1], X, y, built)
            micro = shared_micro(work, self.row_by_row(members[0]))
            for size, split_parts in parts.items():
                for split_fits in split_parts:
                    groups += self.groups_of(split_fits, X, y, micro[size], size, built)
        self.report.seconds += time.perf_counter() - started
        # The search asks for its fits candidate by candidate, each split in turn.
        return sorted(groups, key=lambda group: (min(fit.candidate for fit in group.fits), group.fits[0].split.index))

    def groups_of(
        self, fits: list[PlannedFit], X: np.ndarray, y: np.ndarray, micro: int | None, size: int, built: dict
    ) -> list[Group]:
        """The groups (one, or budget-sized parts) that train ``fits`` of one batch size on one split.

        Members serve every split and every batch size of their family (their initial weights depend
        on the seed, the architecture and the classes, not on the rows; the batch size is a fit-time
        parameter, so their built models are the same, as the model cache takes them to be).
        """
        params, shared = self.shared_params(fits)
        members, classes = self.members_of(fits, shared, X, y, built)
        reason = next((r for r in (unfusable_reason(member.model_) for member in members) if r), None)
        if reason is not None:
            self.report.unfused[reason] = self.report.unfused.get(reason, 0) + len(fits)
            return []
        limit = max(1, int(self.budget // max(member_bytes(members[0].model_, micro or size, 1024), 1)))
        groups = []
        for start in range(0, len(fits), limit):
            part = slice(start, start + limit)
            program = (shared[part] if micro else tuple(describe(p) for p in params[part]), classes, micro)
            groups.append(Group(fits[part], members[part], program, micro, size))
        return groups

    @staticmethod
    def by_split(fits: Sequence[PlannedFit]) -> list[list[PlannedFit]]:
        """``fits`` per split, each split's members with the same activation side by side (the wide form
        activates each run of equal activations at once)."""
        parts: dict[int, list[PlannedFit]] = defaultdict(list)
        for fit in fits:
            parts[fit.split.index].append(fit)
        return [sorted(part, key=lambda fit: describe(fit.params.get("activation"))) for part in parts.values()]

    def members_of(
        self, fits: Sequence[PlannedFit], shared: tuple[str, ...], X: np.ndarray, y: np.ndarray, built: dict
    ) -> tuple[list[Any], tuple]:
        """The members that train ``fits`` (one split; ``shared``: :meth:`shared_params`), built once for every
        split and batch size of their family, and the classes of the split's training rows (theirs)."""
        split = fits[0].split
        classes = tuple(np.unique(y[split.train]).tolist())
        if (shared, classes) not in built:  # the training rows are copied only to build them
            built[(shared, classes)] = self.members(fits, X[split.train], y[split.train])
        return built[(shared, classes)], classes

    def shared_params(self, fits: Sequence[PlannedFit]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
        """Each fit's result-deciding parameters, and each described without the batch size (what its member is)."""
        params = [clone(self.estimator).set_params(**fit.params).result_params() for fit in fits]
        return params, tuple(describe({k: v for k, v in p.items() if k != "batch_size"}) for p in params)

    def work(self, fits: Sequence[PlannedFit], X: np.ndarray) -> int:
        """Member-rows of ``fits``: each one's training rows times its epochs."""
        return sum(len(fit.rows) * int(clone(self.estimator).set_params(**fit.params).epochs) for fit in fits)

    @staticmethod
    def row_by_row(member: Any) -> bool:
        """Whether ``member``'s model computes each row alone and draws nothing: micro-steps change no number.

        The wide form's layers (conv, activation, pool, dense) are such; any other model is assumed not.
        """
        fused = fused_model([member.model_])
        return isinstance(fused, WideCNN) and not fused.draws_random

    def members(self, fits: Sequence[PlannedFit], x_train: np.ndarray, y_train: np.ndarray) -> list[Any]:
        """Each fit's estimator, built and compiled as its own fit would start (scikeras' ``initialize``)."""
        return [clone(self.estimator).set_params(**fit.params).prepare(x_train, y_train) for fit in fits]

    def train(
        self,
        groups: Sequence[Group],
        X: np.ndarray,
        y: np.ndarray,
        settle: Callable[[Sequence[str]], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Train ``groups`` in order and store each member; ``settle`` hears each group's fit keys once done.

        A trainer serves every group of its program; it is let go after its last group. ``stop`` is
        asked before each group (a cancelled search).
        """
        started = time.perf_counter()
        last = {group.program: index for index, group in enumerate(groups)}
        trainers: dict[tuple, Trainer] = {}
        for index, group in enumerate(groups):
            if stop is not None and stop():
                break
            fresh = group.program not in trainers
            if fresh:
                sparse = [member.loss not in ONE_HOT_LOSSES for member in group.members]
                models = [member.model_ for member in group.members]
                trainers[group.program] = build_trainer(models, sparse, micro=group.micro)
            with BUILD_LOCK if fresh else nullcontext():  # its programs' first calls trace and compile
                self.train_group(trainers[group.program], group, X, y)
            if last[group.program] == index:
                del trainers[group.program]
            group.members = []  # its own list: the members go once every group of their family has trained
            if settle is not None:
                settle([fit.key for fit in group.fits])
        self.report.seconds += time.perf_counter() - started

    def train_group(self, trainer: Trainer, group: Group, X: np.ndarray, y: np.ndarray) -> None:
        """Train one group on its split and store each member (a failed one is left to the search)."""
        report, fits, members = self.report, group.fits, group.members
        split = fits[0].split
        x_train, y_train = X[split.train], y[split.train]
        order = replace(members[0].batch_order(len(x_train), split.digest), batch_size=group.batch_size)
        targets = [member.target_encoder_.transform(y_train) for member in members]
        # The rows the search scores each fit on: the group's outputs on them are what it would predict.
        score = [self.test_rows[split.index], *([x_train] if self.score_train else [])]
        started = time.perf_counter()
        results = trainer.fit(x_train, targets, order, members[0].epochs, score)
        share = (time.perf_counter() - started) / len(fits)
        report.groups += 1
        name = f"{self.token[:8]}-{report.groups}"
        for fit, member, result in zip(fits, members, results, strict=True):
            if result.error is not None:
                report.failed += 1
                log.info("fused group %s: candidate %d, split %d: %s", name, fit.candidate, split.index, result.error)
                continue
            meta = {
                "fit_time_s": share,
                "classes": member.classes_.tolist(),
                "samples": len(x_train),
                "fused_group": name,
                "fused_members": len(fits),
                "trained_by": self.token,
            }
            if self.store.save(fit.key, result.weights, result.history, meta):
                report.trained += 1
                for rows, outputs in zip(score, result.outputs, strict=True):
                    OUTPUTS.put(fit.key, rows, outputs)
