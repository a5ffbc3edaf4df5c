"""Model-selection statistics: corrected t-test, correlated Bayesian t-test, tie verdicts, one-SE rule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from mnist_hpo.search.stats import (
    bayesian_correlated_ttest,
    compare_all,
    corrected_paired_ttest,
    standard_error,
    tied_with_best,
)

# Five paired folds: d = best - other = [0.01, 0.02, 0.00, 0.02, 0.01].
BEST = np.array([0.91, 0.93, 0.92, 0.94, 0.90])
OTHER = np.array([0.90, 0.91, 0.92, 0.92, 0.89])
N_TRAIN, N_TEST = 48_000, 12_000  # n_test / n_train = 0.25 (5-fold split of 60 000)


def test_corrected_ttest_matches_hand_computation() -> None:
    # d̄ = 0.06 / 5 = 0.012; deviations -0.002, 0.008, -0.012, 0.008, -0.002
    # Σ dev² = (4 + 64 + 144 + 64 + 4)e-6 = 280e-6, s² = 280e-6 / (5 - 1) = 70e-6
    mean = 0.012
    s2 = 70e-6
    se = math.sqrt((1 / 5 + 12_000 / 48_000) * s2)  # σ̂² = (1/n + n_test/n_train)·s² = 0.45 · 70e-6 = 31.5e-6
    t = mean / se
    p = stats.t.sf(t, 4)
    half = stats.t.ppf(0.975, 4) * se
    assert se == pytest.approx(math.sqrt(31.5e-6), rel=1e-15)
    assert t == pytest.approx(2.138089935299395, rel=1e-12)  # 0.012 / sqrt(31.5e-6)

    r = corrected_paired_ttest(BEST, OTHER, N_TRAIN, N_TEST)
    assert r.n_pairs == 5
    assert r.df == 4
    assert r.mean_difference == pytest.approx(mean, abs=1e-12)
    assert r.std_error == pytest.approx(se, abs=1e-12)
    assert r.t == pytest.approx(t, abs=1e-12)
    assert r.p_value == pytest.approx(p, abs=1e-12)
    assert r.interval_low == pytest.approx(mean - half, abs=1e-12)
    assert r.interval_high == pytest.approx(mean + half, abs=1e-12)


def test_uncorrected_limit_is_scipy_paired_ttest() -> None:
    rng = np.random.default_rng(0)
    best = rng.normal(0.95, 0.01, size=10)
    other = best - rng.normal(0.004, 0.006, size=10)
    r = corrected_paired_ttest(best, other, N_TRAIN, N_TEST, correction=False)
    ref = stats.ttest_rel(best, other, alternative="greater")
    assert r.t == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    # n_test = 0 switches the correction off too
    assert corrected_paired_ttest(best, other, N_TRAIN, 0).p_value == pytest.approx(ref.pvalue, rel=1e-12)


def test_correction_widens_interval_and_raises_p() -> None:
    corrected = corrected_paired_ttest(BEST, OTHER, N_TRAIN, N_TEST)
    plain = corrected_paired_ttest(BEST, OTHER, N_TRAIN, N_TEST, correction=False)
    assert corrected.std_error > plain.std_error
    assert corrected.std_error / plain.std_error == pytest.approx(math.sqrt(0.45 / 0.2), rel=1e-12)
    assert corrected.interval_high - corrected.interval_low > plain.interval_high - plain.interval_low
    assert corrected.p_value > plain.p_value
    # p ≈ 0.016 uncorrected, ≈ 0.050 corrected: at alpha = 0.025 only the correction keeps the candidate tied
    assert not tied_with_best(plain, alpha=0.025)
    assert tied_with_best(corrected, alpha=0.025)


def _t_density(x: float, df: int, loc: float, scale: float) -> float:
    """Student t density written out: Γ((ν+1)/2) / (Γ(ν/2)·sqrt(νπ)·σ) · (1 + z²/ν)^(-(ν+1)/2)."""
    z = (x - loc) / scale
    norm = math.gamma((df + 1) / 2) / (math.gamma(df / 2) * math.sqrt(df * math.pi) * scale)
    return norm * (1 + z * z / df) ** (-(df + 1) / 2)


@pytest.mark.parametrize("rope", [0.0, 0.005, 0.01, 0.03])
def test_bayesian_matches_numeric_integration(rope: float) -> None:
    # Posterior: t with ν = 4, location 0.012, scale sqrt((1/5 + ρ/(1-ρ))·70e-6), ρ = 12000/60000 = 0.2
    rho = 12_000 / 60_000
    scale = math.sqrt((1 / 5 + rho / (1 - rho)) * 70e-6)

    def density(x: float) -> float:
        return _t_density(x, 4, 0.012, scale)

    left = integrate.quad(density, -np.inf, -rope, epsabs=1e-13, epsrel=1e-12)[0]
    middle = integrate.quad(density, -rope, rope, epsabs=1e-13, epsrel=1e-12)[0] if rope > 0 else 0.0
    right = integrate.quad(density, rope, np.inf, epsabs=1e-13, epsrel=1e-12)[0]
    assert left + middle + right == pytest.approx(1.0, abs=1e-9)

    r = bayesian_correlated_ttest(BEST, OTHER, N_TRAIN, N_TEST, rope=rope)
    assert r.df == 4 and r.n_pairs == 5 and r.rope == rope
    assert r.scale == pytest.approx(scale, rel=1e-12)
    assert r.p_other_better == pytest.approx(left, abs=1e-8)
    assert r.p_equivalent == pytest.approx(middle, abs=1e-8)
    assert r.p_best_better == pytest.approx(right, abs=1e-8)
    assert r.p_best_better + r.p_equivalent + r.p_other_better == pytest.approx(1.0, abs=1e-12)


def test_bayesian_without_rope_is_the_frequentist_p_value() -> None:
    # With rope = 0 and the same scale, P(μ < 0) under the posterior equals the one-sided p-value.
    freq = corrected_paired_ttest(BEST, OTHER, N_TRAIN, N_TEST)
    bayes = bayesian_correlated_ttest(BEST, OTHER, N_TRAIN, N_TEST, rope=0.0)
    assert bayes.p_other_better == pytest.approx(freq.p_value, rel=1e-12)
    assert bayes.scale == pytest.approx(freq.std_error, rel=1e-12)


def test_bayesian_extremes() -> None:
    rng = np.random.default_rng(1)
    other = rng.normal(0.5, 0.01, size=10)
    far = bayesian_correlated_ttest(other + 0.4 + rng.normal(0, 0.001, size=10), other, N_TRAIN, N_TEST)
    assert far.p_best_better > 1 - 1e-9
    assert far.p_other_better < 1e-9
    close = bayesian_correlated_ttest(other + rng.normal(0, 0.001, size=10), other, N_TRAIN, N_TEST, rope=0.05)
    assert close.p_equivalent > 0.99
    assert close.p_best_better + close.p_equivalent + close.p_other_better == pytest.approx(1.0, abs=1e-12)


def test_tied_with_best_verdicts() -> None:
    rng = np.random.default_rng(2)
    best = rng.normal(0.97, 0.003, size=15)
    much_worse = best - 0.05 + rng.normal(0, 0.002, size=15)
    noise = best + rng.normal(0, 0.004, size=15)
    assert not tied_with_best(corrected_paired_ttest(best, much_worse, N_TRAIN, N_TEST), alpha=0.05)
    assert tied_with_best(corrected_paired_ttest(best, noise, N_TRAIN, N_TEST), alpha=0.05)
    itself = corrected_paired_ttest(best, best, N_TRAIN, N_TEST)
    for alpha in (0.01, 0.05, 0.5, 0.99):
        assert tied_with_best(itself, alpha=alpha)
    failed = corrected_paired_ttest(best, np.where(np.arange(15) == 3, np.nan, best), N_TRAIN, N_TEST)
    assert not tied_with_best(failed, alpha=0.05)
    with pytest.raises(ValueError):
        tied_with_best(itself, alpha=0.0)


def test_zero_variance_differences() -> None:
    scores = np.array([0.9, 0.8, 0.85, 0.95])
    same = corrected_paired_ttest(scores, scores, N_TRAIN, N_TEST)
    assert (same.mean_difference, same.std_error, same.t, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert same.interval_low == same.interval_high == 0.0
    shifted = np.array([0.5, 0.25, 0.375, 0.625])  # exact binary fractions: every difference is exactly 0.25
    ahead = corrected_paired_ttest(shifted + 0.25, shifted, N_TRAIN, N_TEST)
    assert (ahead.mean_difference, ahead.t, ahead.p_value) == (0.25, math.inf, 0.0)
    assert ahead.interval_low == ahead.interval_high == 0.25
    behind = corrected_paired_ttest(shifted, shifted + 0.25, N_TRAIN, N_TEST)
    assert (behind.t, behind.p_value) == (-math.inf, 1.0)

    b_same = bayesian_correlated_ttest(scores, scores, N_TRAIN, N_TEST, rope=0.0)
    assert (b_same.p_best_better, b_same.p_equivalent, b_same.p_other_better) == (0.0, 1.0, 0.0)
    b_ahead = bayesian_correlated_ttest(shifted + 0.25, shifted, N_TRAIN, N_TEST, rope=0.01)
    assert (b_ahead.p_best_better, b_ahead.p_equivalent, b_ahead.p_other_better) == (1.0, 0.0, 0.0)
    b_within = bayesian_correlated_ttest(shifted + 0.25, shifted, N_TRAIN, N_TEST, rope=0.25)
    assert (b_within.p_best_better, b_within.p_equivalent, b_within.p_other_better) == (0.0, 1.0, 0.0)
    b_behind = bayesian_correlated_ttest(shifted, shifted + 0.25, N_TRAIN, N_TEST, rope=0.01)
    assert (b_behind.p_best_better, b_behind.p_equivalent, b_behind.p_other_better) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("best", "other"),
    [
        ([0.9, 0.8, np.nan], [0.85, 0.8, 0.7]),  # failed fit of the best
        ([0.9, 0.8, 0.7], [0.85, np.nan, 0.7]),  # failed fit of the other
        ([0.9, 0.8, 0.7], [0.85, np.inf, 0.7]),
        ([0.9], [0.8]),  # one pair: no variance estimate
        ([], []),
    ],
)
def test_uncomparable_inputs_give_nan_without_raising(best: list[float], other: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy either
        freq = corrected_paired_ttest(np.array(best), np.array(other), N_TRAIN, N_TEST)
        bayes = bayesian_correlated_ttest(np.array(best), np.array(other), N_TRAIN, N_TEST)
    assert freq.n_pairs == bayes.n_pairs == len(best)
    for value in (freq.mean_difference, freq.std_error, freq.t, freq.df, freq.p_value):
        assert math.isnan(value)
    assert math.isnan(freq.interval_low) and math.isnan(freq.interval_high)
    for value in (bayes.p_best_better, bayes.p_equivalent, bayes.p_other_better, bayes.mean_difference):
        assert math.isnan(value)
    assert not tied_with_best(freq, alpha=0.05)


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError):
        corrected_paired_ttest(BEST, OTHER[:4], N_TRAIN, N_TEST)
    with pytest.raises(ValueError):
        corrected_paired_ttest(BEST, OTHER, 0, N_TEST)
    with pytest.raises(ValueError):
        corrected_paired_ttest(BEST, OTHER, N_TRAIN, N_TEST, confidence=1.0)
    with pytest.raises(ValueError):
        bayesian_correlated_ttest(BEST, OTHER, N_TRAIN, N_TEST, rope=-0.1)


def test_standard_error() -> None:
    # std(ddof=1) of [1, 2, 3, 4] = sqrt(5/3); SE = sqrt(5/3) / 2
    assert standard_error(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-15)
    assert math.isnan(standard_error(np.array([1.0, np.nan, 3.0])))
    assert math.isnan(standard_error(np.array([1.0])))


def test_compare_all() -> None:
    rng = np.random.default_rng(3)
    best = rng.normal(0.97, 0.003, size=10)
    scores = np.vstack(
        [
            best - 0.05 + rng.normal(0, 0.002, size=10),  # clearly worse
            best,
            best + rng.normal(0, 0.004, size=10),  # noise around the best
            np.where(np.arange(10) == 0, np.nan, best),  # a failed fold
        ]
    )
    results = compare_all(scores, best_index=1, n_train=N_TRAIN, n_test=N_TEST, alpha=0.05, rope=0.005)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.is_best for r in results] == [False, True, False, False]
    assert [r.tied for r in results] == [False, True, True, False]
    assert results[0].bayesian.p_best_better > 0.99
    assert results[1].frequentist.p_value == 1.0 and results[1].bayesian.p_equivalent == 1.0
    assert math.isnan(results[3].frequentist.p_value) and math.isnan(results[3].bayesian.p_best_better)
    assert results[2].frequentist == corrected_paired_ttest(best, scores[2], N_TRAIN, N_TEST)
    with pytest.raises(ValueError):
        compare_all(scores, best_index=4, n_train=N_TRAIN, n_test=N_TEST)
