"""Comparing candidates with the best, and the refit rules, on hand-made and on real search results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.dispatch import run
from mnist_hpo.search.selection import FoldSizes, RefitRule, compare_with_best
from mnist_hpo.search.stats import standard_error
from mnist_hpo.session import JobContext

SIZES = FoldSizes(n_train=400, n_test=200)


def cv_results(splits: list[list[float]], **extra) -> dict:
    """A ``cv_results_``-shaped dict from per-candidate split scores."""
    scores = np.asarray(splits, dtype=float)
    results = {"params": [{"c": index} for index in range(len(splits))], "mean_test_score": scores.mean(axis=1)}
    results |= {f"split{k}_test_score": scores[:, k] for k in range(scores.shape[1])}
    results["mean_fit_time"] = np.ones(len(splits))
    return results | extra


def test_the_best_is_tied_with_itself_and_a_clearly_worse_candidate_is_not():
    results = cv_results([[0.90, 0.91, 0.92], [0.80, 0.81, 0.82], [0.905, 0.90, 0.925]])
    frame = compare_with_best(results, best_index=0, sizes=SIZES, alpha=0.05, rope=0.005)
    assert frame.loc[0, "diff_vs_best"] == 0 and frame.loc[0, "tied_with_best"]
    assert frame.loc[1, "diff_vs_best"] == pytest.approx(0.10) and not frame.loc[1, "tied_with_best"]
    assert frame.loc[1, "p_value"] < 1e-6 and frame.loc[1, "p_best_better"] > 0.99
    assert frame.loc[2, "tied_with_best"] and frame.loc[2, "diff_low"] < 0 < frame.loc[2, "diff_high"]


def test_a_halving_search_compares_only_the_best_iteration():
    results = cv_results([[0.7, 0.7], [0.6, 0.62], [0.9, 0.91]], iter=np.array([0, 0, 1]))
    frame = compare_with_best(results, best_index=2, sizes=SIZES, alpha=0.05, rope=0.005)
    assert frame["diff_vs_best"].isna().tolist() == [True, True, False]
    assert frame["tied_with_best"].tolist() == [False, False, True]


def rule(name: str, counts: list[int], times: list[float]) -> RefitRule:
    """A refit rule with given parameter counts and training times per candidate."""
    return RefitRule(
        name,
        SIZES,
        alpha=0.05,
        parameter_counts=lambda candidates: np.asarray([counts[params["c"]] for params in candidates]),
        training_times=lambda results: np.asarray(times),
    )


def test_one_standard_error_refits_the_simplest_candidate_within_one_se_of_the_best():
    # best 0.90 with SE 0.02 / sqrt(3) = 0.0115; candidate 1 within (0.895), candidate 2 outside (0.85)
    results = cv_results([[0.88, 0.90, 0.92], [0.875, 0.895, 0.915], [0.83, 0.85, 0.87]])
    assert standard_error(np.array([0.88, 0.90, 0.92])) == pytest.approx(0.02 / np.sqrt(3))
    assert rule("one_se", counts=[500, 100, 10], times=[1, 1, 1])(results) == 1  # fewer weights, within 1 SE
    assert rule("one_se", counts=[100, 100, 10], times=[5, 1, 1])(results) == 1  # equal weights: faster
    assert rule("one_se", counts=[100, 500, 10], times=[1, 1, 1])(results) == 0  # the best is simplest


def test_tied_fastest_refits_the_fastest_of_the_tied_set():
    results = cv_results([[0.90, 0.91, 0.92], [0.895, 0.915, 0.91], [0.80, 0.81, 0.82]])
    assert rule("tied_fastest", counts=[1, 1, 1], times=[9.0, 3.0, 0.5])(results) == 1  # 2 is faster but not tied
    assert rule("tied_fastest", counts=[1, 1, 1], times=[1.0, 3.0, 0.5])(results) == 0


def test_one_se_on_the_readme_default_grid_refits_the_candidate_the_rule_names(tmp_path):
    cfg = compose_config("experiment=smoke", "grid=default", "search.refit=one_se", "execution.progress=false")
    run(cfg, JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out"))
    frame = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    levels = runs_by_level(store_uri(tmp_path))
    (search,) = levels["search"]
    assert search.data.tags["mnist_hpo.refit_rule"] == "one_se"
    # The rule by hand: within one SE of the best, the fewest weights (equal here: activation and
    # batch size add none), then the shortest training time as the fold runs recorded it.
    splits = frame.filter(regex=r"^split\d+_test_score$").to_numpy()
    best = int(frame["mean_test_score"].idxmax())
    within = frame.index[frame["mean_test_score"] >= frame["mean_test_score"][best] - standard_error(splits[best])]
    runs = {run.info.run_id: run for run in levels["candidate"]}
    times = {}
    for fold in levels["fold"]:
        candidate = runs[fold.data.tags["mlflow.parentRunId"]].data.tags["mnist_hpo.candidate"]
        times.setdefault(candidate, []).append(fold.data.metrics["fit_time_s"])
    keys = [runs[run_id].data.tags["mnist_hpo.candidate"] for run_id in runs]
    by_params = {key: np.mean(times[key]) for key in keys}
    expected = min(within, key=lambda row: (by_params[candidate_text(frame, row)], row))
    (refitted,) = [run for run in levels["candidate"] if "mnist_hpo.refitted" in run.data.tags]
    assert refitted.data.tags["mnist_hpo.candidate"] == candidate_text(frame, expected)


def candidate_text(frame: pd.DataFrame, row: int) -> str:
    """The ``mnist_hpo.candidate`` tag of a ``cv_results.csv`` row."""

    axes = sorted(column.removeprefix("param_") for column in frame.columns if column.startswith("param_"))
    values = {axis: frame.loc[row, f"param_{axis}"] for axis in axes}
    return json.dumps(
        {axis: (int(v) if isinstance(v, np.integer) else v) for axis, v in values.items()}, sort_keys=True
    )


def test_repeated_folds_show_repeat_and_fold_and_restore_the_first_repeat(tmp_path):
    quick = ("experiment=smoke", "execution.progress=false", "model.epochs=1", "tracking.log_model=false")
    job = JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out")
    run(compose_config(*quick), job)
    run(compose_config(*quick, "search.cv_repeats=2"), job)
    levels = runs_by_level(store_uri(tmp_path))
    repeated = max(levels["search"], key=lambda item: item.info.start_time)
    folds = [run for run in levels["fold"] if run.data.tags["mnist_hpo.search_run_id"] == repeated.info.run_id]
    names = sorted({run.info.run_name for run in folds})
    assert names == ["repeat-0-fold-0", "repeat-0-fold-1", "repeat-1-fold-0", "repeat-1-fold-1"]
    assert len(folds) == 2 * 4
    # The first repeat is the unrepeated folds: restored from the fit store; only repeat 1 trained.
    restored = {run.data.tags["mnist_hpo.repeat"] for run in folds if "mnist_hpo.reused" in run.data.tags}
    trained = {run.data.tags["mnist_hpo.repeat"] for run in folds if "mnist_hpo.reused" not in run.data.tags}
    assert (restored, trained) == ({"0"}, {"1"})
    frame = pd.read_csv(tmp_path / "out" / "cv_results.csv")
    assert {f"split{k}_test_score" for k in range(4)} <= set(frame.columns)
