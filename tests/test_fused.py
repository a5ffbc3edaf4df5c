"""Fused training: members equal their unfused twins, fail alone, resume after kill -9, on TensorFlow and JAX."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chatter_lines, run_cli, run_cli_killed_after, store_uri
from mlflow_tree import runs_by_level
from scipy.stats import spearmanr
from sklearn.base import clone

from mnist_hpo.configuration.schema import DataConfig, ExecutionConfig, ModelConfig
from mnist_hpo.data.loading import load_data
from mnist_hpo.execution.ahead import PendingFits
from mnist_hpo.execution.batches import BatchOrder
from mnist_hpo.execution.compiled import build_trainer
from mnist_hpo.execution.estimator import build_estimator
from mnist_hpo.execution.fit_keys import digest_arrays
from mnist_hpo.execution.fused import SHARED_PROGRAM_WORK, shared_micro
from mnist_hpo.execution.fused_model import SideBySide, WideCNN
from mnist_hpo.execution.outputs import Outputs

# 3 activations x 2 losses on the package's 1-filter CNN: one fused group per split.
GRID = [
    "experiment=smoke",
    "grid=empty",
    "+grid.activation=[relu,tanh,prelu]",
    "+grid.loss=[mse,categorical_crossentropy]",
    "model.conv_filters=[1]",
    "model.kernel_size=5",
    "model.dense_units=0",
    "model.epochs=2",
    "model.validation_split=0.1",
    "search.refit=false",
    "execution.progress=false",
    "hydra.run.dir=out",
]
FUSED = [*GRID, "execution.fusion=true"]


def cv_scores(folder: Path) -> pd.DataFrame:
    """Each candidate's fold scores from a run's ``cv_results.csv``, by its parameters."""
    frame = pd.read_csv(folder / "out" / "cv_results.csv")
    return frame.set_index("params")[["split0_test_score", "split1_test_score", "mean_test_score"]]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_fused_grid_scores_as_the_same_grid_unfused(tmp_path, backend):
    runs = {}
    for fusion in ("true", "false"):
        folder = tmp_path / fusion
        folder.mkdir()
        # Two batch sizes: the larger one's groups run the smaller one's program in micro-steps.
        result = run_cli(
            *GRID, "+grid.batch_size=[16,32]", f"backend={backend}", f"execution.fusion={fusion}", cwd=folder
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert chatter_lines(result.stdout + result.stderr) == []  # JAX's run imports TensorFlow too: to the log
        runs[fusion] = cv_scores(folder)
        said = "fused training: 24 fit(s) in 4 group(s)" in result.stdout
        assert said == (fusion == "true"), result.stdout
    fused, unfused = runs["true"], runs["false"].loc[runs["true"].index]
    difference = (fused - unfused).abs()
    assert difference.to_numpy().max() <= 0.01, difference
    assert difference["mean_test_score"].mean() <= 0.005
    assert spearmanr(fused["mean_test_score"], unfused["mean_test_score"]).statistic >= 0.9
    # Fold runs say how they trained: every fused one names its group, with a fit time of its share.
    levels = runs_by_level(store_uri(tmp_path / "true"))
    folds = levels["fold"]
    assert len(folds) == 24 and all(run.data.tags.get("mnist_hpo.fused_group") for run in folds)
    assert all(run.data.metrics["fit_time_s"] > 0 for run in folds)
    assert {len(run.data.metrics) for run in folds} == {len(levels["fold"][0].data.metrics)}
    (search,) = levels["search"]
    assert search.data.tags["mnist_hpo.trained_fits"] == "24" and search.data.tags["mnist_hpo.reused_fits"] == "0"


@pytest.fixture(scope="module")
def digits():
    data = load_data(DataConfig(train_size=600, test_size=100), seed=0)
    return data.x_train, data.y_train


def members(x, y, activations, **model):
    base = build_estimator(
        ModelConfig(epochs=2, batch_size=32, validation_split=0.1, **model), ExecutionConfig(model_cache_mb=0), 0
    )
    return [clone(base).set_params(activation=name).prepare(x, y) for name in activations]


def train(estimators, x, y, wide=True, micro=None):
    trainer = build_trainer([e.model_ for e in estimators], [False] * len(estimators), wide=wide, micro=micro)
    order = estimators[0].batch_order(len(x), digest_arrays(x, y, None))
    return trainer, trainer.fit(x, [e.target_encoder_.transform(y) for e in estimators], order, 2)


@pytest.mark.parametrize(
    "architecture",
    [
        dict(conv_filters=[1], kernel_size=5, dense_units=0, padding="same"),
        dict(conv_filters=[2, 3], kernel_size=3, dense_units=8, padding="valid", pool_size=2),
    ],
)
def test_each_wide_member_learns_what_its_keras_fit_learns(digits, architecture):
    x, y = digits
    activations = ["relu", "leaky_relu", "tanh"]
    trainer, fused = train(members(x, y, activations, **architecture), x, y)
    assert isinstance(trainer.fused, WideCNN)
    for name, result in zip(activations, fused, strict=True):
        (alone,) = [clone(e).fit(x, y) for e in members(x, y, [name], **architecture)]
        for mine, theirs in zip(result.weights, alone.model_.get_weights(), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=2e-5)
        for metric, values in alone.history_.items():
            np.testing.assert_allclose(result.history[metric], values, atol=1e-5)


def test_members_outputs_on_the_scored_rows_are_their_keras_predictions(digits):
    # One evaluation program serves the validation pass and the outputs: a call takes the validation's
    # rows (60 here), raised to 256 when the scored arrays are larger, and a 7-row array is padded to it.
    x, y = digits
    estimators = members(x, y, ["relu", "tanh"])
    trainer = build_trainer([e.model_ for e in estimators], [False] * len(estimators))
    order = estimators[0].batch_order(len(x), digest_arrays(x, y, None))
    score = [x[:300], x[:7]]
    assert trainer.evaluation_rows(order, score) == 256
    assert trainer.evaluation_rows(order, ()) == order.rows - order.train_rows == 60
    assert trainer.evaluation_rows(BatchOrder(5000, 0.5, 8, (0, 1)), score) == 1024
    assert trainer.evaluation_rows(BatchOrder(100, 0.0, 8, (0, 1)), [x[:50]]) == 50
    traces = trainer.evaluate.experimental_get_tracing_count  # TensorFlow's tf.function, the suite's backend
    before = traces()
    results = trainer.fit(x, [e.target_encoder_.transform(y) for e in estimators], order, 2, score)
    assert traces() - before <= 1  # validation chunks and scored chunks share the one program
    for estimator, result in zip(estimators, results, strict=True):
        estimator.model_.set_weights(result.weights)
        for rows, outputs in zip(score, result.outputs, strict=True):
            np.testing.assert_allclose(outputs, estimator.model_.predict_on_batch(rows), atol=1e-5)


def test_steps_run_as_micro_steps_make_the_same_updates(digits):
    # Batches of 32 as micro-steps of 8 whose gradients add up: each member still learns its Keras fit.
    x, y = digits
    activations = ["relu", "prelu"]
    trainer, fused = train(members(x, y, activations, conv_filters=[2], kernel_size=3, dense_units=8), x, y, micro=8)
    assert isinstance(trainer.fused, WideCNN) and trainer.micro == 8
    for name, result in zip(activations, fused, strict=True):
        (alone,) = [clone(e).fit(x, y) for e in members(x, y, [name], conv_filters=[2], kernel_size=3, dense_units=8)]
        for mine, theirs in zip(result.weights, alone.model_.get_weights(), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=2e-5)
        for metric, values in alone.history_.items():
            np.testing.assert_allclose(result.history[metric], values, atol=1e-5)


def test_micro_steps_cover_each_step_once_and_weigh_its_mean():
    order = BatchOrder(rows=100, validation_split=0.0, batch_size=32, seed=(0, 5))
    steps = order.micro_layout(0, 8)
    # 3 full steps of 4 micro-steps, then the last step's 4 rows: one micro-step, padded.
    assert steps.indices.shape == (13, 8)
    assert steps.ends.nonzero()[0].tolist() == [3, 7, 11, 12]
    np.testing.assert_allclose(steps.fraction, [0.25] * 12 + [1.0])
    np.testing.assert_array_equal(steps.indices.reshape(-1)[:100], order.permutation(0))
    assert steps.weights.sum() == 100
    whole = order.micro_layout(0, 32)
    assert whole.indices.shape == (4, 32) and whole.ends.all()
    with pytest.raises(ValueError, match="do not divide"):
        order.micro_layout(0, 12)


def test_small_groups_of_larger_batch_sizes_share_the_smallest_ones_program():
    small = SHARED_PROGRAM_WORK
    assert shared_micro({8: 10**9, 32: small, 128: small}, True) == {8: 8, 32: 8, 128: 8}
    # Too much training to pay 35 % more of it, a batch size it does not divide, or a model that is not row by row.
    assert shared_micro({8: 1, 32: small + 1, 128: small}, True) == {8: 8, 32: None, 128: 8}
    assert shared_micro({8: 1, 12: 1}, True) == {8: None, 12: None}
    assert shared_micro({8: 1, 32: 1}, False) == {8: None, 32: None}
    assert shared_micro({32: 1}, True) == {32: None}


@pytest.mark.parametrize(("optimizer", "wide"), [("adam", True), ("sgd", False)])
def test_members_with_their_own_learning_rates_learn_what_their_keras_fits_learn(digits, optimizer, wide):
    # One group steps every member at rate 1 and scales each member's step by its own rate.
    x, y = digits
    rates = [0.01, 0.001, 0.003]
    base = members(x, y, ["relu"], conv_filters=[1], kernel_size=5, dense_units=0, optimizer=optimizer)[0]
    estimators = [clone(base).set_params(learning_rate=rate).prepare(x, y) for rate in rates]
    trainer, fused = train(estimators, x, y, wide)
    np.testing.assert_array_equal(trainer.rates, np.float32(rates))
    for estimator, result in zip(estimators, fused, strict=True):
        alone = clone(estimator).fit(x, y)
        for mine, theirs in zip(result.weights, alone.model_.get_weights(), strict=True):
            np.testing.assert_allclose(mine, theirs, atol=2e-5)
        np.testing.assert_allclose(result.history["val_loss"], alone.history_["val_loss"], atol=1e-5)


def test_a_model_outside_the_wide_form_trains_side_by_side_and_exactly(digits):
    x, y = digits
    estimators = members(x, y, ["relu", "sigmoid"], conv_filters=[2], dense_units=4, dropout_dense=0.2)
    trainer, fused = train(estimators, x, y)
    assert isinstance(trainer.fused, SideBySide)  # dropout: each member's own Keras layers and seeds
    alone = clone(estimators[1]).fit(x, y)
    np.testing.assert_allclose(fused[1].history["loss"], alone.history_["loss"], atol=1e-5)


@pytest.mark.parametrize("wide", [True, False])
def test_a_diverging_member_fails_alone_and_the_others_train_as_without_it(digits, wide):
    x, y = digits
    activations = ["relu", "tanh", "sigmoid"]
    estimators = members(x, y, activations, conv_filters=[1], kernel_size=5, dense_units=0)
    broken = estimators[1].model_
    broken.set_weights([w if w.ndim < 2 else np.full_like(w, 1e30) for w in broken.get_weights()])
    _, fused = train(estimators, x, y, wide)
    assert fused[1].error == "training loss became non-finite at epoch 1"
    _, without = train(members(x, y, ["relu", "sigmoid"], conv_filters=[1], kernel_size=5, dense_units=0), x, y, wide)
    for kept, alone in zip([fused[0], fused[2]], without, strict=True):
        assert kept.error is None
        for mine, theirs in zip(kept.weights, alone.weights, strict=True):
            np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_a_search_killed_mid_group_retrains_only_the_missing_members(tmp_path):
    killed = tmp_path / "killed"
    killed.mkdir()
    # Killed once the first group (6 members) and 2 members of the second are stored.
    run_cli_killed_after(8, *FUSED, cwd=killed, target="mnist_hpo.execution.fit_store:FitStore.save")
    restart = run_cli(*FUSED, cwd=killed)
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert "fused training: 4 fit(s) in 1 group(s)" in restart.stdout
    levels = runs_by_level(store_uri(killed))
    statuses = Counter(run.info.status for runs in levels.values() for run in runs)
    assert "RUNNING" not in statuses
    (search,) = levels["search"]
    assert search.data.tags["mnist_hpo.reused_fits"] == "8"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert run_cli(*FUSED, cwd=fresh).returncode == 0
    pd.testing.assert_frame_equal(cv_scores(killed), cv_scores(fresh).loc[cv_scores(killed).index])


def test_a_fit_waits_for_its_group_and_goes_on_when_the_training_thread_ends_without_it():
    pending = PendingFits()
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    pending.expect(["stored", "lost"], thread)
    thread.start()
    timer = threading.Timer(0.2, pending.settle, [["stored"]])
    timer.start()
    pending.wait("stored")  # returns once the group settles the key
    assert "stored" not in pending.events
    pending.wait("unplanned")  # a key no run expects: at once
    release.set()  # the thread ends and never settles "lost": the fit stops waiting instead of hanging
    thread.join()
    pending.wait("lost")
    assert not pending.events and not pending.running()


def test_outputs_are_taken_once_and_only_for_equal_rows():
    outputs = Outputs(budget_bytes=10**6)
    test, train = np.arange(8.0).reshape(4, 2), np.arange(8.0, 16.0).reshape(4, 2)  # rows of equal length
    outputs.put("a" * 64, test, np.full((4, 10), 1.0))
    outputs.put("a" * 64, train, np.full((4, 10), 2.0))
    assert outputs.take("a" * 64, train.copy())[0, 0] == 2.0  # an equal array, as the search passes
    assert outputs.take("a" * 64, test + 1) is None  # other rows: the search predicts through Keras
    assert outputs.take("a" * 64, test)[0, 0] == 1.0
    assert outputs.take("a" * 64, test) is None and outputs.bytes == 0  # taken once
    small = Outputs(budget_bytes=400)
    small.put("b" * 64, test, np.ones((4, 10)))  # 320 bytes
    small.put("c" * 64, test, np.ones((4, 10)))  # over the budget: the oldest goes
    assert small.take("b" * 64, test) is None and small.take("c" * 64, test) is not None
