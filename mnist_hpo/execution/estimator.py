"""The scikit-learn estimator: a scikeras classifier that sklearn recognises and can watch."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import keras
import numpy as np
from scikeras.utils.transformers import ClassifierLabelEncoder
from sklearn.callback import CallbackContext, CallbackSupportMixin, with_callbacks
from sklearn.exceptions import NotFittedError
from sklearn.utils import ClassifierTags

from mnist_hpo.configuration.choices import ONE_HOT_LOSSES
from mnist_hpo.configuration.schema import ExecutionConfig, ModelConfig
from mnist_hpo.execution.ahead import BUILD_LOCK, PENDING
from mnist_hpo.execution.batches import BatchOrder, in_chunks
from mnist_hpo.execution.compiled import build_trainer
from mnist_hpo.execution.fit_keys import KNOWN_ROWS, describe, digest_arrays, key_from_digest, numerics_versions
from mnist_hpo.execution.fit_store import FitStore
from mnist_hpo.execution.model_cache import MODELS
from mnist_hpo.execution.outputs import OUTPUTS
from mnist_hpo.execution.scikeras_adapter import KerasClassifierAdapter
from mnist_hpo.execution.trainer import unfusable_reason
from mnist_hpo.model.params import (
    TRAINING_ARGUMENTS,
    builder_defaults,
    builder_identity,
    estimator_params,
    load_builder,
)
from mnist_hpo.search.tasks import EPOCH_TASK

log = logging.getLogger(__name__)

# The hyperparameters this class applies that scikeras does not know: kept from the builder.
OWN_TRAINING_ARGUMENTS = tuple(
    name for name in TRAINING_ARGUMENTS if name not in inspect.signature(KerasClassifierAdapter.__init__).parameters
)

# Rows per compiled prediction call when ``predict_batch_size`` is unset. Keras' ``predict`` builds a
# tf.data pipeline per call: 2,000 rows took 57 ms here at batch 1,000, 11 ms in one ``predict_on_batch``.
PREDICT_ROWS = 1024

# Parameters that reach only ``Model.fit`` (or no Keras call at all): one compiled model serves
# every value of them. Anything else (even an unknown parameter) keeps models apart.
FIT_TIME_PARAMS = frozenset(
    {"batch_size", "epochs", "validation_split", "shuffle", "verbose", "callbacks", "class_weight",
     "predict_batch_size", "warm_start", "random_state"}
)  # fmt: skip


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss; the fold scores ``error_score``."""


class EpochTasks(keras.callbacks.Callback):
    """Reports each Keras epoch to sklearn callbacks as a sub-task of the fit task."""

    def __init__(self, estimator: MnistCNNClassifier, context: CallbackContext) -> None:
        super().__init__()
        self.estimator = estimator
        self.context = context
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        epoch_context = self.context.subcontext(task_name=EPOCH_TASK)
        epoch_context.call_on_fit_task_begin(estimator=self.estimator)
        history = {name: list(values) for name, values in self.history.items()}
        epoch_context.call_on_fit_task_end(
            estimator=self.estimator,
            reconstruction_attributes=lambda: {"history_": history},
        )


class MnistCNNClassifier(CallbackSupportMixin, KerasClassifierAdapter):
    """``KerasClassifier`` for the configured network, fixed for scikit-learn >= 1.6 and made observable.

    * ``__sklearn_tags__`` declares a classifier: scikeras 0.13 keeps the pre-1.6 tags, so
      ``is_classifier`` is False and an integer ``cv`` silently becomes unstratified KFold.
    * Targets are one-hot for categorical cross-entropy *and* MSE, as the published study.
    * A fit reuses this process' compiled model of the same architecture, reset to its initial
      state, so Keras traces each step once (``model_cache_mb``, 0 = off; model_cache.py). A fit
      that builds starts from a cleared Keras session (without the forced ``gc.collect``, ~0.4 s
      a fit here); what TensorFlow still keeps is bounded by recycled workers (workers.py).
    * Each fit and each epoch is an sklearn callback task, so search callbacks see folds.
    * A non-finite training loss raises :class:`TrainingDivergedError`.
    * With ``fit_store`` (a folder, fit_store.py), each finished fit is saved there as data and
      an identical later fit (same result-deciding parameters, data, backend and numerics
      versions) is restored from it instead of trained: ``fit_reused_`` says so, ``fit_key_``
      names the entry and ``fit_time_s_`` is the training time, as measured when it trained.

    ``fit_store``, ``fit_store_budget_mb`` and ``model_cache_mb`` are this class's own keywords
    (scikeras' documented way to subclass): they say how a fit runs, never what it learns, so
    :data:`EXECUTION_PARAMS` keeps them out of fit keys and model signatures, and scikeras never
    routes them to the model. Every other keyword is a hyperparameter under its config name
    (``params.py``): the builder's arguments reach the builder (scikeras passes a constructor's
    extra keywords to it by name); ``learning_rate``, ``momentum``, ``steps_per_execution``,
    ``jit_compile`` and ``predict_batch_size`` are applied here, so this class keeps them from the
    builder.
    """

    def __init__(
        self,
        fit_store: str | None = None,
        fit_store_budget_mb: int = ExecutionConfig.fit_store_budget_mb,  # each default once: the config's
        model_cache_mb: int = ExecutionConfig.model_cache_mb,
        fusion: bool = ExecutionConfig.fusion,
        search_token: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Parameters all the same (scikit-learn reads them back as attributes), but not the builder's.
        training = {name: kwargs.pop(name, None) for name in OWN_TRAINING_ARGUMENTS}
        super().__init__(**kwargs)
        vars(self).update(training)
        self.fit_store = fit_store
        self.fit_store_budget_mb = fit_store_budget_mb
        self.model_cache_mb = model_cache_mb
        self.fusion = fusion
        self.search_token = search_token

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags(multi_class=True, poor_score=True)
        tags.target_tags.required = True
        tags.non_deterministic = True
        return tags

    @property
    def target_encoder(self) -> ClassifierLabelEncoder:
        """Encode targets one-hot for the losses that need it, ordinal otherwise."""
        categories = "auto" if self.classes_ is None else [self.classes_]
        one_hot = self.loss in ONE_HOT_LOSSES
        encoder_loss = "categorical_crossentropy" if one_hot else self.loss
        return ClassifierLabelEncoder(loss=encoder_loss, categories=categories)

    def compile_arguments(self) -> dict[str, Any]:
        """scikeras' compile arguments, with this estimator's optimizer settings and compile options.

        ``learning_rate`` and ``momentum`` reach the optimizer when it takes them (momentum: sgd,
        rmsprop); ``steps_per_execution`` and ``jit_compile`` reach ``Model.compile`` when set.
        """
        arguments = super().compile_arguments()
        optimizer = arguments["optimizer"]
        accepted = set(inspect.signature(type(optimizer).__init__).parameters)
        settings = {
            name: value
            for name in ("learning_rate", "momentum")
            if (value := getattr(self, name, None)) is not None and name in accepted
        }
        if settings:
            arguments["optimizer"] = type(optimizer).from_config(optimizer.get_config() | settings)
        for name in ("steps_per_execution", "jit_compile"):
            if (value := getattr(self, name, None)) is not None:
                arguments[name] = value
        return arguments

    def result_params(self) -> dict[str, Any]:
        """The parameters that decide what a fit learns: all but :data:`EXECUTION_PARAMS`.

        A builder from outside the package counts with its source (``params.builder_identity``).
        """
        params = {name: value for name, value in self.get_params().items() if name not in EXECUTION_PARAMS}
        return params | {"model": builder_identity(params["model"])}

    def _model_signature(self) -> str:
        """Everything that decides the built, compiled model (not the fit-time parameters)."""
        params = self.result_params()
        parts = [f"{name}={describe(params[name])}" for name in sorted(params) if name not in FIT_TIME_PARAMS]
        meta = (keras.backend.backend(), self.drawn_seed, self.X_shape_[1:], list(self.classes_))
        return ";".join([*parts, repr(meta)])

    def build_model(self, build: Callable[[], keras.Model]) -> keras.Model:
        """This process' cached model of the same signature, reset; else a fresh compiled one (``build``)."""
        # Reuse is exact on TensorFlow (tests/test_estimator.py); on JAX a reset model's first
        # epoch differed in the third decimal, so other backends build every fit.
        reusable = keras.backend.backend() == "tensorflow"
        budget = self.model_cache_mb if reusable else 0
        signature = self._model_signature() if budget > 0 else None
        if signature is not None and (model := MODELS.take(signature, owner=self)) is not None:
            return model
        keras.backend.clear_session(free_memory=False)
        model = build()
        if signature is not None:
            if not model.compiled:
                model.compile(**self.compile_arguments())
            MODELS.put(signature, model, owner=self, budget_mb=budget)
        return model

    def extra_fit_callbacks(self) -> list[keras.callbacks.Callback]:
        """NaN termination and the epoch reporter, after the user's Keras callbacks."""
        reporter = getattr(self, "epoch_tasks_", None)
        return [keras.callbacks.TerminateOnNaN(), *([reporter] if reporter is not None else [])]

    @with_callbacks
    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight=None, **kwargs) -> MnistCNNClassifier:
        """Fit a reset or fresh model (or restore the stored one), reporting the fit and epochs to callbacks."""
        store = FitStore(self.fit_store, self.fit_store_budget_mb * 2**20) if self.fit_store else None
        backend = keras.backend.backend()
        # Once: the fit key and the batch order both need it; the fit plan's when it hashed these rows.
        digest = (KNOWN_ROWS.digest(X, y) if sample_weight is None else None) or digest_arrays(X, y, sample_weight)
        # The rows' own digest, which the fold run's dataset input names (tracking/datasets.py).
        self.rows_digest_ = digest if sample_weight is None else digest_arrays(X, y, None)
        self.fit_key_ = None
        stored = None
        if store is not None:
            self.fit_key_ = key_from_digest(self.result_params(), backend, numerics_versions(backend), digest)
            PENDING.wait(self.fit_key_)  # a fused group training it in this process' background stores it first
            stored = store.load(self.fit_key_)
        if stored is not None and not self.restore(X, y, stored.weights, stored.history):
            stored = None
        self.from_store_ = stored is not None  # fitted before its callbacks begin: restored, or trained fused
        # A fit the fused executor trained for this very search was trained here, not reused.
        self.fused_group_ = stored.meta.get("fused_group") if stored is not None else None
        trained_here = stored is not None and self.search_token is not None
        trained_here = trained_here and stored.meta.get("trained_by") == self.search_token
        self.fit_reused_ = stored is not None and not trained_here
        self.fit_time_s_ = float(stored.meta.get("fit_time_s", math.nan)) if stored is not None else math.nan
        context = self._init_callback_context(max_subtasks=None)
        context.call_on_fit_task_begin(estimator=self, X=X, y=y)
        self.fit_error_ = None
        self.not_stored_: str | None = None  # why a fit trained here could not be saved to the fit store
        if stored is not None:
            context.call_on_fit_task_end(estimator=self, X=X, y=y)
            return self
        self.epoch_tasks_ = EpochTasks(self, context)
        finished = False
        started = time.perf_counter()
        try:
            with BUILD_LOCK if PENDING.running() else nullcontext():  # no compile beside background training
                self.train(X, y, sample_weight, digest, **kwargs)
            self._raise_if_diverged()
            finished = True
        except Exception as error:
            self.fit_error_ = f"{type(error).__name__}: {error}"
            raise
        finally:
            self.fit_time_s_ = time.perf_counter() - started
            # The reporter holds the callback context tree: keep it out of pickled models.
            self.drop_fit_callback(self.epoch_tasks_)
            self.epoch_tasks_ = None
            if store is not None and finished:
                meta = {"fit_time_s": self.fit_time_s_, "classes": self.classes_.tolist(), "samples": len(X)}
                if not store.save(self.fit_key_, self.model_.get_weights(), self.history_, meta):
                    self.not_stored_ = store.save_error
            context.call_on_fit_task_end(estimator=self, X=X, y=y)
        return self

    def prepare(self, X: np.ndarray, y: np.ndarray) -> MnistCNNClassifier:
        """Build (or take from the cache) and compile the model a fit on ``(X, y)`` starts from, untrained."""
        self.initialize(X, y)
        if not self.model_.compiled:
            self.model_.compile(**self.compile_arguments())
        return self

    def batch_order(self, rows: int, digest: str) -> BatchOrder:
        """The batches a fit on ``rows`` rows with data digest ``digest`` trains on (execution/batches.py)."""
        return BatchOrder.of(rows, self.validation_split, self.batch_size, self.random_state, digest)

    def train(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, digest: str, **kwargs) -> None:
        """Train a fresh (or reset) model on ``(X, y)`` in the project's batch order.

        Through Keras' ``fit`` (scikeras' public ``partial_fit``, one epoch a call, ``shuffle=False``),
        the last ``validation_split`` of the rows as validation data, as Keras' own split takes them.
        A fused group feeds its members the same batches (execution/trainer.py).
        """
        order = self.batch_order(len(X), digest)
        self.initialize(X, y)
        if self.fusion and sample_weight is None and not kwargs and self.train_compiled(X, y, order):
            return
        train = order.train_rows
        if train < len(X):
            kwargs["validation_data"] = (
                self.feature_encoder_.transform(X[train:]),
                self.target_encoder_.transform(y[train:]),
            )
        for epoch in range(self.epochs):
            rows = order.permutation(epoch)
            weights = None if sample_weight is None else np.asarray(sample_weight)[:train][rows]
            self.partial_fit(
                X[:train][rows], y[:train][rows], sample_weight=weights, shuffle=False, validation_split=0.0, **kwargs
            )
            if not math.isfinite(self.history_["loss"][-1]):
                break

    def train_compiled(self, X: np.ndarray, y: np.ndarray, order: BatchOrder) -> bool:
        """Train alone in the compiled trainer (one call per epoch), as a fused group of one.

        Returns False, having trained nothing, when the model is outside the compiled trainer
        (trainer.unfusable_reason); Keras' ``fit`` then trains it.
        """
        if not self.model_.compiled:
            self.model_.compile(**self.compile_arguments())
        if unfusable_reason(self.model_) is not None:
            return False
        trainer = build_trainer([self.model_], [self.loss not in ONE_HOT_LOSSES])
        (result,) = trainer.fit(X, [self.target_encoder_.transform(y)], order, self.epochs)
        self.model_.set_weights(result.weights)
        self.history_ = {name: list(values) for name, values in result.history.items()}
        if getattr(self, "epoch_tasks_", None) is not None:
            for epoch in range(len(self.history_.get("loss", []))):
                self.epoch_tasks_.on_epoch_end(epoch, {name: values[epoch] for name, values in self.history_.items()})
        return True

    def restore(self, X: np.ndarray, y: np.ndarray, weights: list[np.ndarray], history: dict[str, list[float]]) -> bool:
        """Become the fit that learned ``weights`` on ``(X, y)``, through scikeras' public ``initialize``.

        Returns False (and the fit is trained instead) when the weights do not fit this model.
        """
        with BUILD_LOCK:  # scikeras switches TensorFlow's process-wide op determinism around the build
            self.initialize(X, y)
        try:
            self.model_.set_weights(weights)
        except ValueError as error:
            log.warning("fit store: entry %s does not fit this model (%s); training it again", self.fit_key_, error)
            return False
        self.history_ = {name: list(values) for name, values in history.items()}
        return True

    def stored_fit_time(self, data_digest: str) -> float:
        """The training time recorded for this estimator's fit on data with ``data_digest``; NaN if not stored."""
        if not self.fit_store:
            return math.nan
        backend = keras.backend.backend()
        key = key_from_digest(self.result_params(), backend, numerics_versions(backend), data_digest)
        stored = FitStore(self.fit_store).load(key)
        return float(stored.meta.get("fit_time_s", math.nan)) if stored is not None else math.nan

    def predict(self, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Class labels; without extra Keras arguments through :meth:`probabilities`."""
        if kwargs or self.predict_routed():
            return super().predict(X, **self.predict_arguments(kwargs))
        return self.target_encoder_.inverse_transform(self.probabilities(X))

    def predict_proba(self, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Class probabilities; without extra Keras arguments through :meth:`probabilities`."""
        if kwargs or self.predict_routed():
            return super().predict_proba(X, **self.predict_arguments(kwargs))
        return self.target_encoder_.inverse_transform(self.probabilities(X), return_proba=True)

    def predict_routed(self) -> bool:
        """Whether the user routes arguments to Keras' ``predict`` (scikeras' ``predict__*``): then Keras predicts."""
        return any(name.startswith("predict__") for name in self.get_params(deep=False))

    def predict_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Keras ``predict``'s keyword arguments: ``predict_batch_size`` unless the call gives a batch size."""
        batch = getattr(self, "predict_batch_size", None)
        return ({"batch_size": batch} if batch is not None else {}) | kwargs

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        """The model's outputs for ``X``, ``predict_batch_size`` rows per ``predict_on_batch`` call.

        The forward pass of Keras' ``predict`` (its ``predict_step``, compiled once per model and
        input shape), without building a data pipeline on every call: the search predicts once per
        fold. Every chunk has one shape (``batches.in_chunks``), so the step compiles once.
        """
        if not getattr(self, "initialized_", False):
            raise NotFittedError("Estimator needs to be fit before `predict` can be called")
        X = np.asarray(X)
        if len(X) == 0:
            raise ValueError("X has 0 rows; predict needs at least 1")
        if X.shape[1:] != tuple(self.X_shape_[1:]):
            raise ValueError(f"X has rows of shape {X.shape[1:]}; the estimator was fit on {tuple(self.X_shape_[1:])}")
        if getattr(self, "from_store_", False) and self.fit_key_ is not None:
            held = OUTPUTS.take(self.fit_key_, X)  # its fused group's outputs on these very rows
            if held is not None:
                return held
        rows = getattr(self, "predict_batch_size", None) or PREDICT_ROWS
        return in_chunks(self.model_.predict_on_batch, self.feature_encoder_.transform(X), rows)

    def _raise_if_diverged(self) -> None:
        losses = self.history_.get("loss", [])
        if any(not math.isfinite(value) for value in losses):
            epoch = next(i for i, value in enumerate(losses) if not math.isfinite(value))
            raise TrainingDivergedError(f"training loss became non-finite at epoch {epoch + 1}")


def build_estimator(
    model: ModelConfig,
    execution: ExecutionConfig,
    seed: int,
    fit_store: Path | None = None,
    search_token: str | None = None,
) -> MnistCNNClassifier:
    """Build the unfitted, seeded estimator for the ``model`` group, run as ``execution`` says.

    The estimator's ``model`` is the function ``model.builder`` names; each of its arguments is an
    estimator parameter of its name (the config's value, else the builder's default), which scikeras
    passes to it with ``meta`` (the training data's shape and classes) when it takes that, so one
    builder serves any image size and class count.

    ``fit_store`` is the folder of finished fits (None: train every fit, keep none), kept within
    ``execution.fit_store_budget_mb``; ``execution.model_cache_mb`` bounds the compiled models a
    process keeps (0: build every fit). ``search_token`` names the search whose fused executor trained a
    stored fit (so it counts as trained, not reused); ``execution.fusion`` trains a fit alone in the
    compiled trainer.
    """
    builder = load_builder(model.builder)
    return MnistCNNClassifier(
        model=builder,
        metrics=["accuracy"],
        random_state=seed,
        verbose=0,
        fit_store=str(fit_store) if fit_store is not None else None,
        fit_store_budget_mb=execution.fit_store_budget_mb,
        model_cache_mb=execution.model_cache_mb,
        fusion=execution.fusion,
        search_token=search_token,
        **(builder_defaults(builder) | estimator_params(model)),
    )


# This class's own constructor keywords: how a fit runs, never what it learns.
EXECUTION_PARAMS = frozenset(inspect.signature(MnistCNNClassifier.__init__).parameters) - {"self", "kwargs"}
